"""The pretraining run configuration: one YAML file, validated, with defaults.

Unknown keys are rejected (a typo such as ``lr_rate`` must not silently fall back to a default),
and the resolved config is saved next to the checkpoints so a run can be repeated exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import StefaLandError
from ..model.config import ModelConfig, parameter_memory_problem
from ..run import config_io


class _Strict(BaseModel):
    # NaN or inf in any number of a run config is a typo or a template gone wrong, never a setting
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


#: Above this a learning rate is a typo (1e4 for 1e-4), not a choice: AdamW diverges in a step.
MAX_LR = 10.0


class ExcludeFold(_Strict):
    """Sites in ``fold`` are never sampled: by the store's ``fold_<split>`` coordinate, or by a split
    file from ``stefaland splits make`` (``split_file``) when the store carries no fold column."""

    split: str
    fold: int
    split_file: str | None = None


class DataConfig(_Strict):
    """What a sample is: a random ``seq_len``-day window of one site, drawn within a shard.

    ``lanes``: independent shard streams; each step draws ``batch_size / lanes`` samples from each.
    The global batch depends on the lanes, not on the number of processes (each rank serves
    ``lanes / world_size`` of them), so 1 and N processes see the same data.
    """

    seq_len: int = Field(365, ge=2)
    batch_size: int = Field(256, ge=1)
    lanes: int = Field(1, ge=1)
    samples_per_site: float = Field(1.0, gt=0)  # per epoch; sets the number of steps in an epoch
    # None = every dynamic variable in the store. Finetuning names these data.dynamic/static; both
    # keys are in shipped configs and docs, and both are looked up by stefaland.run.variables.
    dynamic_vars: list[str] | None = None
    static_vars: list[str] | None = None
    start: str | None = None  # time window of the store to train on (ISO dates)
    end: str | None = None
    # Leave a holdout fold out of pretraining (the paper's PUB/PUR setup: the basins a finetuned
    # model is scored on must not be seen in pretraining either), e.g. {split: pub, fold: 3}.
    exclude: ExcludeFold | None = None

    @model_validator(mode="after")
    def _lanes_divide_batch(self) -> DataConfig:
        if self.batch_size % self.lanes:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of lanes ({self.lanes})")
        return self


class MaskingConfig(_Strict):
    dynamic_ratio: float = Field(0.5, ge=0.0, le=1.0)
    static_ratio: float = Field(0.5, ge=0.0, le=1.0)
    min_window: int = Field(30, ge=1)
    max_window: int = Field(90, ge=1)
    never_mask: list[str] = Field(default_factory=list)  # added to the store's svar_never_mask

    @model_validator(mode="after")
    def _window_order(self) -> MaskingConfig:
        if self.max_window < self.min_window:
            raise ValueError(f"max_window ({self.max_window}) is below min_window ({self.min_window})")
        return self


class LossConfig(_Strict):
    dynamic_weight: float = Field(1.0, ge=0.0)
    static_weight: float = Field(0.5, ge=0.0)
    learn_weights: bool = True


class OptimConfig(_Strict):
    lr: float = 1e-4
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)

    @field_validator("lr")
    @classmethod
    def _sane_lr(cls, value: float) -> float:
        if not (0 < value <= MAX_LR):
            raise ValueError(f"{value} is not a usable learning rate: it must be above 0 and at most {MAX_LR:g} "
                             "(typical values are 1e-5 to 1e-2)")
        return value


class TrainConfig(_Strict):
    epochs: int = Field(20, ge=1)
    seed: int = 0
    checkpoint_every: int = Field(500, ge=1)  # steps; a checkpoint is also written at each epoch end
    keep_checkpoints: int = Field(3, ge=1)
    log_every: int = Field(10, ge=1)
    eval_batches: int = Field(4, ge=0)  # fixed held-back batches scored at each epoch end
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA
    # torch.compile of the training forward (and so its backward): faster steps after a one-off
    # compile. "auto" compiles on CUDA only: on CPU the compile costs tens of seconds per process
    # (40-90 s of C++ codegen on 2 cores for the tiny config) for ~1.05x samples/s there (the
    # nn.LSTM decoder stays eager), so CPU runs rarely pay it back (benchmarks/README.md).
    # Execution only: checkpoints are saved from the uncompiled module, so a run may be resumed
    # with the other setting (the run folder's config check ignores this key).
    compile: Literal["auto", "on", "off"] = "auto"
    # CPU threads per process (None = torch's default); finetuning's train.threads, set by the same code
    num_threads: int | None = Field(None, ge=1)


class PretrainConfig(_Strict):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _window_fits_positions(self) -> PretrainConfig:
        # the encoder has learned positions for max_len days only; a longer window fails in the
        # first forward pass with a traceback, so it is refused here, before any data is read
        if self.data.seq_len > self.model.max_len:
            raise ValueError(f"data.seq_len ({self.data.seq_len}) exceeds model.max_len ({self.model.max_len}), the "
                             "longest window the encoder has positions for; shorten data.seq_len or raise model.max_len")
        return self

    def to_yaml(self) -> str:
        return config_io.config_yaml(self)


NOT_A_MAPPING = "expected a mapping of sections (model, data, masking, loss, optim, train)"


def parse_config(text: bytes | str, source: str = "config") -> PretrainConfig:
    """A YAML document (``source`` names it in errors), e.g. the ``config.yaml`` a run folder keeps."""
    return config_io.parse_config(PretrainConfig, text, source, NOT_A_MAPPING)


def with_overrides(config: PretrainConfig, overrides: dict[str, dict[str, Any]], source: str) -> PretrainConfig:
    """``config`` with ``{section: {key: value}}`` replaced, validated again as a whole.

    Why not assign the fields: pydantic does not validate assignment, so ``--decoder bilstm`` on an
    odd ``d_model`` would pass here and fail as a traceback in the first forward pass of every rank.
    """
    values = config.model_dump(mode="json")
    for section, keys in overrides.items():
        values[section].update(keys)
    return config_io.validate_config(PretrainConfig, values, source)


def load_config(path: str | Path | None) -> PretrainConfig:
    """Read and validate a run config; ``None`` gives every default.

    This is the config of a run about to start on this machine, so the model must also fit in its
    memory (``submit`` checks with :func:`parse_config`, as the pod's machine is not this one).
    """
    if path is None:
        return PretrainConfig()
    config = config_io.read_config(PretrainConfig, str(path), NOT_A_MAPPING)
    check_fits_this_machine(config, str(path))
    return config


def check_fits_this_machine(config: PretrainConfig, source: str) -> None:
    """Refuse, with the figure, an encoder whose parameters alone exceed this machine's memory."""
    problem = parameter_memory_problem(f"model ({config.model.sizes()})", config.model.parameter_count())
    if problem:
        raise StefaLandError(f"{source}: {problem}")
