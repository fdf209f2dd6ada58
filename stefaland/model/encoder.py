"""The StefaLand encoder: variable embeddings → learned positions → Transformer encoder.

Finetuning and HBV parameter learning import this module alone: its forward returns one feature
vector per day plus the static token, which is all a downstream head needs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .config import ModelConfig
from .embedding import VariableEmbedding


class EncoderOutput(NamedTuple):
    time_tokens: torch.Tensor  # (batch, time, d)
    static_token: torch.Tensor  # (batch, d)

    def sequence(self) -> torch.Tensor:
        """The full token sequence the decoder sees: (batch, time + 1, d), static token last."""
        return torch.cat([self.time_tokens, self.static_token.unsqueeze(1)], dim=1)


def hidden_cells(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Cells the model must not see: masked by CVGM or missing (NaN) in the data."""
    missing = torch.isnan(values)
    return missing if mask is None else missing | mask.to(torch.bool)


class StefaLandEncoder(nn.Module):
    """Encode forcings (batch, time, n_dynamic) and attributes (batch, n_static)."""

    def __init__(self, n_dynamic: int, n_static: int, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        self.n_dynamic, self.n_static = n_dynamic, n_static
        d = config.d_model
        self.dynamic_embedding = VariableEmbedding(n_dynamic, d, config.embed_hidden, config.dropout, config.init_range)
        self.static_embedding = VariableEmbedding(n_static, d, config.embed_hidden, config.dropout, config.init_range)
        self.position = nn.Parameter(torch.empty(config.max_len + 1, d))  # +1: the static token's slot
        nn.init.uniform_(self.position, -config.init_range, config.init_range)
        self.input_dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(  # post-LN as in the paper's eqs. 5–8; attention runs on SDPA
            d, config.n_heads, config.d_ff, config.dropout, activation="gelu", batch_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.scale = math.sqrt(d)

    def forward(
        self,
        dynamic: torch.Tensor,  # (batch, time, n_dynamic) z-scores, NaN = missing
        static: torch.Tensor,  # (batch, n_static) z-scores, NaN = missing
        dynamic_mask: torch.Tensor | None = None,  # (batch, time, n_dynamic) bool, True = hidden
        static_mask: torch.Tensor | None = None,  # (batch, n_static) bool
    ) -> EncoderOutput:
        batch, time, n_dyn = dynamic.shape
        if n_dyn != self.n_dynamic or static.shape[-1] != self.n_static:
            raise ValueError(
                f"encoder built for {self.n_dynamic} dynamic / {self.n_static} static variables, "
                f"got {n_dyn} / {static.shape[-1]}"
            )
        if time > self.config.max_len:
            raise ValueError(f"sequence of {time} days exceeds max_len {self.config.max_len}")
        time_tokens = self.dynamic_embedding(dynamic, hidden_cells(dynamic, dynamic_mask))  # (B, T, d)
        static_token = self.static_embedding(static, hidden_cells(static, static_mask))  # (B, d)
        tokens = torch.cat([time_tokens, static_token.unsqueeze(1)], dim=1) * self.scale  # (B, T+1, d)
        positions = torch.cat([self.position[:time], self.position[-1:]], dim=0)  # (T+1, d)
        hidden = self.transformer(self.input_dropout(tokens + positions))  # (B, T+1, d)
        return EncoderOutput(hidden[:, :time], hidden[:, time])

