"""The LSTM of the paper's decoders, with hydroDL's weight dropout ("DropConnect").

MHPI's ``CudnnLstm`` (hydroDL, and the StefaLand authors' code after it) does not drop the LSTM's
outputs: during training it multiplies ``w_ih`` and ``w_hh`` by one fresh Bernoulli mask per
forward pass, shared by every sample and every day of the batch. Besides being the paper's model,
that is far cheaper on a CPU than an output mask: two masks of 4h × h instead of one random number
per (day, sample, unit) — 24 M of them for a 365 × 256 × 256 batch, which cost 8 % of an LSTM-SL
step in the profile of benchmarks/README.md.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


class DropConnectLSTM(nn.LSTM):
    """One-layer ``nn.LSTM`` (same parameters, same state_dict) whose training dropout masks the weights."""

    def __init__(self, input_size: int, hidden_size: int, weight_dropout: float, batch_first: bool = False) -> None:
        super().__init__(input_size, hidden_size, batch_first=batch_first)
        self.weight_dropout = weight_dropout

    # tensors only: nn.LSTM.forward also takes a PackedSequence, which the decoders never pass
    def forward(  # type: ignore[override]
        self, inputs: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if not (self.training and self.weight_dropout > 0):
            return super().forward(inputs, hx)
        flat = cast(list[torch.Tensor], self._flat_weights)  # one layer with biases: no weight is None
        weights = [F.dropout(w, self.weight_dropout, training=True) if name.startswith("weight_") else w
                   for name, w in zip(self._flat_weights_names, flat)]
        if hx is None:
            zeros = inputs.new_zeros(1, inputs.shape[0 if self.batch_first else 1], self.hidden_size)
            hx = (zeros, zeros)
        # the kernel nn.LSTM.forward itself calls, with the masked weights in place of its own
        output, h, c = torch._VF.lstm(inputs, hx, weights, True, 1, 0.0, True, False, self.batch_first)
        return output, (h, c)
