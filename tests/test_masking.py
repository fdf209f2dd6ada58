"""Cross-Variable Group Masking and the masked reconstruction loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stefaland.pretrain.loss import ReconstructionLoss, mean_baseline
from stefaland.pretrain.masking import StaticGrouping, dynamic_mask, static_mask

torch.set_num_threads(1)

GROUPS = ["terrain", "terrain", "climate", "climate", "climate", "soil", "soil", "", "", "", "geology"]
NEVER = [False, False, False, False, False, False, False, True, False, False, False]


def _runs(row: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-d bool array."""
    edges = np.diff(np.concatenate([[0], row.astype(int), [0]]))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


@pytest.mark.parametrize("ratio", [0.15, 0.5, 0.8])
def test_dynamic_mask_hides_the_ratio_in_contiguous_windows(ratio: float) -> None:
    mask = dynamic_mask(np.random.default_rng(0), batch=16, seq_len=365, n_vars=4, ratio=ratio)
    assert mask.shape == (16, 365, 4) and mask.dtype == bool
    hidden = mask.sum(axis=1)  # (batch, var)
    assert (hidden == round(ratio * 365)).all()
    for b in range(16):
        for v in range(4):
            runs = _runs(mask[b, :, v])
            # windows of ≥ 30 days: few runs, and all but the budget-clipped last one are long
            assert len(runs) <= int(np.ceil(ratio * 365 / 30)) + 1
            assert sorted(runs)[-1] >= 30
    assert not (mask[:, :, 0] == mask[:, :, 1]).all()  # variables are masked independently


def test_dynamic_mask_is_reproducible_from_its_seed() -> None:
    a = dynamic_mask(np.random.default_rng(7), 4, 100, 3, 0.5, 10, 20)
    b = dynamic_mask(np.random.default_rng(7), 4, 100, 3, 0.5, 10, 20)
    c = dynamic_mask(np.random.default_rng(8), 4, 100, 3, 0.5, 10, 20)
    assert (a == b).all() and not (a == c).all()


def test_dynamic_mask_on_sequences_shorter_than_a_window() -> None:
    mask = dynamic_mask(np.random.default_rng(1), 3, 20, 2, 0.5, 30, 90)
    assert (mask.sum(axis=1) == 10).all()


def test_static_mask_hides_whole_groups_and_spends_the_budget() -> None:
    grouping = StaticGrouping.from_metadata(GROUPS, NEVER)
    assert grouping.n_effective == 4 + 2  # four groups + two maskable ungrouped attributes
    mask = static_mask(np.random.default_rng(0), 2000, grouping, ratio=0.5)
    assert mask.shape == (2000, len(GROUPS))
    assert not mask[:, 7].any(), "a never_mask attribute was masked"
    for members in grouping.groups:
        block = mask[:, list(members)]
        assert (block.all(axis=1) | ~block.any(axis=1)).all(), f"group {members} split"
    effective = sum(mask[:, members[0]].astype(int) for members in grouping.groups) + mask[:, [8, 9]].sum(axis=1)
    assert (effective == grouping.budget(0.5)).all()
    for column in [0, 2, 5, 8, 9, 10]:  # every maskable feature is hidden in some samples, visible in others
        assert 0.05 < mask[:, column].mean() < 0.95, column


def test_static_mask_ratio_zero_and_one() -> None:
    grouping = StaticGrouping.from_metadata(GROUPS, NEVER)
    rng = np.random.default_rng(3)
    assert not static_mask(rng, 10, grouping, 0.0).any()
    full = static_mask(rng, 10, grouping, 1.0)
    assert full[:, [i for i, n in enumerate(NEVER) if not n]].all() and not full[:, 7].any()


def _loss_inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    truth_d, truth_s = torch.randn(4, 30, 3, generator=generator), torch.randn(4, 6, generator=generator)
    mask_d = torch.rand(4, 30, 3, generator=generator) < 0.5
    mask_s = torch.rand(4, 6, generator=generator) < 0.5
    return truth_d, truth_s, mask_d, mask_s


