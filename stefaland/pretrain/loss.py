"""Masked reconstruction loss with learnable per-variable weights.

Inputs reach the model as z-scores built from the store's statistics, so a squared error in
model space *is* the error normalised by each variable's standard deviation. Only cells that
were hidden by the masking and are present in the data count: a visible cell can be copied,
and a missing one has no truth.

Per-variable weights use the uncertainty-weighting form, ``exp(-s_v)·L_v + s_v`` (Kendall et al.
2018): the ``s_v`` term penalises the trivial way out (weights → 0), so the weights stay positive
and settle where each variable's error is, instead of collapsing.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class LossTerms(NamedTuple):
    total: torch.Tensor  # () the objective the optimiser minimises
    dynamic_per_var: torch.Tensor  # (n_dynamic,) mean squared z-error over masked, present cells
    static_per_var: torch.Tensor  # (n_static,)
    dynamic_counts: torch.Tensor  # (n_dynamic,) how many cells each mean is over
    static_counts: torch.Tensor  # (n_static,)


def masked_squared_error(
    prediction: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-variable (last axis) mean squared error over ``mask & ~isnan(truth)`` → (mean, count)."""
    counted = mask.to(torch.bool) & ~torch.isnan(truth)  # (..., V)
    error = torch.where(counted, prediction - torch.nan_to_num(truth), torch.zeros_like(prediction))
    flat_error = error.reshape(-1, error.shape[-1])  # (N, V)
    count = counted.reshape(-1, counted.shape[-1]).sum(0)  # (V,)
    mean = flat_error.pow(2).sum(0) / count.clamp(min=1)  # (V,)
    return mean, count


class ReconstructionLoss(nn.Module):
    """``dynamic_weight · mean_v w(L_v) + static_weight · mean_s w(L_s)``, over variables with counted cells."""

    def __init__(self, n_dynamic: int, n_static: int, dynamic_weight: float = 1.0,
                 static_weight: float = 0.5, learn_weights: bool = True) -> None:
        super().__init__()
        self.dynamic_weight, self.static_weight = dynamic_weight, static_weight
        self.dynamic_log_var = nn.Parameter(torch.zeros(n_dynamic), requires_grad=learn_weights)
        self.static_log_var = nn.Parameter(torch.zeros(n_static), requires_grad=learn_weights)

    @staticmethod
    def _weighted(per_var: torch.Tensor, count: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        present = (count > 0).to(per_var.dtype)
        terms = torch.exp(-log_var) * per_var + log_var  # uncertainty weighting; 0 when perfect at s=0
        return 0.5 * (terms * present).sum() / present.sum().clamp(min=1)

    def forward(
        self,
        dynamic_pred: torch.Tensor,  # (B, T, n_dynamic)
        dynamic_true: torch.Tensor,  # (B, T, n_dynamic) NaN = missing
        dynamic_mask: torch.Tensor,  # (B, T, n_dynamic) bool
        static_pred: torch.Tensor,  # (B, n_static)
        static_true: torch.Tensor,  # (B, n_static)
        static_mask: torch.Tensor,  # (B, n_static) bool
    ) -> LossTerms:
        dyn, dyn_count = masked_squared_error(dynamic_pred.float(), dynamic_true, dynamic_mask)
        sta, sta_count = masked_squared_error(static_pred.float(), static_true, static_mask)
        total = self.dynamic_weight * self._weighted(dyn, dyn_count, self.dynamic_log_var) + \
            self.static_weight * self._weighted(sta, sta_count, self.static_log_var)
        return LossTerms(total, dyn, sta, dyn_count, sta_count)


def mean_baseline(truth: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-variable error of predicting the store mean (z-score 0) on the same cells."""
    return masked_squared_error(torch.zeros_like(truth), truth, mask)
