"""Holdout splits: the schemes (one registry), their folds as plans, and split files.

* :mod:`.plan` — :class:`Holdout` and :class:`Fold`: a scheme applied to a store gives, fold by
  fold, the sites and periods to train and test on, the fold's label and its folder;
  :func:`parse_fold_spec` reads every command's ``--fold``/``--folds``;
* :mod:`.registry` — every scheme of every task (``splits make``, finetuning and the report read it);
* :mod:`.schemes` — the rules that assign sites to folds; :mod:`.continents` — continents from coordinates;
* :mod:`.splitfile` — the split file (``site,fold`` under a JSON header); :mod:`.sites` — site tables.

``make_split`` is what ``stefaland splits make`` calls.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from stefaland import fileio
from stefaland.errors import StefaLandError

from .continents import CONTINENTS, continent_of
from .plan import ALL, TEMPORAL, Fold, Holdout, TemporalHoldout, parse_fold_spec
from .registry import assign, get_holdout, holdout_for, holdouts_of, known_holdouts, register_holdout, splittable
from .schemes import NOT_HELD_OUT, PUR_REGIONS, Assignment, mhpi_folds, random_folds
from .sites import load_site_tables, read_site_list, restrict
from .splitfile import Split, apply_split, check_split_out, holdout, read_split, validate_split, write_split

log = logging.getLogger("stefaland.splits")

DEFAULT_SEED = 111111  # the paper's seed (Table C2)
CAMELS_SUBSET = "531_basin_list.txt"


def _camels_subset(sites: Sequence[str]) -> str | None:
    """The 531-basin list beside (or one folder above) the first site table, if there is one."""
    first = str(sites[0]).rstrip("/")
    folder = first if fileio.exists(fileio.join(first, "camels_name.txt")) else first.rsplit("/", 1)[0]
    parent = folder.rsplit("/", 1)[0]
    for candidate in (fileio.join(folder, CAMELS_SUBSET), fileio.join(parent, CAMELS_SUBSET)):
        if fileio.exists(candidate):
            return candidate
    return None


def make_split(
    task: str,
    scheme: str,
    sites: Sequence[str],
    seed: int = DEFAULT_SEED,
    folds: int | None = None,
    basins: str | None = None,
    from_mhpi: str | None = None,
    id_column: str | None = None,
) -> Split:
    """Build a split for the sites in ``sites`` (tables and/or stores).

    ``basins``: a site-list file to restrict to, or ``"all"``. For CAMELS the default is the
    531-basin subset, found as ``531_basin_list.txt`` beside the site table or one folder up.
    ``from_mhpi``: import folds from MHPI's ``PUBsplitLst.txt`` instead of drawing them.
    """
    if not sites:
        raise StefaLandError("no site table or store given")
    table = load_site_tables(sites, id_column)
    source = ", ".join(map(str, sites))
    if basins is None and task == "camels":
        basins = _camels_subset(sites)
        if basins is None:
            raise StefaLandError(f"CAMELS splits use the 531-basin subset but no {CAMELS_SUBSET} "
                                 "was found beside the site table: pass --basins FILE (or all)")
        log.info("restricting to the CAMELS subset in %s", basins)
    if basins and basins != "all":
        table, missing = restrict(table, read_site_list(basins), basins)
        if missing:
            log.warning("%s: %d of the %d listed sites are in %s, %d are not (first: %s); the split covers the %d",
                        basins, len(table), len(table) + len(missing), source, len(missing), missing[0], len(table))
        source += f" restricted to {basins}"
        if missing:
            source += f" ({len(table)} of {len(table) + len(missing)} listed sites)"
    if from_mhpi:
        if task != "camels" or scheme != "pub":
            raise StefaLandError("--from-mhpi imports CAMELS PUB folds: use --task camels --scheme pub")
        assignment = mhpi_folds(fileio.read_bytes(from_mhpi).decode(), table.index, from_mhpi)
    else:
        assignment = assign(table, task, scheme, seed, folds)
    seed_used = seed if assignment.seeded else None
    split = Split(folds=assignment.folds.rename_axis("site"), task=task, scheme=scheme,
                  seed=seed_used, fold_names=assignment.fold_names, note=assignment.note,
                  sites_source=source)
    validate_split(split.folds, table.index, source="new split")
    return split


__all__ = [
    "ALL", "CONTINENTS", "DEFAULT_SEED", "NOT_HELD_OUT", "PUR_REGIONS", "TEMPORAL", "Assignment", "Fold", "Holdout",
    "Split", "TemporalHoldout", "apply_split", "assign", "check_split_out", "continent_of", "get_holdout", "holdout",
    "holdout_for", "holdouts_of", "known_holdouts", "load_site_tables", "make_split", "mhpi_folds", "parse_fold_spec",
    "random_folds", "read_split", "register_holdout", "splittable", "validate_split", "write_split",
]
