"""The finetuning run configuration: one validated YAML file per experiment.

Defaults follow the paper's Table C2 and the authors' public release (where the two differ,
docs/FINETUNE.md says so): CAMELS windows of 365 days, hidden 256 (512 for the HBV runs, set in
their YAML), dropout 0.2, batch 64, 25 epochs, seed 111111, period 1989-10-01 .. 2008-09-30. The
loss and the optimiser follow the target (:mod:`.target_defaults`; the paper's configs name Adadelta,
as Table C2 does). Unknown keys are rejected
(``extra="forbid"``) so a typo in a config never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from stefaland.errors import StefaLandError
from stefaland.model import ModelConfig
from stefaland.model.config import MAX_PARAMETER_BYTES, parameter_memory_problem
from stefaland.run import config_io

from .target_defaults import target_default

ADAPTERS = ("none", "gated", "bottleneck", "residual")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    """Which variables and which days; ``None`` variable lists mean "every one in the store"."""

    dynamic: list[str] | None = None  # pretraining's data.dynamic_vars (stefaland.run.variables looks both up)
    static: list[str] | None = None
    target: str = "streamflow"
    # Variables hidden from the inputs (NaN: the encoder's mask vector, the mean for the LSTMs),
    # e.g. the other texture fractions when predicting one (the paper's WoSIS setting).
    hide: list[str] = []
    train_start: str = "1989-10-01"
    train_end: str = "2008-09-30"
    test_start: str = "1989-10-01"  # PUB/PUR: same period, different (held-out) basins
    test_end: str = "2008-09-30"      # --split temporal: every site, this period only
    # Validation, taken from the training side only: a period (scored on the validation sites, or on
    # the training sites when there are none) and/or a fraction of the training sites held back.
    # Either one turns on per-epoch validation, early stopping (train.patience) and best-epoch weights.
    valid_start: str | None = None
    valid_end: str | None = None
    valid_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    # Physical range of the target on its own scale; predictions are clipped to it (``auto``: from the
    # target's canonical unit, e.g. streamflow in mm/day >= 0, soil moisture in m3/m3 within [0, 1]).
    target_bounds: Literal["auto"] | tuple[float | None, float | None] | None = "auto"
    seq_len: int = Field(365, ge=2)
    # The first days of every training window only warm the network's state up and are left out of
    # the loss (neuralhydrology's predict_last_n, counted from the other end): an LSTM cannot know a
    # basin's groundwater store on the first day of a window, and fitting those days teaches it to
    # guess. 0 = hydroDL's LSTM-SL (every day scored).
    spinup_days: int = Field(0, ge=0)
    # Prediction runs over the whole test period in overlapping windows; the first
    # ``predict_overlap`` outputs of every window only warm the model up and are discarded.
    predict_overlap: int | None = Field(None, ge=0)

    def overlap(self) -> int:
        return max(self.seq_len // 2, self.spinup_days) if self.predict_overlap is None else self.predict_overlap

    def validates(self) -> bool:
        return self.valid_start is not None or self.valid_fraction > 0


class HBVConfig(_Strict):
    """HBV 1.1p settings (Table C2) and which store variables drive it."""

    nmul: int = Field(16, ge=1)
    warmup_days: int = Field(365, ge=0)
    routing: bool = True
    dynamic_parameters: list[str] = ["BETA", "K0", "BETAET"]
    dynamic_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    precipitation: str = "prcp"
    temperature: list[str] = ["tmax", "tmin"]  # averaged
    # None: Hargreaves' radiation form from the temperature, ``radiation`` (W/m2, daylight mean)
    # and ``day_length`` (s) -- CAMELS' Daymet forcings have no PET of their own.
    pet: str | None = "pet"
    radiation: str = "srad"
    day_length: str = "dayl"


class ModelSection(_Strict):
    name: str = "lstm"
    # The model's name in predictions files, report tables and the model card (default: the paper's
    # name of model.name, e.g. LSTM-SL); two runs of one model with their own labels are reported
    # side by side. run.json keeps model.name as "model" and this as "label".
    label: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[^\s,/]+$")
    hidden: int = Field(256, ge=1)
    # weight dropout of the decoder LSTM (hydroDL's CudnnLstm "drW": w_ih and w_hh masked per batch)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    adapter: Literal["none", "gated", "bottleneck", "residual"] = "none"
    # A pretraining run folder (``<run>/checkpoints/latest.json``) or a ``.pt`` file; the
    # stefaland_* models need it, ablation_* and the transformer ignore it.
    pretrained: str | None = None
    freeze_encoder: bool = True
    # Foreign encoders (terramind_resconn, prithviwxc_resconn; docs/FOREIGN_ENCODERS.md): the size of
    # the published model (TerraMind tiny|small|base|large, default base; Prithvi-WxC 2300m, or tiny
    # for tests), and whether to build one without model.pretrained (random weights, said on the card).
    variant: str | None = None
    allow_random_init: bool = False
    # The paper's holdouts leave the held-out sites out of pretraining too; a finetuning run refuses
    # an encoder whose pretraining did not exclude the fold it scores (``data.exclude`` there) unless
    # this is set — for a pretraining store that never held these sites, or a quick demo.
    allow_pretraining_leakage: bool = False
    encoder: ModelConfig = ModelConfig(decoder="lstm")  # the architecture when built without a checkpoint
    hbv: HBVConfig = HBVConfig()
    # scikit-learn baselines
    max_rows: int = Field(200_000, ge=100)  # (site, day) rows sampled for fitting
    n_estimators: int = Field(100, ge=1)
    max_depth: int | None = Field(None, ge=1)

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        """Refuse a name the registry cannot build while the config is read, not after the data is loaded
        (and before ``submit`` schedules a GPU pod for it)."""
        from .models.registry import known_models  # imported here: the registry pulls in torch and every model

        models = known_models()
        if name not in models:
            raise PydanticCustomError("unknown_model", "unknown model '{name}'; known: {known}",
                                      {"name": name, "known": ", ".join(models)})
        return name

    def display_label(self) -> str:
        """``label``, else the registry's label of the model (the paper's name of a built-in one), else its name."""
        from .models.registry import model_label  # imported here: the registry pulls in torch and every model

        return self.label or model_label(self.name)

    def builds_encoder_from_config(self) -> bool:
        """The transformer always, an ablation without ``pretrained``: ``encoder`` then sizes the model."""
        return self.name == "stefaland_transformer" or (self.name.startswith("ablation_") and self.pretrained is None)

    def parameter_estimate(self, prefix: str = "model.") -> tuple[str, int]:
        """What sizes this model (for the error line, keys after ``prefix``) and a lower bound on its
        parameters, from the config alone: an LSTM of ``hidden`` (its two weight matrices,
        8·hidden²) and the encoder when it is built from ``encoder``. Plug-ins are not estimated."""
        from .models.registry import MODELS  # imported here: the registry pulls in torch and every model

        spec = MODELS.get(self.name)  # not known_models(): this runs while the module loads (the default section)
        uses_hidden = spec is not None and spec.hidden_lstm
        parts = [(f"{prefix}hidden = {self.hidden}", 8 * self.hidden**2)] if uses_hidden else []
        if self.builds_encoder_from_config():
            parts.append((f"{prefix}encoder ({self.encoder.sizes()})", self.encoder.parameter_count()))
        if not parts:
            return "", 0
        return max(parts, key=lambda part: part[1])[0], sum(count for _, count in parts)

    @model_validator(mode="after")
    def _size_is_possible(self) -> ModelSection:
        what, count = self.parameter_estimate(prefix="")  # the error's location already says "model"
        problem = parameter_memory_problem(what, count, MAX_PARAMETER_BYTES)
        if problem:
            raise ValueError(problem)
        return self


class TrainConfig(_Strict):
    epochs: int = Field(25, ge=1)  # 0 would predict with an untrained model
    batch_size: int = Field(64, ge=1)
    # None: the target's default (stefaland.finetune.target_defaults: adam for streamflow, else adadelta).
    optimizer: Literal["adadelta", "adam", "adamw"] | None = None
    lr: float | None = Field(None, gt=0.0, le=10.0, allow_inf_nan=False)  # None: 1.0 for Adadelta, 1e-3 for Adam(W)
    # rmse/mse over every observed cell; nse: neuralhydrology's NSE* (each basin's squared errors
    # divided by (its training-period std + 0.1)^2, so wet, flashy basins do not dominate the fit).
    # None: the target's default (stefaland.finetune.target_defaults: nse for streamflow, else rmse).
    loss: Literal["rmse", "mse", "nse"] | None = None
    seed: int = 111111
    # None: hydroDL's rule (enough batches that each (site, day) is drawn with 99 % probability),
    # raised to min_updates / epochs when the training set is small -- hydroDL's rule alone gives a
    # 19-basin set 13 batches an epoch, far too few updates to learn anything.
    iterations_per_epoch: int | None = Field(None, ge=1)
    min_updates: int = Field(2000, ge=0)
    # constant: the optimiser's rate throughout; cosine: decays to lr * lr_final over the planned updates
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    lr_final: float = Field(0.1, ge=0.0, le=1.0)
    warmup_updates: int = Field(0, ge=0)
    # Early stopping on the validation NSE (needs data.valid_*): stop after this many epochs without
    # improvement; predictions always come from the best validation epoch when validation is on.
    patience: int | None = Field(None, ge=1)
    grad_clip: float | None = Field(1.0, gt=0.0)
    threads: int | None = Field(None, ge=1)  # CPU threads (None = torch's default); pretraining's train.num_threads
    device: str = "auto"  # auto = cuda when available, else cpu; or cpu, cuda, cuda:1 ...


class FinetuneConfig(_Strict):
    task: str = "camels"
    data: DataConfig = DataConfig()
    model: ModelSection = ModelSection()
    train: TrainConfig = TrainConfig()

    def loss(self) -> str:
        """``train.loss``, or the target's default when the config leaves it unset (None stays None in
        the saved config.yaml, so a fold's config still says the choice was not the user's)."""
        return self.train.loss or target_default(self.data.target, "loss")

    def optimizer(self) -> str:
        """``train.optimizer``, or the target's default when the config leaves it unset."""
        return self.train.optimizer or target_default(self.data.target, "optimizer")

    def learning_rate(self) -> float:
        """``train.lr``, or the optimiser's usual starting rate: 1.0 for Adadelta, 1e-3 for Adam(W)."""
        return self.train.lr if self.train.lr is not None else (1.0 if self.optimizer() == "adadelta" else 1e-3)

    def target_defaults(self) -> dict[str, str]:
        """Settings this config left unset that its target decided, e.g. ``{"train.loss": "nse"}``:
        run.json records them so a reader knows which choices were the user's."""
        chosen = {"train.loss": (self.train.loss, self.loss()), "train.optimizer": (self.train.optimizer, self.optimizer())}
        return {key: value for key, (named, value) in chosen.items() if named is None}

    @model_validator(mode="after")
    def _windows(self) -> FinetuneConfig:
        if self.data.overlap() >= self.data.seq_len:
            raise ValueError(f"data.predict_overlap ({self.data.overlap()}) must be below data.seq_len ({self.data.seq_len})")
        if self.data.spinup_days >= self.data.seq_len:
            raise ValueError(f"data.spinup_days ({self.data.spinup_days}) must be below data.seq_len ({self.data.seq_len})")
        if (self.data.valid_start is None) != (self.data.valid_end is None):
            raise ValueError("data.valid_start and data.valid_end go together")
        if self.train.patience is not None and not self.data.validates():
            raise ValueError("train.patience needs validation: set data.valid_start/valid_end or data.valid_fraction")
        return self


