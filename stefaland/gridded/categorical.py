"""Categorical rasters (land cover, lithology) → the fraction of each class around or in each site.

Averaging class codes is meaningless (the mean of "forest"=1 and "urban"=3 is not "grassland"),
so each declared class becomes its own 0–1 variable: the weighted share of the site's valid cells
holding that class. Valid means "holds a declared class"; nodata and undeclared codes are left
out, so the fractions of a site sum to 1 whenever it has any valid cell (NaN otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import numpy as np
import xarray as xr

from ..errors import StefaLandError
from .weights import SiteWeights, per_site_sums


def parse_classes(classes: object, source: str) -> dict[float, str]:
    """``{code: name}`` from catalog YAML (codes may arrive as strings) → numeric codes, safe names."""
    if not isinstance(classes, Mapping) or not classes:
        raise StefaLandError(f"source {source}: a categorical gridded source needs gridded.classes ({{code: name}})")
    parsed: dict[float, str] = {}
    for code, name in classes.items():
        try:
            number = float(code)
        except (TypeError, ValueError):
            raise StefaLandError(f"source {source}: class code {code!r} is not a number") from None
        label = re.sub(r"[^0-9A-Za-z_]+", "_", str(name).strip()).strip("_").lower()
        if not label:
            raise StefaLandError(f"source {source}: class {code!r} has an empty name")
        if label in parsed.values():
            raise StefaLandError(f"source {source}: class name {label!r} is used twice")
        parsed[number] = label
    return parsed


def _is_class(code: float) -> Callable[[xr.DataArray], xr.DataArray]:
    """The reducer that marks the cells of class ``code``."""
    return lambda v: v == code


def class_fractions(data: xr.DataArray, weights: SiteWeights, classes: Mapping[float, str],
                    prefix: str, site_chunk: int | None = None) -> dict[str, xr.DataArray]:
    """``{<prefix>_<class>: fraction}`` per site (and per time step when the raster has one)."""
    codes = np.asarray(list(classes), dtype=np.float64)
    reducers: dict[str, Callable[[xr.DataArray], xr.DataArray]] = {"valid": lambda v: v.isin(codes)}
    reducers.update({name: _is_class(code) for code, name in classes.items()})
    sums = per_site_sums(data, weights, site_chunk, reducers)
    valid = sums.pop("valid")
    return {f"{prefix}_{name}": (sums[name] / valid).where(valid > 0).assign_attrs(units="fraction", class_code=code)
            for code, name in classes.items()}
