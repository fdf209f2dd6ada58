"""The one place that maps a model name in the run config to the code that builds it.

Each entry is data a run reads *before* building anything: the model's kind, its label in reports,
whether it loads a pretrained encoder (so the run knows to check the encoder for leakage), how many
input days it consumes before its first output, and how wide its network's output is. The last two
are asked of the model class itself (:class:`~.base.FinetuneModel`), because only HBV knows its
parameter layout. A built-in model is one entry of :data:`MODELS`; a plug-in calls
:func:`register_model` or declares a ``stefaland.models`` entry point.

The run configuration (:mod:`stefaland.finetune.config`) asks this module for the known names and
labels; the models import the configuration for annotations only, so the two form no import cycle.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from stefaland.errors import StefaLandError
from stefaland.model import StefaLandEncoder
from stefaland.plugins import load_entry_points_once
from stefaland.run.pretrained import check_variables, load_encoder, read_checkpoint

from . import foreign, sklearn_baselines
from .base import FinetuneModel
from .hbv_hybrid import HBVHybrid
from .lstm import LSTMSL, LSTMNetwork
from .sklearn_baselines import SklearnBaseline
from .stefaland import DirectModel, EncoderFeatures, NoResConnNetwork, ResConnNetwork, TransformerNetwork

if TYPE_CHECKING:  # annotations only: the run config imports this module (names, labels), not the reverse
    from ..config import ModelSection
    from ..data import Variables

log = logging.getLogger("stefaland.finetune")

# What model.label accepts (stefaland.finetune.config.ModelSection).
_LABEL = re.compile(r"[^\s,/]{1,64}")


#: ``(spec, config, variables, seed) -> model``; ``spec`` hands the factory its own capabilities.
Factory = Callable[["ModelSpec", "ModelSection", "Variables", int], "FinetuneModel | SklearnBaseline"]


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: how to build a model, and what a run must know about it beforehand.

    A run reads the spec before it builds anything: the config check, the window length, the
    leakage check and the labels of predictions files and reports all come from here.

    Parameters
    ----------
    kind : {"torch", "sklearn"}
        ``"torch"`` for a network trained on windows; ``"sklearn"`` for a regressor that sees one
        day at a time (the tabular path: no windows, no checkpoints).
    factory : Factory
        ``(spec, config, variables, seed) -> model``: builds the model for the validated ``model:``
        section. Torch weights are seeded by the caller; ``seed`` is for non-torch models.
    description : str
        One line, shown in the model card.
    head : type of FinetuneModel, optional
        The class the factory returns; its classmethods answer warm-up and output width for a
        config. ``None`` for the scikit-learn baselines, which see one day at a time.
    pretrained_encoder : bool, default False
        The factory loads ``model.pretrained``'s trained weights, so a run needs one and the
        pretraining-leakage check applies. The ablations borrow only the architecture and the
        transformer ignores it.
    label : str, optional
        The model's name in predictions files, report tables and the model card when the config
        sets no ``model.label`` (the paper's name for a built-in model, e.g. ``"LSTM-SL"``).
        ``None``: the name it is registered under (see :func:`model_label`).
    hidden_lstm : bool, default False
        The network has an LSTM ``model.hidden`` wide, which the config-time size check counts
        (``ModelSection.parameter_estimate``). A model that leaves it ``False`` is not estimated.
    """

    kind: Literal["torch", "sklearn"]
    factory: Factory
    description: str
    head: type[FinetuneModel] | None = None
    pretrained_encoder: bool = False
    label: str | None = None
    hidden_lstm: bool = False

    def __post_init__(self) -> None:
        """Refuse a label that ``model.label`` would refuse: it names files and report columns."""
        if self.label is not None and not _LABEL.fullmatch(self.label):
            raise ValueError(f"model label {self.label!r} must be 1 to 64 characters without spaces, commas or slashes "
                             "(the rule for model.label)")

    def build(self, config: ModelSection, variables: Variables, seed: int = 0) -> FinetuneModel | SklearnBaseline:
        """Build the model for ``config``.

        ``seed`` seeds the scikit-learn baselines; torch models are seeded by the caller's
        ``torch.manual_seed``, so a resumed run starts from identical weights.
        """
        return self.factory(self, config, variables, seed)

    def warmup(self, config: ModelSection) -> int:
        """Return the input days the model consumes before its first output (HBV's spin-up; 0 otherwise)."""
        return 0 if self.head is None else self.head.warmup_days(config)

    def output_width(self, config: ModelSection) -> int:
        """Return the values per day the model's network must emit (1, or HBV's raw parameters)."""
        return 1 if self.head is None else self.head.network_width(config)


