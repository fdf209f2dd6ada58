"""The encoder's hyper-parameters, validated, so a checkpoint can rebuild the exact model it holds.

Also the estimate of a model's parameter memory, made from the config alone so an impossible size
(``model.hidden: 1000000000``) is refused in one line before anything is read or allocated, rather
than as the allocator's traceback once the data is loaded.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Bytes of one float32 parameter (the weights alone; training adds gradients and optimiser moments).
PARAMETER_BYTES = 4
#: Parameters above this are refused wherever a config is read (``submit`` included, where the
#: pod's machine is unknown): no single machine holds a TiB of weights, let alone trains them.
MAX_PARAMETER_BYTES = 2**40


def human_bytes(n: int) -> str:
    """``1.5 GiB``: a size as the error lines print it (any size: a typo can ask for yottabytes)."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.3g} YiB"


def machine_memory() -> int:
    """Bytes of physical memory of this machine (what a model is built in before it moves to a GPU)."""
    import psutil

    return int(psutil.virtual_memory().total)


def parameter_memory_problem(what: str, count: int, limit: int | None = None) -> str | None:
    """Why ``count`` parameters (sized by ``what``) cannot be built, or None when they fit ``limit``
    bytes (default: this machine's memory)."""
    needed = count * PARAMETER_BYTES
    if limit is None:
        limit = machine_memory()
        where = f"this machine has {human_bytes(limit)} of memory"
    else:
        where = f"more than any one machine holds (the limit is {human_bytes(limit)})"
    if needed <= limit:
        return None
    return (f"{what} needs ~{human_bytes(needed)} for its parameters alone (at least {count:.3g} float32 weights); "
            f"{where}; choose smaller sizes")


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

    def parameter_count(self, n_dynamic: int = 1, n_static: int = 1) -> int:
        """A lower bound on the encoder's parameters (variable embeddings, positions, Transformer
        layers); the few biases and norms left out do not change the order of magnitude."""
        d, variables = self.d_model, n_dynamic + n_static
        embeddings = variables * (2 * self.embed_hidden + self.embed_hidden * d + 2 * d)
        positions = (self.max_len + 1) * d
        layers = self.n_layers * (4 * d * d + 2 * d * self.d_ff)  # attention projections + feed-forward
        return embeddings + positions + layers

    def sizes(self, prefix: str = "") -> str:
        """The settings that size the encoder, as an error line names them."""
        return (f"{prefix}d_model = {self.d_model}, n_layers = {self.n_layers}, d_ff = {self.d_ff}, "
                f"max_len = {self.max_len}, embed_hidden = {self.embed_hidden}")

    @model_validator(mode="after")
    def _size_is_possible(self) -> ModelConfig:
        problem = parameter_memory_problem(self.sizes(), self.parameter_count(), MAX_PARAMETER_BYTES)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.decoder == "bilstm" and self.d_model % 2:
            raise ValueError(f"decoder bilstm needs an even d_model (got {self.d_model})")
        return self
