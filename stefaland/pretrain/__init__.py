"""Masked (CVGM) pretraining of the StefaLand encoder on a store, one shard at a time."""

from .config import PretrainConfig, load_config, parse_config
from .trainer import PretrainResult, evaluate, pretrain

__all__ = ["PretrainConfig", "PretrainResult", "evaluate", "load_config", "parse_config", "pretrain"]
