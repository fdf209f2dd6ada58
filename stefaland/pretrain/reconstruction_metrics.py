"""Reconstruction errors summed over steps (and ranks) into the rows of ``metrics.csv``."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from .config import PretrainConfig
from .data import StoreSchema
from .distributed import DistributedContext


def _group_means(per_var: np.ndarray, groups: list[str], prefix: str) -> dict[str, float]:
    means: dict[str, float] = {}
    for group in sorted(set(groups)):
        chosen = [v for v, g in zip(per_var, groups) if g == group and np.isfinite(v)]
        if chosen:
            means[f"{prefix}:{group or 'other'}"] = float(np.mean(chosen))
    return means


class LossAccumulator:
    """Squared-error sums since the last log line, reduced over ranks when read."""

    def __init__(self, schema: StoreSchema, config: PretrainConfig) -> None:
        self.schema, self.config = schema, config
        self.reset()

    def reset(self) -> None:
        self.sums: torch.Tensor | None = None
        self.total, self.steps = 0.0, 0

    def add(self, sums: torch.Tensor, total: torch.Tensor) -> None:
        sums = sums.detach().double().cpu()
        self.sums = sums if self.sums is None else self.sums + sums
        self.total += float(total.detach())
        self.steps += 1

    def summary(self, context: DistributedContext) -> dict[str, float]:
        """One metrics row: per-variable errors pooled over every cell of every rank, then averaged.

        ``recon`` and ``baseline`` weight the dynamic and static means like the loss does, so the
        predict-the-mean baseline is directly comparable.
        """
        assert self.sums is not None  # read after add(): every step adds before its metrics row
        sums = self.sums.clone()  # (6, width): SSE, count, baseline SSE for dynamic, then static
        total = torch.tensor([self.total], dtype=torch.float64)
        if context.enabled:
            dist.all_reduce(sums)
            dist.all_reduce(total)
            total /= context.world_size
        nd, ns = len(self.schema.dynamic_vars), len(self.schema.static_vars)
        with np.errstate(invalid="ignore", divide="ignore"):
            d_err, d_base = (sums[0, :nd] / sums[1, :nd]).numpy(), (sums[2, :nd] / sums[1, :nd]).numpy()
            s_err, s_base = (sums[3, :ns] / sums[4, :ns]).numpy(), (sums[5, :ns] / sums[4, :ns]).numpy()
        row = {
            "loss": float(total[0]) / max(1, self.steps),
            "recon": self._combine(d_err, s_err), "baseline": self._combine(d_base, s_base),
            "recon_dynamic": _mean(d_err), "baseline_dynamic": _mean(d_base),
            "recon_static": _mean(s_err), "baseline_static": _mean(s_base),
        }
        row.update(_group_means(d_err, self.schema.dynamic_groups, "dyn"))
        row.update(_group_means(s_err, self.schema.static_groups, "static"))
        self.reset()
        return row

    def _combine(self, dynamic: np.ndarray, static: np.ndarray) -> float:
        weights = self.config.loss
        parts = [(w, _mean(v)) for w, v in ((weights.dynamic_weight, dynamic), (weights.static_weight, static))]
        parts = [(w, v) for w, v in parts if w > 0 and np.isfinite(v)]
        return float(sum(w * v for w, v in parts) / sum(w for w, _ in parts)) if parts else float("nan")


def _mean(values: np.ndarray) -> float:
    """Mean over variables that had hidden cells (NaN for the others); NaN when none had."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")
