"""Holdout schemes: rules that give every site exactly one fold id.

A scheme is a function of the site table (and a seed) only, so a split is reproducible from its
file header alone. Fold ``-1`` means "never held out" (the site is always in training), as in the
store's ``fold_<scheme>`` coordinates (docs/DESIGN.md). :mod:`stefaland.splits.registry` pairs each
rule with its task, title and folds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stefaland.errors import StefaLandError

from .continents import continent_of

NOT_HELD_OUT = -1
FIRST_FOLD = 1  # fold ids are 1-based, as MHPI publish them (PUB_ID 1..10, PUR regions 1..7)

#: CAMELS PUR: 7 regions made of HUC-02 units, as MHPI publish them; on the 531 CAMELS basins
#: they give the paper's fold sizes 92 95 93 51 68 60 72 (README, "Holdouts").
PUR_REGIONS: tuple[tuple[int, ...], ...] = (
    (1, 2), (3, 6), (4, 5, 7), (9, 10), (8, 11, 12, 13), (14, 15, 16, 18), (17,),
)


@dataclass(frozen=True)
class Assignment:
    """Fold id per site (index = site id, in table order) and a name per fold id."""

    folds: pd.Series
    fold_names: dict[int, str]
    note: str = ""
    seeded: bool = True  # False when the rule is deterministic (PUR regions, continents)


def random_folds(sites: pd.Index, n_folds: int, seed: int) -> pd.Series:
    """Balanced random folds (sizes differ by at most one).

    Sites are sorted before shuffling so the result depends on the set of ids and the seed, not
    on the order of the input table.
    """
    if n_folds < 2:
        raise StefaLandError(f"a random split needs at least 2 folds, got {n_folds}")
    if len(sites) < n_folds:
        raise StefaLandError(f"{len(sites)} sites cannot fill {n_folds} folds")
    ordered = np.sort(np.asarray(sites, dtype=str))
    shuffled = np.random.default_rng(seed).permutation(ordered)
    folds = pd.Series(FIRST_FOLD + np.arange(len(shuffled)) % n_folds, index=shuffled, dtype="int16")
    return folds.reindex(sites)


def random_scheme(n_folds: int, label: str) -> Callable[[pd.DataFrame, int, int | None], Assignment]:
    """Balanced random folds, ``n_folds`` unless ``splits make --folds`` says otherwise, named ``<label><k>``."""
    def scheme(table: pd.DataFrame, seed: int, folds: int | None) -> Assignment:
        k = folds or n_folds
        return Assignment(random_folds(table.index, k, seed), {i: f"{label}{i}" for i in range(FIRST_FOLD, FIRST_FOLD + k)})
    return scheme


PUB_FOLDS = 10


def camels_pub(table: pd.DataFrame, seed: int, folds: int | None) -> Assignment:
    """PUB: random basin groups (10 by default).

    The paper's own groups (MHPI's ``huc,gage,LAT,LONG,PUB_ID`` CSV, sizes 54 48 45 46 57 60 44
    60 61 56 on the 531 basins) are not public, so these are new seeded groups of equal size;
    ``--from-mhpi PUBsplitLst.txt`` imports the public MHPI split of Feng et al. (2022) instead.
    """
    k = folds or PUB_FOLDS
    return Assignment(
        random_folds(table.index, k, seed),
        {i: f"pub_group_{i}" for i in range(FIRST_FOLD, FIRST_FOLD + k)},
        note="random basin groups; the paper's exact PUB groups are not public "
             "(use --from-mhpi to import the MHPI 10-fold split of Feng et al. 2022)",
    )


def camels_pur(table: pd.DataFrame, seed: int, folds: int | None) -> Assignment:
    """PUR: the 7 HUC-02 region groups; the seed plays no part."""
    if folds not in (None, len(PUR_REGIONS)):
        raise StefaLandError(f"the CAMELS PUR scheme has {len(PUR_REGIONS)} folds, not {folds}")
    huc = _huc02(table)
    region_of = {h: i for i, group in enumerate(PUR_REGIONS, start=FIRST_FOLD) for h in group}
    folds_ = huc.map(region_of)
    unknown = folds_.isna()
    if unknown.any():
        site = folds_.index[unknown][0]
        raise StefaLandError(f"site {site}: HUC-02 {huc[site]!r} is in no CAMELS PUR region")
    names = {i: "huc02_" + "_".join(f"{h:02d}" for h in group) for i, group in enumerate(PUR_REGIONS, start=FIRST_FOLD)}
    return Assignment(folds_.astype("int16"), names, seeded=False)


def _huc02(table: pd.DataFrame) -> pd.Series:
    """HUC-02 as integers, from a ``huc_02`` column or else ``region``."""
    column = "huc_02" if "huc_02" in table else "region" if "region" in table else None
    if column is None:
        raise StefaLandError(
            "the CAMELS PUR scheme needs a huc_02 (or region) column in the site table, e.g. "
            "from camels_name.txt"
        )
    values = pd.to_numeric(table[column], errors="coerce")
    if values.isna().any():
        site = values.index[values.isna()][0]
        raise StefaLandError(f"site {site}: {column} {table[column][site]!r} is not a HUC-02 number")
    return values.astype(int)


def continent_scheme(continents: tuple[str, ...]) -> Callable[[pd.DataFrame, int, int | None], Assignment]:
    """One fold per continent of ``continents`` (from the coordinates); sites elsewhere are never held out."""
    def scheme(table: pd.DataFrame, seed: int, folds: int | None) -> Assignment:
        if folds not in (None, len(continents)):
            raise StefaLandError(f"this scheme has {len(continents)} folds, not {folds}")
        _require_coordinates(table)
        where = pd.Series(continent_of(table["lat"].to_numpy(), table["lon"].to_numpy()),
                          index=table.index)
        ids = {name: i for i, name in enumerate(continents, start=FIRST_FOLD)}
        fold = where.map(ids).fillna(NOT_HELD_OUT).astype("int16")
        return Assignment(
            fold, dict(enumerate(continents, start=FIRST_FOLD)),
            note="continent from coordinates (stefaland.splits.continents polygons); "
                 "fold -1 = elsewhere, never held out",
            seeded=False,
        )
    return scheme


def _require_coordinates(table: pd.DataFrame) -> None:
    for column in ("lat", "lon"):
        if column not in table:
            raise StefaLandError(f"this scheme needs site coordinates: no {column} column")
        missing = table[column].isna()
        if missing.any():
            raise StefaLandError(f"site {table.index[missing][0]}: no {column}")


def _pub_csv_folds(text: str, source: str) -> dict[int, int]:
    """MHPI's published fold table ``huc,gage,LAT,LONG,PUB_ID`` → {gauge: PUB_ID}."""
    import io

    table = pd.read_csv(io.StringIO(text), dtype=str)
    table.columns = [c.strip() for c in table.columns]
    if not {"gage", "PUB_ID"} <= set(table.columns):
        raise StefaLandError(f"{source}: a PUB fold table needs columns gage and PUB_ID (has {', '.join(table.columns)})")
    ids = pd.to_numeric(table["gage"], errors="coerce")
    folds = pd.to_numeric(table["PUB_ID"], errors="coerce")
    bad = ids.isna() | folds.isna()
    if bad.any():
        raise StefaLandError(f"{source} line {int(np.flatnonzero(bad.to_numpy())[0]) + 2}: gage or PUB_ID is not a number")
    return dict(zip(ids.astype(int), folds.astype(int)))