def _features(spec: ModelSpec, config: ModelSection, variables: Variables) -> EncoderFeatures:
    """The encoder front: pretrained weights (StefaLand-*), or the same architecture at random (Ablation)."""
    pretrained = spec.pretrained_encoder
    n_dyn, n_sta = len(variables.dynamic), len(variables.static)
    if config.pretrained is None:
        if pretrained:
            raise StefaLandError(f"model {config.name!r} needs model.pretrained (a pretraining run folder or .pt file)")
        encoder = StefaLandEncoder(n_dyn, n_sta, config.encoder)
        return EncoderFeatures(encoder, config.adapter, config.freeze_encoder, range(n_dyn), range(n_sta))
    checkpoint = read_checkpoint(config.pretrained)
    dyn_idx, sta_idx = check_variables(checkpoint, variables.dynamic, variables.static)
    if pretrained:
        encoder, _ = load_encoder(checkpoint, len(dyn_idx), len(sta_idx), config.encoder)
    else:  # ablation: the pretrained architecture and variables, random weights
        encoder = StefaLandEncoder(len(dyn_idx), len(sta_idx), checkpoint.config or config.encoder)
    gains = {}
    for kind, index, mean, std in (("dynamic", dyn_idx, variables.dynamic_mean, variables.dynamic_std),
                                   ("static", sta_idx, variables.static_mean, variables.static_std)):
        pre_mean, pre_std = getattr(checkpoint, f"{kind}_mean"), getattr(checkpoint, f"{kind}_std")
        if pre_mean is not None and pre_std is not None and len(pre_mean) == len(index):
            pre_std = np.where(pre_std > 0, pre_std, 1.0)
            gains[f"{kind}_gain"] = std[index] / pre_std  # z_pre = z_ft · gain + shift
            gains[f"{kind}_shift"] = (mean[index] - pre_mean) / pre_std
    return EncoderFeatures(encoder, config.adapter, config.freeze_encoder, dyn_idx, sta_idx, **gains)


def _wrap(spec: ModelSpec, network: nn.Module, config: ModelSection, v: Variables) -> FinetuneModel:
    """A network emitting ``spec.output_width`` values a day, as the target (direct) or through HBV."""
    return HBVHybrid(network, config.hbv, v) if spec.head is HBVHybrid else DirectModel(network)


def _lstm(spec: ModelSpec, config: ModelSection, v: Variables, seed: int) -> FinetuneModel:
    return LSTMSL(len(v.dynamic), len(v.static), config.hidden, config.dropout)


def _lstm_hbv(spec: ModelSpec, config: ModelSection, v: Variables, seed: int) -> FinetuneModel:
    network = LSTMNetwork(len(v.dynamic), len(v.static), config.hidden, config.dropout, spec.output_width(config))
    return HBVHybrid(network, config.hbv, v)


def _resconn(spec: ModelSpec, config: ModelSection, v: Variables, seed: int) -> FinetuneModel:
    features = _features(spec, config, v)
    network = ResConnNetwork(features, len(v.dynamic), len(v.static), config.hidden, config.dropout,
                             spec.output_width(config))
    return _wrap(spec, network, config, v)


def _noresconn(spec: ModelSpec, config: ModelSection, v: Variables, seed: int) -> FinetuneModel:
    features = _features(spec, config, v)
    network = NoResConnNetwork(features, len(v.dynamic), len(v.static), config.hidden, config.dropout,
                               spec.output_width(config))
    return _wrap(spec, network, config, v)


def _transformer(spec: ModelSpec, config: ModelSection, v: Variables, seed: int) -> FinetuneModel:
    encoder = StefaLandEncoder(len(v.dynamic), len(v.static), config.encoder)
    return DirectModel(TransformerNetwork(encoder))


def _foreign_weights(config: ModelSection, encoder: nn.Module, keys: list[str]) -> None:
    """The published weights into ``encoder``, or random ones only when the config allows them."""
    if config.pretrained:
        foreign.load_published(encoder, keys, config.pretrained, config.name)
    elif not config.allow_random_init:
        raise StefaLandError(f"model {config.name!r} needs model.pretrained (a local path or s3:// URL to the published "
                             "weights); set model.allow_random_init: true to build it with random weights")
    else:
        log.warning("model %s: no model.pretrained, random initialisation (allow_random_init)", config.name)


