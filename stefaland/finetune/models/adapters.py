"""Adapters between the frozen encoder's features and the task decoder (paper Figure D3).

All map (..., d) → (..., d) so they are interchangeable by name in the config:
``none`` (identity), ``gated`` (a sigmoid selector decides per feature how much passes),
``bottleneck`` (compress to d/4 and expand again), ``residual`` (a small MLP added to the features
through a skip connection, so it starts close to the identity).
"""

from __future__ import annotations

import torch
from torch import nn


class GatedAdapter(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.value = nn.Linear(d, d)
        self.gate = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(x)) * self.value(x)


class BottleneckAdapter(nn.Module):
    def __init__(self, d: int, reduction: int = 4) -> None:
        super().__init__()
        inner = max(1, d // reduction)
        self.down, self.up = nn.Linear(d, inner), nn.Linear(inner, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(nn.functional.gelu(self.down(x)))


class ResidualAdapter(BottleneckAdapter):
    def __init__(self, d: int, reduction: int = 4) -> None:
        super().__init__(d, reduction)
        nn.init.zeros_(self.up.weight)  # starts as the identity: the pretrained features pass untouched
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


ADAPTERS: dict[str, type[nn.Module] | None] = {
    "none": None, "gated": GatedAdapter, "bottleneck": BottleneckAdapter, "residual": ResidualAdapter,
}


def make_adapter(kind: str, d: int) -> nn.Module:
    if kind not in ADAPTERS:
        raise ValueError(f"unknown adapter {kind!r}; known: {', '.join(ADAPTERS)}")
    cls = ADAPTERS[kind]
    return nn.Identity() if cls is None else cls(d)