def mhpi_folds(text: str, sites: pd.Index, source: str) -> Assignment:
    """Folds published by MHPI, in either of their formats: ``PUBsplitLst.txt`` (a JSON list of
    lists of integer gauge ids, folds numbered by position) or the ``huc,gage,LAT,LONG,PUB_ID`` CSV.

    The ids lost their leading zeros, so they are matched as integers; ids not among ``sites``
    (the lists cover all 671 basins) are skipped, and a site in no list is an error.
    """
    if not text.lstrip().startswith("["):
        fold_of = _pub_csv_folds(text, source)
        groups = sorted(set(fold_of.values()))
    else:
        try:
            parsed = json.loads(text)
            if not isinstance(parsed, list) or not all(isinstance(g, list) for g in parsed):
                raise ValueError("not a list of lists")
            fold_of = {int(gauge): i for i, group in enumerate(parsed, start=FIRST_FOLD) for gauge in group}
            groups = list(range(FIRST_FOLD, FIRST_FOLD + len(parsed)))
        except (ValueError, TypeError) as exc:
            raise StefaLandError(f"{source}: not an MHPI split (JSON list of lists of ids): {exc}") from exc
    numeric = pd.Series(pd.to_numeric(pd.Series(sites, dtype=str), errors="coerce").to_numpy(),
                        index=sites)
    folds = numeric.map(fold_of)
    if folds.isna().any():
        site = folds.index[folds.isna()][0]
        raise StefaLandError(f"site {site} is in none of the folds of {source}")
    return Assignment(
        folds.astype("int16"), {i: f"mhpi_pub_{i}" for i in groups},
        note=f"imported from MHPI split {source} (Feng et al. 2022 PUB folds)",
        seeded=False,
    )
