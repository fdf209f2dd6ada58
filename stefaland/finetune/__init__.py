"""Finetuning: train task models (LSTM, StefaLand heads, HBV hybrids, baselines) per held-out fold.

``finetune(store, config, out, split, fold)`` is the whole pipeline the CLI calls; the pieces
(config, data, models, trainer, inference) are usable on their own.
"""

from .config import FinetuneConfig, config_from_dict, load_config
from .run import FoldResult, finetune, finetune_fold

__all__ = ["FinetuneConfig", "FoldResult", "config_from_dict", "finetune", "finetune_fold",
           "load_config"]
