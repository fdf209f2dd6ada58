"""The window sampler's fast paths (contiguous-row gather, cumulative redraw check) against a plain reference.

The reference (``tests/_reference_loader.py``) is written the slow, obvious way — one (site, day) fancy index per cell and a
per-window Python check for observations — so the vectorised loader must reproduce it batch for
batch from the same random stream.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from stefaland.finetune.data import SiteData, WindowSampler, make_batch

from _reference_loader import reference_batches


def site_data(n_sites: int = 7, days: int = 120, n_dyn: int = 3, n_static: int = 4, static_target: bool = False,
              seed: int = 0) -> SiteData:
    rng = np.random.default_rng(seed)
    target = rng.standard_normal((n_sites, days)).astype(np.float32)
    target[rng.random((n_sites, days)) < 0.4] = np.nan
    target[2, :90] = np.nan  # a site whose first 90 days are unobserved: windows there must be redrawn
    target[5] = np.nan  # never observed: every window of it is redrawn
    return SiteData(np.asarray([f"s{i}" for i in range(n_sites)]), pd.date_range("2000-01-01", periods=days),
                    rng.standard_normal((n_sites, days, n_dyn)).astype(np.float32),
                    rng.standard_normal((n_sites, n_static)).astype(np.float32),
                    rng.standard_normal(n_sites).astype(np.float32) if static_target else target,
                    np.zeros(n_sites), np.zeros(n_sites))


@pytest.mark.parametrize("static_target", [False, True])
@pytest.mark.parametrize("length,loss_days", [(30, 30), (40, 10), (120, 60)])
def test_sampler_equals_the_cell_by_cell_reference(static_target: bool, length: int, loss_days: int) -> None:
    data = site_data(static_target=static_target)
    fast = WindowSampler(data, 32, length, loss_days, 12, np.random.default_rng(3))
    slow = reference_batches(data, 32, length, loss_days, 12, np.random.default_rng(3))
    count = 0
    for batch, reference in zip(fast, slow, strict=True):
        assert batch.dynamic.shape == (32, length, 3) and batch.dynamic.dtype == torch.float32
        np.testing.assert_array_equal(batch.dynamic.numpy(), reference.dynamic.numpy())
        np.testing.assert_array_equal(batch.static.numpy(), reference.static.numpy())
        np.testing.assert_array_equal(batch.target.numpy(), reference.target.numpy())
        np.testing.assert_array_equal(batch.sites, reference.sites)
        count += 1
    assert count == 12


def test_redraw_leaves_no_window_without_observations_on_its_loss_days() -> None:
    data = site_data(days=200)
    for batch in WindowSampler(data, 64, 50, 20, 20, np.random.default_rng(0)):
        assert torch.isfinite(batch.target[:, -20:]).any(dim=1).all()
        assert "s5" not in set(batch.sites)  # never observed


def test_batches_are_independent_copies_of_the_training_arrays() -> None:
    data = site_data()
    before = data.dynamic.copy()
    batches = list(WindowSampler(data, 8, 30, 30, 3, np.random.default_rng(0)))
    batches[0].dynamic.fill_(99.0)
    batches[0].target.fill_(99.0)
    np.testing.assert_array_equal(data.dynamic, before)  # a batch never writes through to the arrays
    assert not torch.equal(batches[1].dynamic, batches[0].dynamic)  # nor shares a buffer with the next batch


def test_make_batch_without_cached_rows() -> None:
    data = site_data()
    batch = make_batch(data, np.array([0, 3, 3]), np.array([0, 5, 90]), 30)
    np.testing.assert_array_equal(batch.dynamic[2].numpy(), data.dynamic[3, 90:120])
    np.testing.assert_array_equal(batch.target[1].numpy(), data.target[3, 5:35])