def test_loss_is_zero_on_perfect_reconstruction() -> None:
    truth_d, truth_s, mask_d, mask_s = _loss_inputs()
    terms = ReconstructionLoss(3, 6)(truth_d, truth_d, mask_d, truth_s, truth_s, mask_s)
    assert terms.total.item() == 0.0
    assert (terms.dynamic_per_var == 0).all() and (terms.static_per_var == 0).all()


def test_loss_counts_masked_cells_only() -> None:
    truth_d, truth_s, mask_d, mask_s = _loss_inputs(1)
    loss = ReconstructionLoss(3, 6)
    pred_d, pred_s = truth_d.clone(), truth_s.clone()
    pred_d[~mask_d] += 10.0  # wrong everywhere visible: must not count
    pred_s[~mask_s] -= 10.0
    assert loss(pred_d, truth_d, mask_d, pred_s, truth_s, mask_s).total.item() == 0.0
    pred_d[mask_d] += 1.0  # off by one z-unit on every hidden cell
    terms = loss(pred_d, truth_d, mask_d, pred_s, truth_s, mask_s)
    torch.testing.assert_close(terms.dynamic_per_var, torch.ones(3))
    assert terms.total.item() == pytest.approx(0.5 * 1.0)  # weight 1.0, 0.5·exp(0)·1 per variable


def test_nan_truth_is_left_out_of_the_loss_and_its_gradient() -> None:
    truth_d, truth_s, mask_d, mask_s = _loss_inputs(2)
    truth_d[0, :10, 0] = float("nan")
    mask_d[0, :10, 0] = True
    truth_s[1, 2] = float("nan")
    mask_s[1, 2] = True
    pred_d = (truth_d.nan_to_num() + 0.5).requires_grad_()
    pred_s = (truth_s.nan_to_num() - 0.5).requires_grad_()
    terms = ReconstructionLoss(3, 6)(pred_d, truth_d, mask_d, pred_s, truth_s, mask_s)
    assert torch.isfinite(terms.total)
    torch.testing.assert_close(terms.dynamic_per_var, torch.full((3,), 0.25))  # NaN cells did not count
    counted = mask_d & ~torch.isnan(truth_d)
    assert terms.dynamic_counts.tolist() == counted.sum(dim=(0, 1)).tolist()
    terms.total.backward()
    assert torch.isfinite(pred_d.grad).all() and (pred_d.grad[0, :10, 0] == 0).all()
    assert pred_s.grad[1, 2] == 0


def test_mean_baseline_is_the_variance_of_hidden_z_scores() -> None:
    truth_d, _, mask_d, _ = _loss_inputs(3)
    baseline, _ = mean_baseline(truth_d, mask_d)
    expected = torch.stack([truth_d[..., v][mask_d[..., v]].square().mean() for v in range(3)])
    torch.testing.assert_close(baseline, expected)


def test_learnable_weights_do_not_collapse() -> None:
    """Minimising over the weights alone must settle at exp(s_v) = L_v, not drive weights to 0."""
    truth_d, truth_s, mask_d, mask_s = _loss_inputs(4)
    loss = ReconstructionLoss(3, 6)
    pred_d = truth_d + torch.tensor([0.5, 1.0, 2.0])  # per-variable errors 0.25, 1, 4
    optimiser = torch.optim.Adam(loss.parameters(), lr=0.1)
    for _ in range(200):
        optimiser.zero_grad()
        loss(pred_d, truth_d, mask_d, truth_s + 1.0, truth_s, mask_s).total.backward()
        optimiser.step()
    torch.testing.assert_close(loss.dynamic_log_var.exp(), torch.tensor([0.25, 1.0, 4.0]), rtol=0.05, atol=0.01)
    assert (torch.exp(-loss.static_log_var) > 0.5).all()
