"""What every torch finetuning model shares: the input layout and the warm-up contract.

Models take z-scored ``dynamic`` (batch, time, n_dyn) and ``static`` (batch, n_static) with NaN
for missing cells and return the z-scored target for the last ``time - warmup`` days
(batch, time - warmup). ``warmup`` is 0 for direct predictors and HBV's spin-up for the hybrids.
The class answers it (and its network's output width) for a config *before* a model is built,
through the registry, which is how the trainer and the predictor know how long a window must be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ..config import ModelSection


def lstm_inputs(dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
    """[forcings, statics] per day with missing cells at the mean (0): (B, T, n_dyn + n_static)."""
    time = dynamic.shape[1]
    dyn = torch.nan_to_num(dynamic, nan=0.0)  # (B, T, n_dyn)
    sta = torch.nan_to_num(static, nan=0.0).unsqueeze(1).expand(-1, time, -1)  # (B, T, n_static)
    return torch.cat([dyn, sta], dim=-1)


class FinetuneModel(nn.Module):
    """Base class: subclasses implement ``forward`` and override the class answers below if they differ."""

    @classmethod
    def warmup_days(cls, config: ModelSection) -> int:
        """Input days consumed before the first output; 0: every input day has its output."""
        return 0

    @classmethod
    def network_width(cls, config: ModelSection) -> int:
        """Values per day the inner network emits; 1: the z-scored target itself."""
        return 1
