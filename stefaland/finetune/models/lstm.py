"""LSTM-SL: the supervised baseline of the paper (and of hydroDL's ``CudnnLstmModel``)."""

from __future__ import annotations

import torch
from torch import nn

from .base import FinetuneModel, lstm_inputs


class LSTMNetwork(nn.Module):
    """Linear(forcings + statics → h) → ReLU → LSTM → dropout → Linear(h → n_out): (B, T, n_out)."""

    def __init__(self, n_dynamic: int, n_static: int, hidden: int, dropout: float, n_out: int = 1) -> None:
        super().__init__()
        self.inp = nn.Linear(n_dynamic + n_static, hidden)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_out)

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.inp(lstm_inputs(dynamic, static)))  # (B, T, h)
        h, _ = self.lstm(x)  # (B, T, h)
        return self.out(self.drop(h))  # (B, T, n_out)


class LSTMSL(FinetuneModel):
    def __init__(self, n_dynamic: int, n_static: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.network = LSTMNetwork(n_dynamic, n_static, hidden, dropout, 1)

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        return self.network(dynamic, static).squeeze(-1)  # (B, T)
