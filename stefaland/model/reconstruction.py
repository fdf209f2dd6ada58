"""The masked autoencoder used for pretraining: encoder + LSTM decoder + per-variable heads."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .config import ModelConfig
from .decoder import ReconstructionDecoder
from .encoder import StefaLandEncoder
from .heads import VariableHeads


class Reconstruction(NamedTuple):
    dynamic: torch.Tensor  # (batch, time, n_dynamic) reconstructed z-scores
    static: torch.Tensor  # (batch, n_static)


class MaskedReconstructionModel(nn.Module):
    """Reconstruct every input cell from the visible ones; the loss decides which cells count.

    After pretraining only ``self.encoder`` is kept (finetuning loads it by name).
    """

    def __init__(self, n_dynamic: int, n_static: int, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        self.encoder = StefaLandEncoder(n_dynamic, n_static, config)
        self.decoder = ReconstructionDecoder(config.d_model, config.decoder)
        self.dynamic_heads = VariableHeads(n_dynamic, config.d_model, config.head_hidden, config.init_range)
        self.static_heads = VariableHeads(n_static, config.d_model, config.head_hidden, config.init_range)

    def forward(
        self,
        dynamic: torch.Tensor,  # (batch, time, n_dynamic)
        static: torch.Tensor,  # (batch, n_static)
        dynamic_mask: torch.Tensor | None = None,  # (batch, time, n_dynamic) bool
        static_mask: torch.Tensor | None = None,  # (batch, n_static) bool
    ) -> Reconstruction:
        encoded = self.encoder(dynamic, static, dynamic_mask, static_mask)
        decoded = self.decoder(encoded.sequence())  # (B, T+1, d)
        time = dynamic.shape[1]
        return Reconstruction(
            dynamic=self.dynamic_heads(decoded[:, :time]),  # (B, T, n_dynamic)
            static=self.static_heads(decoded[:, time]),  # (B, n_static)
        )
