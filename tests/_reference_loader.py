"""The finetuning loader written cell by cell: the yardstick for the fast one.

``stefaland.finetune.data.WindowSampler`` gathers whole windows through strided views and checks
observations vectorised; this version indexes every (site, day) and checks window by window in
Python. From the same random stream both must yield the same batches: the loader test asserts it,
and ``benchmarks/bench_loader.py`` times this one as the baseline.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from stefaland.finetune.data import SiteData, WindowBatch


def reference_batches(data: SiteData, batch_size: int, length: int, loss_days: int, iterations: int,
                      rng: np.random.Generator) -> Iterator[WindowBatch]:
    n_sites, n_time = data.dynamic.shape[:2]

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, n_sites, count), rng.integers(0, n_time - length + 1, count)

    for _ in range(iterations):
        sites, starts = draw(batch_size)
        for _retry in range(0 if data.target.ndim == 1 else 5):  # a static target is always observed
            empty = np.array([not np.isfinite(data.target[s, t + length - loss_days:t + length]).any()
                              for s, t in zip(sites, starts)])
            if not empty.any():
                break
            sites[empty], starts[empty] = draw(int(empty.sum()))
        days = starts[:, None] + np.arange(length)[None, :]
        target = data.target[sites] if data.target.ndim == 1 else data.target[sites[:, None], days]
        yield WindowBatch(torch.from_numpy(data.dynamic[sites[:, None], days]), torch.from_numpy(data.static[sites]),
                    torch.from_numpy(target), data.sites[sites])
