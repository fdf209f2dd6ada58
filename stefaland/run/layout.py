"""A run folder's layout: the names of its fold folders and of the predictions they leave.

A finetuning run folder holds one folder per fold it trained: ``fold-<k>/`` for fold ``k`` of a
spatial holdout, ``temporal/`` for the temporal holdout's one fold; a single fold's folder may
also be the run itself. Each fold folder ends with ``predictions.nc``; ``stefaland predict``
writes ``predict/predictions.nc`` beside them. Pretraining per fold (``--split``/``--fold``)
uses the same ``fold-<k>/`` names. Finetuning, pretraining, ``predict``, ``pull`` and the model
card all find these folders here, so a name changes in one place.
"""

from __future__ import annotations

import re

from .. import fileio
from ..errors import StefaLandError

PREDICTIONS_FILE = "predictions.nc"
FOLD_PREFIX = "fold-"
FOLD_PATTERN = re.compile(rf"^{FOLD_PREFIX}(\d+)$")
TEMPORAL_FOLDER = "temporal"
PREDICT_FOLDER = "predict"
#: The file that makes a folder a fold of a run (each fold keeps the config it was trained with).
FOLD_MARKER = "config.yaml"
SINGLE_MEMBER = "model"


def fold_folder(fold: int) -> str:
    """The folder name of fold ``fold`` of a spatial holdout: ``fold-<k>``."""
    return f"{FOLD_PREFIX}{fold}"


def fold_dir(out: str, fold: int) -> str:
    """``<out>/fold-<k>``: where fold ``fold`` of a run in ``out`` trains."""
    return fileio.join(out, fold_folder(fold))


def predictions_url(directory: str) -> str:
    """The predictions a fold folder leaves, written last."""
    return fileio.join(directory, PREDICTIONS_FILE)


def predict_url(run: str) -> str:
    """Where ``stefaland predict`` writes by default: ``<run>/predict/predictions.nc``."""
    return fileio.join(str(run).rstrip("/"), PREDICT_FOLDER, PREDICTIONS_FILE)


def fold_directories(run: str) -> list[tuple[str, str]]:
    """``[(member name, folder)]``: the fold folders of the run folder ``run``.

    Its ``fold-<k>/`` folders in fold order, its ``temporal/`` folder, or the run itself when it is
    one fold.
    The member names (``fold<k>``, ``temporal``, ``model``) name each fold's predictions in a
    ``stefaland predict`` ensemble.
    """
    run = str(run).rstrip("/")
    if fileio.exists(fileio.join(run, FOLD_MARKER)):
        return [(SINGLE_MEMBER, run)]
    if not fileio.exists(run):
        raise StefaLandError(f"{run}: run folder not found")
    temporal = fileio.join(run, TEMPORAL_FOLDER)
    if fileio.exists(fileio.join(temporal, FOLD_MARKER)):
        return [(TEMPORAL_FOLDER, temporal)]
    found = sorted(_numbered_folds(run))
    if not found:
        raise StefaLandError(f"{run}: not a finetune run folder (no {FOLD_MARKER} and no "
                             f"{FOLD_PREFIX}<k>/{FOLD_MARKER})")
    return [(f"fold{k}", directory) for k, directory in found]


def _numbered_folds(run: str) -> list[tuple[int, str]]:
    """``(k, folder)`` for every ``fold-<k>/`` of ``run`` that holds a fold's config."""
    fs, path = fileio.filesystem(run)
    found = []
    for entry in fs.ls(path, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        match = FOLD_PATTERN.match(name)
        if match and fileio.exists(fileio.join(run, name, FOLD_MARKER)):
            found.append((int(match.group(1)), fileio.join(run, name)))
    return found
