"""Per-variable output heads (Linear(d,h) → GELU → Linear(h,1)), stacked for speed."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class VariableHeads(nn.Module):
    """Reconstruct ``n_vars`` scalars from one feature vector each: (..., d) → (..., V)."""

    def __init__(self, n_vars: int, d_model: int, hidden: int = 64, init_range: float = 0.02) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_vars, d_model, hidden))
        self.b1 = nn.Parameter(torch.zeros(n_vars, hidden))
        self.w2 = nn.Parameter(torch.empty(n_vars, hidden))
        self.b2 = nn.Parameter(torch.zeros(n_vars))
        # The first layer keeps PyTorch's Linear scale so the heads start with a usable gradient.
        bound = 1.0 / d_model**0.5
        nn.init.uniform_(self.w1, -bound, bound)
        nn.init.uniform_(self.w2, -1.0 / hidden**0.5, 1.0 / hidden**0.5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        inner = F.gelu(torch.einsum("...d,vdh->...vh", features, self.w1) + self.b1)  # (..., V, h)
        return (inner * self.w2).sum(-1) + self.b2  # (..., V)
