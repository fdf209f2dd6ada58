"""Model + learnable loss weights as one module, so DDP averages the gradients of both."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..model import MaskedReconstructionModel
from .loss import ReconstructionLoss, masked_squared_error


class StepOutput(NamedTuple):
    total: torch.Tensor  # () the objective: mean over this process's lanes of each lane's loss
    sums: torch.Tensor  # (6, max(Vd, Vs)) squared-error sums and counts, for exact global logging


class PretrainObjective(nn.Module):
    """Forward the masked batch, score it lane by lane.

    The loss is a mean over lanes of per-lane losses; DDP's gradient average over ranks (each with
    the same number of lanes) is then the same mean, so N processes optimise exactly what one does.
    """

    def __init__(self, model: MaskedReconstructionModel, loss: ReconstructionLoss) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor, dynamic_mask: torch.Tensor,
                static_mask: torch.Tensor, n_lanes: int) -> StepOutput:
        output = self.model(dynamic, static, dynamic_mask, static_mask)
        totals = []
        for lane in range(n_lanes):
            rows = slice(lane * dynamic.shape[0] // n_lanes, (lane + 1) * dynamic.shape[0] // n_lanes)
            terms = self.loss(output.dynamic[rows], dynamic[rows], dynamic_mask[rows],
                              output.static[rows], static[rows], static_mask[rows])
            totals.append(terms.total)
        with torch.no_grad():
            sums = error_sums(output.dynamic.float(), dynamic, dynamic_mask, output.static.float(), static, static_mask)
        return StepOutput(torch.stack(totals).mean(), sums)


def error_sums(d_pred: torch.Tensor, d_true: torch.Tensor, d_mask: torch.Tensor,
               s_pred: torch.Tensor, s_true: torch.Tensor, s_mask: torch.Tensor) -> torch.Tensor:
    """Rows: dynamic SSE, dynamic count, dynamic mean-baseline SSE, then the same for statics."""
    width = max(d_true.shape[-1], s_true.shape[-1])
    rows = []
    for pred, true, mask in ((d_pred, d_true, d_mask), (s_pred, s_true, s_mask)):
        mean, count = masked_squared_error(pred, true, mask)
        base, _ = masked_squared_error(torch.zeros_like(true), true, mask)
        count = count.to(mean.dtype)
        for row in (mean * count, count, base * count):
            rows.append(torch.nn.functional.pad(row, (0, width - row.shape[0])))
    return torch.stack(rows)  # (6, width)
