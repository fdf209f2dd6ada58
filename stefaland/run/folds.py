"""Which fold of a holdout split each store site is in: from the store's ``fold_<split>`` coordinate
or from a split file (``stefaland splits make``).

Finetuning holds a fold out, pretraining excludes it (the paper's leak-free PUB/PUR setup), and
``submit`` and the CLI list a split's folds: all read the same assignment, an array of fold ids in
store order with -1 for a site the split does not hold out.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from .. import fileio
from ..errors import StefaLandError

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


def fold_assignment(dataset: xr.Dataset, split: str, split_file: str | None = None) -> np.ndarray:
    """Fold id per store site (-1 = not in the scheme), from ``fold_<split>`` or a split file.

    A split file must match the store's sites (it may leave some out: a 671-basin store with a
    531-basin split) and be of ``split``'s scheme (any scheme for ``temporal``).
    """
    if split_file is not None:
        if not fileio.exists(split_file):
            raise StefaLandError(f"{split_file}: split file not found")
        from ..splits import apply_split

        sites = store_sites(dataset)
        groups = apply_split(sites, split_file, subset=True, scheme=None if split == "temporal" else split)
        return folds_of_sites(sites, {site: fold for fold, members in groups.items() for site in members})
    folds = coordinate_folds(dataset, split)
    if folds is None:
        raise StefaLandError(
            f"store has no coordinate {f'fold_{split}'!r} for split {split!r} (known splits: "
            f"{', '.join(known_splits(dataset)) or 'none'}); pass --split-file"
        )
    return folds


def fold_ids(folds: np.ndarray) -> list[int]:
    """The split's folds: every id but :data:`NOT_IN_SPLIT`, sorted."""
    return sorted(int(f) for f in np.unique(folds) if f >= 0)
