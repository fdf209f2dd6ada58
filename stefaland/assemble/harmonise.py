"""Turn one source's raw variables into store variables: canonical units, checked, float32.

This is where a wrong unit gets caught. The declared unit must be known, must agree with the unit
the data carry (when they carry one), and the converted values must be physically plausible.
"""

from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from ..catalog import SourceSpec, VariableSpec
from ..errors import StefaLandError
from ..units import CANONICAL, UNITS, check_plausible, discharge_to_depth, lookup, to_canonical
from .physical import check_area, check_storable, clean

log = logging.getLogger("stefaland.assemble")


def store_unit(variable: VariableSpec, source: str) -> str:
    """The unit a variable has in the store (discharge per area becomes a depth per day)."""
    where = f"source {source} variable {variable.name}"
    if variable.per_area:
        if lookup(variable.units, where).quantity != "discharge":
            raise StefaLandError(f"{where}: per_area needs a discharge unit (m3/s, ft3/s), not {variable.units!r}")
        return "mm/day"
    return CANONICAL[lookup(variable.units, where).quantity]


def _check_declared_against_data(variable: VariableSpec, data_unit: str, source: str) -> None:
    if not data_unit or data_unit not in UNITS:
        return
    declared, carried = UNITS[variable.units.strip()], UNITS[data_unit]
    if declared != carried:
        raise StefaLandError(
            f"source {source} variable {variable.name}: catalog declares unit {variable.units!r} "
            f"but the data say {data_unit!r}"
        )


def harmonise(spec: SourceSpec, raw: xr.Dataset, areas_km2: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Return ``{store name: float32 array}`` shaped like the source (site[, time])."""
    out: dict[str, np.ndarray] = {}
    for variable in spec.variables:
        where = f"source {spec.name} variable {variable.name}"
        array = raw[variable.source_var]
        _check_declared_against_data(variable, str(array.attrs.get("units", "")).strip(), spec.name)
        values = np.asarray(array.values, dtype=np.float64)
        values = clean(variable, values, array, where)
        if variable.scale is not None:
            values = values * variable.scale
        values = to_canonical(values, variable.units, where)
        if variable.per_area:
            if not areas_km2 or variable.per_area not in areas_km2:
                raise StefaLandError(
                    f"{where}: per_area names {variable.per_area!r}, which is not a static variable of the store"
                )
            area = areas_km2[variable.per_area]
            check_area(area, values, array, variable.per_area, where)
            area = area.reshape(area.shape + (1,) * (values.ndim - 1))
            values = discharge_to_depth(values, area)
        unit = "mm/day" if variable.per_area else variable.units
        check_plausible(values, unit, where)
        check_storable(values, array, store_unit(variable, spec.name), where)
        out[variable.name] = values.astype(np.float32)
    return out


def refuse_empty_sites(spec: SourceSpec, sites: np.ndarray, block: dict[str, np.ndarray], fatal: bool) -> None:
    """A forcing with no value at all for a site is a broken input; a missing target is an ungauged site."""
    for name, values in block.items():
        empty = ~np.isfinite(values).any(axis=tuple(range(1, values.ndim)))
        if empty.any():
            site = sites[int(np.flatnonzero(empty)[0])]
            message = f"source {spec.name} site {site} variable {name}: no valid value in the build period"
            if fatal:
                raise StefaLandError(message)
            log.info("%s (%d such sites; kept as ungauged)", message, int(empty.sum()))


def refuse_empty_static(spec: SourceSpec, sites: np.ndarray, block: dict[str, np.ndarray], fatal: bool) -> None:
    """A static variable with no value at any site: finetuning would see a column that is NaN everywhere.

    From joined attribute tables (``fatal``: CAMELS, Caravan, curated to cover every site) it is a
    broken input — an empty column, or ids that match no site — and is refused. A grid, a polygon
    layer or station metadata may truly hold nothing at a small set of sites (an ISMN archive
    without its static files), so there it is a warning with the count, never silent."""
    for name, values in block.items():
        if not len(sites) or np.isfinite(values).any():
            continue
        message = f"source {spec.name} variable {name}: no value at any of the {len(sites)} sites"
        if fatal:
            raise StefaLandError(f"{message} (the column is empty, or its table's ids match no site); "
                                 "fix the input or leave the variable out of the catalog")
        log.warning("%s; it is stored as missing everywhere — leave it out of the catalog if that is not expected",
                    message)
