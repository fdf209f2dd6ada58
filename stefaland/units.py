"""The one table of units StefaLand understands, and conversion to the store's canonical units.

Catalogs declare the unit of every variable; ``data build`` converts to the canonical unit of that
unit's quantity and refuses anything it does not know, because a silently mis-scaled forcing
trains a model that looks fine and is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import StefaLandError


@dataclass(frozen=True)
class Unit:
    quantity: str
    scale: float = 1.0  # canonical = value * scale + offset
    offset: float = 0.0


# quantity -> canonical unit
CANONICAL: dict[str, str] = {
    "temperature": "degC",
    "water_flux": "mm/day",
    "energy_flux": "W/m2",
    "pressure": "Pa",
    "volumetric_water": "m3/m3",
    "fraction": "fraction",
    "length": "m",
    "depth": "mm",
    "area": "km2",
    "angle": "degree",
    "slope": "m/km",
    "duration": "s",
    "days": "days",  # counts and durations of days (CAMELS' high_prec_freq, dry-spell length): not "1"
    "discharge": "m3/s",
    "specific_humidity": "kg/kg",
    "dimensionless": "1",
    "population_density": "persons/km2",
    "currency": "USD",
    "permeability": "log10(m2)",
    "conductivity": "cm/h",
    "density": "g/cm3",
    "concentration": "g/kg",
    "speed": "m/s",
}

UNITS: dict[str, Unit] = {
    # temperature
    "degC": Unit("temperature"), "C": Unit("temperature"), "°C": Unit("temperature"),
    "K": Unit("temperature", 1.0, -273.15),
    "degF": Unit("temperature", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    # water fluxes (precipitation, PET, runoff depth per day)
    "mm/day": Unit("water_flux"), "mm/d": Unit("water_flux"), "mm d-1": Unit("water_flux"),
    "mm day-1": Unit("water_flux"), "kg m-2 day-1": Unit("water_flux"),
    "kg m-2 s-1": Unit("water_flux", 86400.0), "kg/m2/s": Unit("water_flux", 86400.0),
    "mm/h": Unit("water_flux", 24.0), "mm/hour": Unit("water_flux", 24.0),
    "m/day": Unit("water_flux", 1000.0), "m/d": Unit("water_flux", 1000.0),
    "mm/3h": Unit("water_flux", 8.0),
    # radiation
    "W/m2": Unit("energy_flux"), "W m-2": Unit("energy_flux"), "W/m^2": Unit("energy_flux"),
    "MJ m-2 day-1": Unit("energy_flux", 1e6 / 86400.0), "MJ/m2/day": Unit("energy_flux", 1e6 / 86400.0),
    "J m-2 day-1": Unit("energy_flux", 1.0 / 86400.0),
    # pressure
    "Pa": Unit("pressure"), "hPa": Unit("pressure", 100.0), "kPa": Unit("pressure", 1000.0),
    # soil moisture
    "m3/m3": Unit("volumetric_water"), "m3 m-3": Unit("volumetric_water"),
    "%vol": Unit("volumetric_water", 0.01),
    # fractions
    "fraction": Unit("fraction"), "-frac": Unit("fraction"),
    "%": Unit("fraction", 0.01), "percent": Unit("fraction", 0.01),
    # lengths and depths
    "m": Unit("length"), "km": Unit("length", 1000.0), "cm": Unit("length", 0.01),
    "mm": Unit("depth"),
    # areas
    "km2": Unit("area"), "m2": Unit("area", 1e-6), "ha": Unit("area", 0.01),
    # angles and slopes
    "degree": Unit("angle"), "degrees": Unit("angle"), "deg": Unit("angle"),
    "m/km": Unit("slope"), "m km-1": Unit("slope"),
    # durations
    "s": Unit("duration"), "h": Unit("duration", 3600.0),
    # discharge (converted to a water flux when an area is given)
    "m3/s": Unit("discharge"), "ft3/s": Unit("discharge", 0.3048**3), "cfs": Unit("discharge", 0.3048**3),
    "L/s": Unit("discharge", 1e-3),
    # others
    "kg/kg": Unit("specific_humidity"), "g/kg": Unit("concentration"),
    "1": Unit("dimensionless"), "-": Unit("dimensionless"), "dimensionless": Unit("dimensionless"),
    "day": Unit("days"), "days": Unit("days"), "d": Unit("days"), "class": Unit("dimensionless"),
    "persons/km2": Unit("population_density"), "USD": Unit("currency"),
    "log10(m2)": Unit("permeability"), "cm/h": Unit("conductivity"),
    "g/cm3": Unit("density"), "kg/m3": Unit("density", 1e-3),
    "m/s": Unit("speed"), "m s-1": Unit("speed"), "km/h": Unit("speed", 1 / 3.6),
}

# Physically plausible ranges in canonical units: values far outside them almost always mean the
# catalog declared the wrong unit (Kelvin labelled as Celsius, metres per second as mm/day...).
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "temperature": (-95.0, 65.0),
    "water_flux": (-50.0, 2500.0),
    "energy_flux": (-400.0, 1500.0),  # net longwave is negative, down to about -300 W/m2
    "pressure": (0.0, 120000.0),
    "volumetric_water": (0.0, 1.0),
    "fraction": (-0.01, 1.01),
    "speed": (0.0, 120.0),
}


def lookup(unit: str, where: str) -> Unit:
    """Return the :class:`Unit` for ``unit`` or fail naming ``where`` (source and variable)."""
    try:
        return UNITS[unit.strip()]
    except KeyError:
        raise StefaLandError(
            f"{where}: unknown unit {unit!r} (known: see stefaland/units.py)"
        ) from None


def canonical_unit(unit: str, where: str) -> str:
    return CANONICAL[lookup(unit, where).quantity]


def to_canonical(values: np.ndarray, unit: str, where: str) -> np.ndarray:
    """Convert ``values`` from ``unit`` to the canonical unit of its quantity."""
    spec = lookup(unit, where)
    if spec.scale == 1.0 and spec.offset == 0.0:
        return values
    return values * spec.scale + spec.offset


def discharge_to_depth(values_m3s: np.ndarray, area_km2: np.ndarray) -> np.ndarray:
    """m³/s over a basin of ``area_km2`` → mm/day: Q·86400 s / (A·10⁶ m²) · 10³ mm/m."""
    return values_m3s * 86.4 / area_km2


def check_plausible(values: np.ndarray, unit: str, where: str) -> None:
    """Refuse values outside the plausible range of their quantity (in canonical units).

    NaN is missing and skipped; ±inf is not missing, so it counts as out of range (skipped with NaN,
    an ``inf`` forcing would reach the store)."""
    quantity = lookup(unit, where).quantity
    bounds = PLAUSIBLE.get(quantity)
    if bounds is None:
        return
    present = values[~np.isnan(values)]
    if present.size == 0:
        return
    low, high = float(present.min()), float(present.max())
    if low < bounds[0] or high > bounds[1]:
        raise StefaLandError(
            f"{where}: values {low:g}..{high:g} {CANONICAL[quantity]} are outside the plausible "
            f"range {bounds[0]:g}..{bounds[1]:g} for {quantity}; is the declared unit {unit!r} right?"
        )
