"""The one place that maps a model name in the run config to the code that builds it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from stefaland.errors import StefaLandError
from stefaland.model import StefaLandEncoder

from ..config import ModelSection
from ..data import Variables
from ..pretrained import check_variables, load_encoder, read_checkpoint
from . import sklearn_baselines
from .base import FinetuneModel
from .hbv import HBVHybrid
from .lstm import LSTMNetwork, LSTMSL
from .stefaland import DirectModel, EncoderFeatures, NoResConnNetwork, ResConnNetwork, TransformerNetwork

log = logging.getLogger("stefaland.finetune")


@dataclass(frozen=True)
class ModelSpec:
    kind: Literal["torch", "sklearn"]
    build: Callable  # torch: (config, variables) -> FinetuneModel; sklearn: (config, seed) -> SklearnBaseline
    description: str


def _features(config: ModelSection, variables: Variables, pretrained: bool) -> EncoderFeatures:
    """The encoder front: pretrained weights (StefaLand-*), or the same architecture at random (Ablation)."""
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


def _n_hbv(config: ModelSection) -> int:
    from stefaland.hbv import n_outputs

    return n_outputs(config.hbv.nmul)


def _lstm(config: ModelSection, v: Variables) -> FinetuneModel:
    return LSTMSL(len(v.dynamic), len(v.static), config.hidden, config.dropout)


def _resconn(pretrained: bool) -> Callable[[ModelSection, Variables], FinetuneModel]:
    def build(config: ModelSection, v: Variables) -> FinetuneModel:
        features = _features(config, v, pretrained)
        return DirectModel(ResConnNetwork(features, len(v.dynamic), len(v.static), config.hidden, config.dropout))
    return build


def _noresconn(config: ModelSection, v: Variables) -> FinetuneModel:
    features = _features(config, v, True)
    return DirectModel(NoResConnNetwork(features, len(v.dynamic), len(v.static), config.hidden, config.dropout))


def _transformer(config: ModelSection, v: Variables) -> FinetuneModel:
    encoder = StefaLandEncoder(len(v.dynamic), len(v.static), config.encoder)
    return DirectModel(TransformerNetwork(encoder))


def _lstm_hbv(config: ModelSection, v: Variables) -> FinetuneModel:
    network = LSTMNetwork(len(v.dynamic), len(v.static), config.hidden, config.dropout, _n_hbv(config))
    return HBVHybrid(network, config.hbv, v)


def _resconn_hbv(pretrained: bool) -> Callable[[ModelSection, Variables], FinetuneModel]:
    def build(config: ModelSection, v: Variables) -> FinetuneModel:
        features = _features(config, v, pretrained)
        network = ResConnNetwork(features, len(v.dynamic), len(v.static), config.hidden, config.dropout, _n_hbv(config))
        return HBVHybrid(network, config.hbv, v)
    return build


def _noresconn_hbv(config: ModelSection, v: Variables) -> FinetuneModel:
    features = _features(config, v, True)
    network = NoResConnNetwork(features, len(v.dynamic), len(v.static), config.hidden, config.dropout, _n_hbv(config))
    return HBVHybrid(network, config.hbv, v)


MODELS: dict[str, ModelSpec] = {
    "lstm": ModelSpec("torch", _lstm, "LSTM-SL: supervised LSTM on forcings + statics"),
    "linear": ModelSpec("sklearn", sklearn_baselines.linear, "linear regression (scikit-learn)"),
    "random_forest": ModelSpec("sklearn", sklearn_baselines.random_forest, "random forest (scikit-learn)"),
    "stefaland_resconn": ModelSpec("torch", _resconn(True), "StefaLand-resConn: frozen pretrained encoder, residual LSTM decoder"),
    "stefaland_noresconn": ModelSpec("torch", _noresconn, "StefaLand-noResConn: encoder features once, then the LSTM"),
    "stefaland_transformer": ModelSpec("torch", _transformer, "StefaLand-Transformer: the encoder trained from scratch"),
    "ablation_resconn": ModelSpec("torch", _resconn(False), "Ablation-resConn: resConn with a random encoder"),
    "lstm_hbv": ModelSpec("torch", _lstm_hbv, "LSTM-HBV1.1: LSTM parameterises HBV 1.1p"),
    "stefaland_resconn_hbv": ModelSpec("torch", _resconn_hbv(True), "StefaLand-resConn-HBV1.1"),
    "stefaland_noresconn_hbv": ModelSpec("torch", _noresconn_hbv, "StefaLand-noResConn-HBV1.1"),
    "ablation_resconn_hbv": ModelSpec("torch", _resconn_hbv(False), "Ablation-resConn-HBV1.1"),
}


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise StefaLandError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name]


def build_torch_model(config: ModelSection, variables: Variables) -> nn.Module:
    spec = model_spec(config.name)
    if spec.kind != "torch":
        raise StefaLandError(f"model {config.name!r} is a scikit-learn baseline, not a torch model")
    model = spec.build(config, variables)
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
    return [p for p in model.parameters() if p.requires_grad]
