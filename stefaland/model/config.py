"""The encoder's hyper-parameters, validated, so a checkpoint can rebuild the exact model it holds."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelConfig(BaseModel):
    """Defaults follow the authors' public release (d 256, 4 heads, 4 layers, FFN 512, dropout 0.1).

    ``decoder``: ``bilstm`` is the paper's equation 9; ``lstm`` matches the released weights.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN/inf dropout or init_range: refused

    d_model: int = Field(256, ge=4)
    n_heads: int = Field(4, ge=1)
    n_layers: int = Field(4, ge=1)
    d_ff: int = Field(512, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    embed_hidden: int = Field(64, ge=1)
    head_hidden: int = Field(64, ge=1)
    max_len: int = Field(1000, ge=2)
    init_range: float = Field(0.02, gt=0.0)
    decoder: Literal["lstm", "bilstm"] = "bilstm"

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.decoder == "bilstm" and self.d_model % 2:
            raise ValueError(f"decoder bilstm needs an even d_model (got {self.d_model})")
        return self
