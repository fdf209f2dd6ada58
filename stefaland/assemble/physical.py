"""Values that cannot be physical are refused before they reach a store.

The plausibility ranges of :mod:`stefaland.units` catch a wrong unit (Kelvin read as Celsius);
they cannot catch a negative rain of -3 mm/day or a discharge of -5 ft³/s, which a unit error never
produces but a corrupt or mis-coded file does, nor a basin area of 0 km² that turns every flow into
+inf. Nor can they catch ±inf in the input itself (``inf`` in a text file, an overflowed cell of a
NetCDF): the range checks see only finite values, and one ``inf`` day moved a site's predictions by
a third. Such a value — impossible, or not finite, in any variable — is an error naming the site
(and date), unless the catalog says ``on_invalid: nan`` for the variable: then it becomes NaN and
the count is logged. A declared ``missing_value`` sentinel is NaN first, so it is never mistaken
for a negative value. NaN itself is "missing", never an error here.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import xarray as xr

from ..catalog import VariableSpec
from ..errors import StefaLandError
from ..units import lookup

log = logging.getLogger("stefaland.assemble")

# water fluxes that cannot be negative (precipitation, rain, snowfall); evaporation or net fluxes may be
_PRECIPITATION = re.compile(r"prec|prcp|rain|snow_?fall|^pr$|^tp$|^p$|^p_", re.IGNORECASE)


def must_be_non_negative(variable: VariableSpec) -> bool:
    """Discharge always; a water flux when its name or description says precipitation."""
    quantity = lookup(variable.units, variable.name).quantity
    if quantity == "discharge":
        return True
    if quantity != "water_flux" or variable.per_area:
        return False
    return any(_PRECIPITATION.search(text) for text in (variable.name, variable.source_var, variable.description))


def _where_first(bad: np.ndarray, raw: xr.DataArray) -> str:
    """'site S on DATE' (or 'site S') of the first True cell of ``bad``, from the source's coords."""
    index = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
    parts = []
    for dim, i in zip(raw.dims, index):
        if dim in raw.coords:
            value = raw.coords[dim].values[i]
            parts.append(f"{'on' if dim == 'time' else dim} {str(value)[:10] if dim == 'time' else value}")
    return " ".join(parts) or f"index {index}"


def clean(variable: VariableSpec, values: np.ndarray, raw: xr.DataArray, where: str) -> np.ndarray:
    """The sentinel → NaN; impossible values → error (or NaN with a logged count if allowed)."""
    if variable.missing_value is not None:
        values = np.where(values == variable.missing_value, np.nan, values)
    infinite = np.isinf(values)
    if infinite.any():
        values = _refuse_or_blank(variable, values, np.asarray(infinite), raw, where, "a non-finite value")
    quantity = lookup(variable.units, where).quantity
    if quantity == "area":
        bad, what = values <= 0, "an area <= 0"
    elif must_be_non_negative(variable):
        bad, what = values < 0, "a negative value"
    else:
        return values
    bad = np.asarray(bad & np.isfinite(values))
    if not bad.any():
        return values
    return _refuse_or_blank(variable, values, bad, raw, where, what)


def _refuse_or_blank(variable: VariableSpec, values: np.ndarray, bad: np.ndarray, raw: xr.DataArray, where: str,
                     what: str) -> np.ndarray:
    """One policy for every impossible cell: an error naming the first, or NaN when ``on_invalid: nan``."""
    first = float(values[bad].flat[0])
    sentinel = f" (declared missing value: {variable.missing_value:g})" if variable.missing_value is not None else ""
    if variable.on_invalid == "nan":
        log.warning("%s: %d cells with %s set to NaN (on_invalid: nan), first %s (%g %s)",
                    where, int(bad.sum()), what, _where_first(bad, raw), first, variable.units)
        return np.where(bad, np.nan, values)
    raise StefaLandError(
        f"{where}: {_where_first(bad, raw)} has {what} ({first:g} {variable.units}){sentinel}; "
        f"{int(bad.sum())} such cells. Fix the input, declare its missing_value, or set on_invalid: nan"
    )


def check_area(area_km2: np.ndarray, discharge: np.ndarray, raw: xr.DataArray, per_area: str, where: str) -> None:
    """A basin area used to turn discharge into depth must be finite and > 0 wherever there is flow."""
    flows = np.isfinite(discharge).reshape(discharge.shape[0], -1).any(axis=1)
    area = area_km2.reshape(-1)
    bad = flows & ~(np.isfinite(area) & (area > 0))
    if bad.any():
        site = raw.coords["site"].values[int(np.flatnonzero(bad)[0])] if "site" in raw.coords else int(np.flatnonzero(bad)[0])
        raise StefaLandError(
            f"{where}: site {site} has basin area {float(area[bad][0]):g} km2 ({per_area}); discharge cannot "
            f"become a depth (it would be inf or NaN); {int(bad.sum())} such sites"
        )


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_storable(values: np.ndarray, raw: xr.DataArray, unit: str, where: str) -> None:
    """Converted values must stay finite in the store's float32: a finite 1e39 (or a conversion that
    overflows) would be written as inf without a word, exactly what :func:`clean` refuses in the input."""
    bad = np.asarray(np.isinf(values) | (np.abs(np.nan_to_num(values, nan=0.0)) > _FLOAT32_MAX))
    if bad.any():
        raise StefaLandError(
            f"{where}: {_where_first(bad, raw)} is {float(values[bad].flat[0]):g} {unit} after conversion, "
            f"not finite as float32; {int(bad.sum())} such cells. Fix the input or its declared unit"
        )
