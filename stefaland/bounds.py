"""The physical range of a target variable, so that no prediction leaves it.

A network's linear head knows nothing of physics: trained on z-scores it happily predicts negative
streamflow on dry days (before this module 11 % of test days in a well-trained CAMELS run). The
range comes from the catalog when a variable declares one (``bounds: [0, null]`` in its metadata,
stored as the ``tvar_lower``/``tvar_upper`` coordinates), else from the target's canonical unit.

Predictions are *clipped* on the physical scale, as neuralhydrology's ``clip_targets_to_zero``
does, rather than squashed by a softplus/ReLU head during training: a ReLU head has no gradient
below zero (a window predicted negative stops learning), and a softplus distorts the low-flow end
that FLV and FLV_log score. Clipping can only move a prediction closer to any observation inside
the range, so every error metric improves or stays the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from stefaland.errors import StefaLandError

Bounds = tuple[float, float]  # (lower, upper), -inf/inf where open

# canonical unit -> physical range on that unit's scale
UNIT_BOUNDS: dict[str, Bounds] = {
    "mm/day": (0.0, math.inf),  # streamflow, runoff, precipitation depth per day
    "mm": (0.0, math.inf),
    "m3/s": (0.0, math.inf),
    "m3/m3": (0.0, 1.0),  # volumetric soil moisture
    "fraction": (0.0, 1.0),  # sand/silt/clay fractions, land-cover fractions
    "%": (0.0, 100.0),
}


def _finite_or(value: object, default: float) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def resolve_bounds(setting: Literal["auto"] | Sequence[float | None] | None, units: str,
                   declared: tuple[object, object] | None = None) -> Bounds:
    """The (lower, upper) range for a target: ``setting`` is the config's ``data.target_bounds``
    (``"auto"``, ``None`` for no clipping, or a pair), ``declared`` the catalog's own bounds."""
    if setting is None:
        return (-math.inf, math.inf)
    if setting == "auto":
        if declared is not None and any(v is not None and not _is_nan(v) for v in declared):
            lower, upper = (_finite_or(declared[0], -math.inf), _finite_or(declared[1], math.inf))
        else:
            lower, upper = UNIT_BOUNDS.get(units.strip(), (-math.inf, math.inf))
    else:
        low, high = setting
        lower, upper = _finite_or(low, -math.inf), _finite_or(high, math.inf)
    if lower >= upper:
        raise StefaLandError(f"data.target_bounds: lower bound {lower:g} is not below upper bound {upper:g}")
    return (lower, upper)


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def clip_to_bounds(values: np.ndarray, bounds: Bounds | list[float | None] | None) -> np.ndarray:
    """``values`` on the physical scale, clipped into ``bounds``; NaN stays NaN."""
    if bounds is None:
        return values
    lower, upper = (_finite_or(bounds[0], -math.inf), _finite_or(bounds[1], math.inf))
    return np.clip(values, lower, upper)


def bounds_to_json(bounds: Bounds) -> list[float | None]:
    """JSON has no infinity: an open end is ``null``."""
    return [b if math.isfinite(b) else None for b in bounds]


def bounds_from_json(saved: list[float | None] | None) -> Bounds:
    """The inverse of :func:`bounds_to_json`; a run recorded before bounds existed is unbounded."""
    if not saved:
        return (-math.inf, math.inf)
    return (_finite_or(saved[0], -math.inf), _finite_or(saved[1], math.inf))
