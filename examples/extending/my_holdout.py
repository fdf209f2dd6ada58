"""Template: a new holdout scheme for StefaLand (here ``latitude``: a task's southern and northern halves).

Copy this file, rename ``NAME``, and change the rule (``by_latitude``) and the scheme's title and
folds. Importing the module registers the scheme, after which every command knows it:

* ``stefaland splits make --task camels --scheme latitude --sites SITES --out latitude.csv`` runs
  the rule and writes a split file;
* ``stefaland finetune --split latitude --split-file latitude.csv --fold 1,2`` trains one model per
  fold (a store built with a ``fold_latitude`` site column needs no ``--split-file``);
* ``stefaland report camels --split latitude`` scores the folds under the title below, and refuses
  a missing fold, a fold the scheme does not have or a site held out twice.

Docs: docs/EXTENDING.md ("Adding a holdout scheme"). Test: tests/test_extending.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stefaland.errors import StefaLandError
from stefaland.splits import Assignment, Holdout, register_holdout

#: The task whose report table gains the scheme, and the scheme's name: ``--split``, the store's
#: ``fold_<name>`` coordinate, the split file's ``scheme`` and the predictions files' ``split``.
TASK = "camels"
NAME = "latitude"
#: The folds the report expects (1-based, as MHPI number theirs) and what the split file calls them.
FOLD_NAMES = {1: "south", 2: "north"}


def by_latitude(table: pd.DataFrame, seed: int, folds: int | None) -> Assignment:
    """The rule ``splits make`` runs: fold 1 holds the sites south of the median latitude, fold 2 the others.

    ``table`` is the site table, indexed by site id, with ``lat``/``lon`` where the sources had them.
    The rule is deterministic, so the seed plays no part (``seeded=False`` keeps it out of the
    split file's header). Refuse what the rule cannot do in one line, as every StefaLand error is.
    """
    if folds not in (None, len(FOLD_NAMES)):
        raise StefaLandError(f"the {NAME} scheme has {len(FOLD_NAMES)} folds, not {folds}")
    if "lat" not in table or table["lat"].isna().any():
        raise StefaLandError(f"the {NAME} scheme needs a latitude for every site")
    north = table["lat"].to_numpy() >= table["lat"].median()
    fold = pd.Series(np.where(north, 2, 1), index=table.index, dtype="int16")
    return Assignment(fold, dict(FOLD_NAMES), note="halves at the median latitude", seeded=False)


#: The registry entry: task, name, the report's column-group title, the folds, and the rule.
HOLDOUT = Holdout(TASK, NAME, title="Latitude holdout (southern and northern halves)",
                  fold_ids=tuple(FOLD_NAMES), rule=by_latitude)


def register() -> Holdout:
    """Add the scheme to the registry (a different scheme already under ``(TASK, NAME)`` is refused).
    An installed package declares the entry point instead, and every ``stefaland`` command finds it:
    ``[project.entry-points."stefaland.holdouts"] latitude = "my_holdout:HOLDOUT"``."""
    return register_holdout(HOLDOUT)


register()