def _terramind(spec: ModelSpec, config: ModelSection, v: Variables, seed: int) -> FinetuneModel:
    from .terramind import VARIANTS, TerraMindEncoder

    foreign.refuse_unavailable(config.name)
    variant = config.variant or "base"
    if variant not in VARIANTS:
        raise StefaLandError(f"model.variant {variant!r}: TerraMind comes in {', '.join(VARIANTS)}")
    columns, size = foreign.terramind_columns(v.static)
    encoder = TerraMindEncoder(variant, tuple(columns))
    _foreign_weights(config, encoder, encoder.published_keys())
    features = foreign.TerraMindFeatures(encoder, config.adapter, config.freeze_encoder, columns, size,
                                         np.asarray(v.static_mean), np.asarray(v.static_std))
    patch = {c for cols in columns.values() for c in cols}
    rest = [i for i in range(len(v.static)) if i not in patch]
    network = ResConnNetwork(features, len(v.dynamic), len(v.static), config.hidden, config.dropout,
                             spec.output_width(config), static_inputs=rest)
    return _wrap(spec, network, config, v)


def _prithviwxc(spec: ModelSpec, config: ModelSection, v: Variables, seed: int) -> FinetuneModel:
    foreign.refuse_unavailable(config.name)
    from .prithviwxc import NEEDS_DYNAMIC, NEEDS_STATIC, VARIANTS, PrithviWxCEncoder

    variant = config.variant or "2300m"
    if variant not in VARIANTS:
        raise StefaLandError(f"model.variant {variant!r}: Prithvi-WxC comes in {', '.join(VARIANTS)}")
    for name, names, what in [(n, v.dynamic, "dynamic") for n in NEEDS_DYNAMIC] + [(n, v.static, "static") for n in NEEDS_STATIC]:
        if name not in names:
            raise StefaLandError(f"model {config.name!r} needs the {what} variable {name!r} (catalog/global.yaml "
                                 f"names) to make Prithvi-WxC's surface state; the run's {what} inputs lack it")
    encoder = PrithviWxCEncoder(variant)
    _foreign_weights(config, encoder.wxc, list(encoder.wxc.state_dict()))
    dyn = [v.dynamic.index(n) for n in NEEDS_DYNAMIC]
    elevation = v.static.index(NEEDS_STATIC[0])
    features = foreign.PrithviWxCFeatures(
        encoder, config.adapter, config.freeze_encoder, dyn, elevation,
        (np.asarray(v.dynamic_mean)[dyn], float(v.static_mean[elevation])),
        (np.asarray(v.dynamic_std)[dyn], float(v.static_std[elevation])))
    network = ResConnNetwork(features, len(v.dynamic), len(v.static), config.hidden, config.dropout,
                             spec.output_width(config))
    return _wrap(spec, network, config, v)


def _linear(spec: ModelSpec, config: ModelSection, v: Variables, seed: int) -> SklearnBaseline:
    return sklearn_baselines.linear(config, seed)


def _random_forest(spec: ModelSpec, config: ModelSection, v: Variables, seed: int) -> SklearnBaseline:
    return sklearn_baselines.random_forest(config, seed)


MODELS: dict[str, ModelSpec] = {
    "lstm": ModelSpec("torch", _lstm, "LSTM-SL: supervised LSTM on forcings + statics", LSTMSL,
                      label="LSTM-SL", hidden_lstm=True),
    "linear": ModelSpec("sklearn", _linear, "linear regression (scikit-learn)", label="Linear"),
    "random_forest": ModelSpec("sklearn", _random_forest, "random forest (scikit-learn)", label="RandomForest"),
    "stefaland_resconn": ModelSpec("torch", _resconn, "StefaLand-resConn: frozen pretrained encoder, residual LSTM decoder",
                                   DirectModel, pretrained_encoder=True, label="StefaLand-resConn", hidden_lstm=True),
    "stefaland_noresconn": ModelSpec("torch", _noresconn, "StefaLand-noResConn: encoder features once, then the LSTM",
                                     DirectModel, pretrained_encoder=True, label="StefaLand-noResConn", hidden_lstm=True),
    "stefaland_transformer": ModelSpec("torch", _transformer, "StefaLand-Transformer: the encoder trained from scratch",
                                       DirectModel, label="StefaLand-Transformer"),
    "ablation_resconn": ModelSpec("torch", _resconn, "Ablation-resConn: resConn with a random encoder", DirectModel,
                                  label="Ablation-resConn", hidden_lstm=True),
    "lstm_hbv": ModelSpec("torch", _lstm_hbv, "LSTM-HBV1.1: LSTM parameterises HBV 1.1p", HBVHybrid,
                          label="LSTM-HBV1.1", hidden_lstm=True),
    "stefaland_resconn_hbv": ModelSpec("torch", _resconn, "StefaLand-resConn-HBV1.1", HBVHybrid, pretrained_encoder=True,
                                       label="StefaLand-resConn-HBV1.1", hidden_lstm=True),
    "stefaland_noresconn_hbv": ModelSpec("torch", _noresconn, "StefaLand-noResConn-HBV1.1", HBVHybrid,
                                         pretrained_encoder=True, label="StefaLand-noResConn-HBV1.1", hidden_lstm=True),
    "ablation_resconn_hbv": ModelSpec("torch", _resconn, "Ablation-resConn-HBV1.1", HBVHybrid,
                                      label="Ablation-resConn-HBV1.1", hidden_lstm=True),
    "terramind_resconn": ModelSpec("torch", _terramind, "TerraMind-resConn: TerraMind v1 (DEM, LULC, NDVI patches) "
                                   "encodes each site, resConn LSTM decoder", DirectModel, label="TerraMind-resConn",
                                   hidden_lstm=True),
    "prithviwxc_resconn": ModelSpec("torch", _prithviwxc, "PrithviWxC-resConn: Prithvi-WxC encodes each day's "
                                    "surface state, resConn LSTM decoder", DirectModel, label="PrithviWxC-resConn",
                                    hidden_lstm=True),
}


