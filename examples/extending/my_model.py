"""Template: a new finetuning model for StefaLand (here a GRU baseline named ``my_gru``).

Copy this file, rename the class and ``NAME``, and change ``GRUBaseline.__init__``/``forward``.
Importing the module registers the model, after which ``model.name: my_gru`` is accepted by a
finetune config and trained by ``stefaland.finetune.finetune_fold`` exactly like the built-in
``lstm`` (LSTM-SL): same windows, loss, resume, predictions file and run record.

The contract a model must keep (``stefaland/finetune/models/base.py``):

* inputs are z-scored ``dynamic`` (batch, time, n_dynamic) and ``static`` (batch, n_static), with
  NaN for missing cells -- the model decides how to fill them (``lstm_inputs`` puts them at the
  mean, 0);
* the output is the z-scored target for the last ``time - warmup`` days, shape (batch, time - warmup);
* the *class* answers ``warmup_days(config)`` and ``network_width(config)`` before any model is
  built, because the trainer sizes its windows and the predictor shifts its outputs from them.

Docs: docs/EXTENDING.md ("Adding a model"). Test: tests/test_extending.py.
"""

from __future__ import annotations

import torch
from torch import nn

from stefaland.finetune.config import ModelSection
from stefaland.finetune.data import Variables
from stefaland.finetune.models import ModelSpec, register_model
from stefaland.finetune.models.base import FinetuneModel, lstm_inputs

#: The value of ``model.name`` in a finetune config. Lower case, no spaces: it is also the run
#: record's ``model`` and, unless ``model.label`` is set, the name in predictions files and reports.
NAME = "my_gru"


class GRUBaseline(FinetuneModel):
    """Linear(forcings + statics -> hidden) -> ReLU -> GRU -> Linear(hidden -> 1).

    The same shape as LSTM-SL with a GRU cell, so the two differ only in the recurrence: the
    smallest model that shows every part of the contract. ``warmup_days`` and ``network_width``
    are inherited (0 and 1: every input day has its output, the network emits the target itself);
    a model with a spin-up (as HBV) overrides both classmethods.
    """

    def __init__(self, n_dynamic: int, n_static: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.inp = nn.Linear(n_dynamic + n_static, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, 1)

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        """(B, T, n_dyn), (B, n_static) -> (B, T): one z-scored target value per input day."""
        x = torch.relu(self.inp(lstm_inputs(dynamic, static)))  # (B, T, hidden); NaN inputs at the mean
        h, _ = self.gru(x)  # (B, T, hidden)
        return self.out(self.drop(h)).squeeze(-1)  # (B, T)


def build(spec: ModelSpec, config: ModelSection, variables: Variables, seed: int) -> GRUBaseline:
    """The registry's one build signature. ``config`` is the validated ``model:`` section (reuse its
    fields -- ``hidden``, ``dropout`` -- rather than adding new ones: the section is strict, an unknown
    key is refused). ``seed`` is for non-torch models; torch weights are seeded by the caller, so a
    resumed run rebuilds identical initial weights."""
    return GRUBaseline(len(variables.dynamic), len(variables.static), config.hidden, config.dropout)


#: What a run reads about the model *before* building it: its kind, the class whose classmethods
#: answer warm-up and output width, and whether it loads a pretrained encoder (``True`` makes
#: ``model.pretrained`` required and turns on the pretraining-leakage check for it).
SPEC = ModelSpec("torch", build, "GRU baseline on forcings + statics (docs/EXTENDING.md example)",
                 GRUBaseline, pretrained_encoder=False)


def register() -> None:
    """Add ``NAME`` to the finetuning registry (``register_model`` refuses a different model that
    already has the name, so a plug-in cannot silently replace a built-in one). An installed package
    declares the entry point instead, and every ``stefaland`` command finds it:
    ``[project.entry-points."stefaland.models"] my_gru = "my_model:SPEC"``."""
    register_model(NAME, SPEC)


register()
