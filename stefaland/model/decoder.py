"""Linear projection + LSTM over the encoded sequence (paper eq. 9), then the split of eq. 10."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class ReconstructionDecoder(nn.Module):
    """(batch, time + 1, d) → (batch, time + 1, d).

    ``bilstm`` (the paper) uses d/2 units per direction so the heads see width d either way;
    ``lstm`` is the one-way LSTM of the released weights.
    """

    def __init__(self, d_model: int, kind: Literal["lstm", "bilstm"] = "bilstm") -> None:
        super().__init__()
        self.projection = nn.Linear(d_model, d_model)
        bidirectional = kind == "bilstm"
        hidden = d_model // 2 if bidirectional else d_model
        self.lstm = nn.LSTM(d_model, hidden, batch_first=True, bidirectional=bidirectional)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        output, _ = self.lstm(self.projection(sequence))  # (B, T+1, d)
        return output
