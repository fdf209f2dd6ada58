"""StefaLand finetuning heads: the frozen encoder's features feeding an LSTM decoder.

``EncoderFeatures`` is the shared front: encoder → LayerNorm → × learnable scale (init 0.1, so the
decoder starts by trusting its own inputs) → adapter. ``ResConn`` (the paper's main model)
re-injects the raw forcings and statics before *and* after the LSTM and adds the LSTM output
back (the residual path); ``NoResConn`` uses the encoder features once, before the LSTM;
``TransformerNetwork`` (StefaLand-Transformer, wrapped in ``DirectModel``) is the encoder
architecture trained from scratch on the task with a small head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from stefaland.model import StefaLandEncoder

from .adapters import make_adapter
from .base import FinetuneModel, lstm_inputs
from .recurrent import DropConnectLSTM


class EncoderFeatures(nn.Module):
    """Per-day features (B, T, d) of the (frozen) encoder, normalised, scaled and adapted.

    The encoder sees the pretraining variables in the pretraining order (``dynamic_index`` /
    ``static_index`` into the finetuning inputs) rescaled to the pretraining store's statistics
    (``*_gain``/``*_shift``: identity when they are the same store).
    """

    # buffers, registered in __init__
    dynamic_index: torch.Tensor
    static_index: torch.Tensor
    dynamic_gain: torch.Tensor
    dynamic_shift: torch.Tensor
    static_gain: torch.Tensor
    static_shift: torch.Tensor

    def __init__(self, encoder: StefaLandEncoder, adapter: str, freeze: bool,
                 dynamic_index: Sequence[int], static_index: Sequence[int],
                 dynamic_gain: np.ndarray | None = None, dynamic_shift: np.ndarray | None = None,
                 static_gain: np.ndarray | None = None, static_shift: np.ndarray | None = None) -> None:
        super().__init__()
        self.encoder, self.freeze = encoder, freeze
        d = encoder.config.d_model
        self.norm = nn.LayerNorm(d)
        self.scale = nn.Parameter(torch.tensor(0.1))
        self.adapter = make_adapter(adapter, d)
        n_dyn, n_sta = len(dynamic_index), len(static_index)
        self.register_buffer("dynamic_index", torch.as_tensor(list(dynamic_index), dtype=torch.long))
        self.register_buffer("static_index", torch.as_tensor(list(static_index), dtype=torch.long))
        for name, value, n in (("dynamic_gain", dynamic_gain, n_dyn), ("dynamic_shift", dynamic_shift, n_dyn),
                               ("static_gain", static_gain, n_sta), ("static_shift", static_shift, n_sta)):
            default = np.ones(n) if name.endswith("gain") else np.zeros(n)
            self.register_buffer(name, torch.as_tensor(default if value is None else value, dtype=torch.float32))
        if freeze:
            for parameter in self.encoder.parameters():
                parameter.requires_grad_(False)

    @property
    def out_dim(self) -> int:
        """Width of the adapted features the heads receive."""
        return self.encoder.config.d_model

    def train(self, mode: bool = True) -> EncoderFeatures:
        super().train(mode)
        if self.freeze:
            self.encoder.eval()  # a frozen encoder keeps its dropout off while the head trains
        return self

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        dyn = dynamic[..., self.dynamic_index] * self.dynamic_gain + self.dynamic_shift  # (B, T, n_enc_dyn)
        sta = static[..., self.static_index] * self.static_gain + self.static_shift  # (B, n_enc_static)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            tokens = self.encoder(dyn, sta).time_tokens  # (B, T, d)
        return self.adapter(self.norm(tokens) * self.scale)  # (B, T, d)


class ResConnNetwork(nn.Module):
    """pre = Linear([adapted, x, s] → h) → LSTM → post = Linear([lstm, x, s] → h); (post + lstm) → Linear.

    ``features`` is any module with ``out_dim`` mapping (dynamic, static) to (B, T, out_dim): the
    StefaLand encoder's (:class:`EncoderFeatures`) or a foreign encoder's (:mod:`.foreign`).
    ``static_inputs``: the static columns the raw path re-injects (default all); a foreign encoder's
    image patches are its own input, not the decoder's.
    """

    static_inputs: torch.Tensor | None

    def __init__(self, features: nn.Module, n_dynamic: int, n_static: int, hidden: int,
                 dropout: float, n_out: int = 1, static_inputs: Sequence[int] | None = None) -> None:
        super().__init__()
        if static_inputs is not None:
            n_static = len(static_inputs)
            self.register_buffer("static_inputs", torch.as_tensor(list(static_inputs), dtype=torch.long))
        else:
            self.static_inputs = None
        described: Any = features  # EncoderFeatures or a foreign encoder's SiteFeatures: both say out_dim
        d, n_in = int(described.out_dim), n_dynamic + n_static
        self.features = features
        self.pre = nn.Linear(d + n_in, hidden)
        self.lstm = DropConnectLSTM(hidden, hidden, dropout, batch_first=True)
        self.post = nn.Linear(hidden + n_in, hidden)
        self.out = nn.Linear(hidden, n_out)

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        raw = static if self.static_inputs is None else static[:, self.static_inputs]
        inputs = lstm_inputs(dynamic, raw)  # (B, T, n_in)
        adapted = self.features(dynamic, static)  # (B, T, d)
        h, _ = self.lstm(self.pre(torch.cat([adapted, inputs], dim=-1)))  # (B, T, h)
        post = self.post(torch.cat([h, inputs], dim=-1))  # (B, T, h)
        return self.out(post + h)  # (B, T, n_out)


class NoResConnNetwork(nn.Module):
    """Linear([adapted, x, s] → h) → LSTM → Linear: the encoder features enter once."""

    def __init__(self, features: EncoderFeatures, n_dynamic: int, n_static: int, hidden: int,
                 dropout: float, n_out: int = 1) -> None:
        super().__init__()
        d = features.encoder.config.d_model
        self.features = features
        self.pre = nn.Linear(d + n_dynamic + n_static, hidden)
        self.lstm = DropConnectLSTM(hidden, hidden, dropout, batch_first=True)
        self.out = nn.Linear(hidden, n_out)

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        adapted = self.features(dynamic, static)  # (B, T, d)
        h, _ = self.lstm(self.pre(torch.cat([adapted, lstm_inputs(dynamic, static)], dim=-1)))  # (B, T, h)
        return self.out(h)  # (B, T, n_out)


class TransformerNetwork(nn.Module):
    """The StefaLand encoder trained on the task, head Linear(d, 64) → GELU → Linear(64, n_out)."""

    def __init__(self, encoder: StefaLandEncoder, n_out: int = 1) -> None:
        super().__init__()
        d = encoder.config.d_model
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(d, 64), nn.GELU(), nn.Linear(64, n_out))

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(dynamic, static).time_tokens)  # (B, T, n_out)


class DirectModel(FinetuneModel):
    """A network with one output per day, used as the z-scored target."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        return self.network(dynamic, static).squeeze(-1)  # (B, T)
