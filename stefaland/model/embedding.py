"""Per-variable embeddings summed into one token, with a learnable mask vector per variable.

Every variable gets its own small MLP (Linear(1,h) → GELU → dropout → Linear(h,d)), as in the
paper's equations 1 and 3. Instead of a Python loop over variables (slow, and hostile to
``torch.compile``) the MLPs are stored as stacked weights and evaluated with ``einsum``; the
sum over variables is folded into the second matmul so no (batch, time, var, d) tensor is built.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class VariableEmbedding(nn.Module):
    """Embed ``n_vars`` scalar variables separately and sum them: (..., V) → (..., d)."""

    def __init__(self, n_vars: int, d_model: int, hidden: int = 64, dropout: float = 0.0,
                 init_range: float = 0.02) -> None:
        super().__init__()
        if n_vars < 1:
            raise ValueError("VariableEmbedding needs at least one variable")
        self.n_vars, self.d_model, self.hidden = n_vars, d_model, hidden
        self.w1 = nn.Parameter(torch.empty(n_vars, hidden))  # Linear(1, h) per variable
        self.b1 = nn.Parameter(torch.zeros(n_vars, hidden))
        self.w2 = nn.Parameter(torch.empty(n_vars, hidden, d_model))  # Linear(h, d) per variable
        self.b2 = nn.Parameter(torch.zeros(n_vars, d_model))
        self.mask_vector = nn.Parameter(torch.empty(n_vars, d_model))  # replaces a hidden cell's embedding
        self.dropout = nn.Dropout(dropout)
        for weight in (self.w1, self.w2, self.mask_vector):
            nn.init.uniform_(weight, -init_range, init_range)

    def forward(self, values: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """``values`` (..., V) z-scores; ``hidden`` (..., V) bool, True = masked or missing.

        A hidden cell contributes its variable's mask vector instead of its value's embedding, so
        the model can tell "unknown" from "zero", and a NaN never reaches an arithmetic op.
        """
        keep = (~hidden).to(self.w1.dtype)  # (..., V)
        clean = torch.where(hidden, torch.zeros_like(values), values)  # (..., V)
        inner = F.gelu(clean.unsqueeze(-1) * self.w1 + self.b1)  # (..., V, h)
        inner = self.dropout(inner) * keep.unsqueeze(-1)  # (..., V, h)
        token = torch.einsum("...vh,vhd->...d", inner, self.w2)  # (..., d)
        token = token + keep @ self.b2 + (1.0 - keep) @ self.mask_vector  # (..., d)
        return token