#: Installed packages add models under this entry-point group (``name = "module:SPEC"``), so the
#: ``stefaland`` command and Kubernetes pods see a plug-in without a wrapper script.
ENTRY_POINT_GROUP = "stefaland.models"


def register_model(name: str, spec: ModelSpec) -> None:
    """Add a model to the registry under ``name`` (the value of ``model.name``).

    A different model already under ``name`` is refused (ValueError), so a plug-in can never
    silently replace a built-in one; registering the same spec twice is fine. Reports label the
    model with ``spec.label``, or ``name`` when the spec has none (:func:`model_label`).
    """
    existing = MODELS.get(name)
    if existing is not None and existing is not spec:
        raise ValueError(f"model name {name!r} is already registered ({existing.description})")
    MODELS[name] = spec


def known_models() -> dict[str, ModelSpec]:
    """Return the registry, with the models of installed plug-ins (loaded once, on first use)."""
    load_entry_points_once(ENTRY_POINT_GROUP, ModelSpec, register_model, "model", log)
    return MODELS


def model_spec(name: str) -> ModelSpec:
    """Return the spec registered under ``name``; an unknown name is a one-line StefaLandError."""
    models = known_models()
    if name not in models:
        raise StefaLandError(f"unknown model {name!r}; known: {', '.join(models)}")
    return models[name]


def model_availability(name: str) -> str | None:
    """Why model ``name`` cannot be built in this installation (one line naming what to install), or None.

    Only the foreign encoders depend on optional packages (``stefaland[eo]``); an unknown name is
    reported as unknown.
    """
    if name not in known_models():
        return f"unknown model {name!r}"
    return foreign.availability(name)


def model_label(name: str) -> str:
    """Return the model's name in reports when the config sets no ``model.label``.

    That is its spec's ``label`` (the paper's name for a built-in model), else ``name`` itself (a
    plug-in without a label, or a name the registry does not know).
    """
    spec = known_models().get(name)
    return spec.label if spec is not None and spec.label else name


def build_torch_model(config: ModelSection, variables: Variables) -> nn.Module:
    """Build the torch model ``config`` names and log how many of its parameters train.

    Parameters
    ----------
    config : ModelSection
        The run config's validated ``model:`` section.
    variables : Variables
        The run's inputs and target with their scaling.

    Returns
    -------
    torch.nn.Module
        The model, with the weights its factory gave it (random, or a loaded pretrained encoder).

    Raises
    ------
    StefaLandError
        The model is a scikit-learn baseline, or its factory built something other than a torch module.
    """
    spec = model_spec(config.name)
    if spec.kind != "torch":
        raise StefaLandError(f"model {config.name!r} is a scikit-learn baseline, not a torch model")
    model = spec.build(config, variables)
    if not isinstance(model, nn.Module):
        raise StefaLandError(f"model {config.name!r} is registered as a torch model, but its factory built a "
                             f"{type(model).__name__}")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("model %s: %d trainable of %d parameters", config.name, trainable, total)
    return model


def check_window(model: nn.Module, length: int) -> None:
    """An encoder has learned positions for ``max_len`` days only; say so before training starts."""
    for module in model.modules():
        if isinstance(module, StefaLandEncoder) and length > module.config.max_len:
            raise StefaLandError(
                f"data.seq_len plus the warm-up is {length} days but the StefaLand encoder has positions for "
                f"{module.config.max_len} (model.encoder.max_len / the pretrained config); shorten data.seq_len"
            )


def trainable_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    """The parameters of ``model`` that training updates (``requires_grad``): a frozen encoder's are not."""
    return [p for p in model.parameters() if p.requires_grad]
