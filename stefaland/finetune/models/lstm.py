"""LSTM-SL: the supervised baseline of the paper (and of hydroDL's ``CudnnLstmModel``)."""

from __future__ import annotations

import torch
from torch import nn

from .base import FinetuneModel, lstm_inputs
from .recurrent import DropConnectLSTM


class LSTMNetwork(nn.Module):
    """Linear(forcings + statics → h) → ReLU → LSTM (weight dropout) → Linear(h → n_out): (B, T, n_out).

    Runs time-major inside, as hydroDL's CudnnLstm does: the LSTM kernel wants (T, B, h), so the
    transposes happen on the narrow inputs and outputs instead of copying the h-wide sequences in
    and out of the kernel, forward and backward.
    """

    def __init__(self, n_dynamic: int, n_static: int, hidden: int, dropout: float, n_out: int = 1) -> None:
        super().__init__()
        self.inp = nn.Linear(n_dynamic + n_static, hidden)
        self.lstm = DropConnectLSTM(hidden, hidden, dropout)
        self.out = nn.Linear(hidden, n_out)

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.inp(lstm_inputs(dynamic, static).transpose(0, 1)))  # (T, B, h)
        h, _ = self.lstm(x)  # (T, B, h)
        return self.out(h).transpose(0, 1)  # (B, T, n_out)


class LSTMSL(FinetuneModel):
    def __init__(self, n_dynamic: int, n_static: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.network = LSTMNetwork(n_dynamic, n_static, hidden, dropout, 1)

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        return self.network(dynamic, static).squeeze(-1)  # (B, T)