NOT_A_MAPPING = "a finetune config must be a mapping of sections (data, model, train)"


def config_from_dict(values: dict | None, source: str = "config") -> FinetuneConfig:
    return config_io.validate_config(FinetuneConfig, values, source)


def parse_config(text: bytes | str, source: str = "config") -> FinetuneConfig:
    """A YAML document (``source`` names it in errors), e.g. the ``config.yaml`` a fold folder keeps."""
    return config_io.parse_config(FinetuneConfig, text, source, NOT_A_MAPPING)


def load_config(path_or_url: str | Path) -> FinetuneConfig:
    """Read and validate a YAML config; every problem is one line naming the file and key.

    This is the config of a run about to start on this machine, so the model must also fit in its
    memory (``submit``'s checks use :func:`config_from_dict`, as the pod's machine is not this one).
    """
    config = config_io.read_config(FinetuneConfig, str(path_or_url), NOT_A_MAPPING)
    check_fits_this_machine(config, str(path_or_url))
    from .models.registry import model_availability  # imported here: the registry pulls in torch and every model

    problem = model_availability(config.model.name)
    if problem:
        raise StefaLandError(f"{path_or_url}: {problem}")
    return config


def check_fits_this_machine(config: FinetuneConfig, source: str) -> None:
    """Refuse, with the figure, a model whose parameters alone exceed this machine's memory."""
    what, count = config.model.parameter_estimate()
    problem = parameter_memory_problem(what, count)
    if problem:
        raise StefaLandError(f"{source}: {problem}")
