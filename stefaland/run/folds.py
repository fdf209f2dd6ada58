"""Fold ids as a store holds them: the ``fold_<split>`` coordinates, and fold ids per store site.

A holdout scheme (:mod:`stefaland.splits.plan`) reads a store's assignment through these: an array
of fold ids in store order, with -1 for a site the split does not hold out. Pretraining reads
them to leave a fold out; finetuning, ``submit`` and the CLI through the scheme.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

NOT_IN_SPLIT = -1


def store_sites(dataset: xr.Dataset) -> list[str]:
    return [str(site) for site in np.asarray(dataset["site"].values).astype(str)]


def folds_of_sites(sites: list[str], folds: Mapping[str, int]) -> np.ndarray:
    """Fold id of each of ``sites`` in ``folds`` (site -> fold), :data:`NOT_IN_SPLIT` for the others."""
    return np.asarray([int(folds.get(site, NOT_IN_SPLIT)) for site in sites], dtype=np.int64)


def coordinate_folds(dataset: xr.Dataset, split: str) -> np.ndarray | None:
    """The store's ``fold_<split>`` coordinate (None when it has none)."""
    name = f"fold_{split}"
    if name not in dataset.coords and name not in dataset:
        return None
    return np.asarray(dataset[name].values, dtype=np.int64)


def known_splits(dataset: xr.Dataset) -> list[str]:
    return sorted(str(c)[len("fold_"):] for c in dataset.coords if str(c).startswith("fold_"))


def fold_ids(folds: np.ndarray) -> list[int]:
    """The split's folds: every id but :data:`NOT_IN_SPLIT`, sorted."""
    return sorted(int(f) for f in np.unique(folds) if f >= 0)
