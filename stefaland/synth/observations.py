"""Turn simulated discharge into what a USGS gauge record looks like.

Small multiplicative noise (rating-curve error), three significant figures, ``A:e`` (estimated)
flags on hard-frost days when ice affects the rating, and missing stretches (``-999``, flag ``M``)
at the sites chosen to have gaps.
"""

from __future__ import annotations

import numpy as np

from .hydrology import depth_to_cubic_feet, three_significant_digits

NOISE_SD = 0.05          # log-space standard deviation of the observation error
ICE_TEMPERATURE = -3.0   # degC daily mean below which the day is flagged as estimated


def observed_discharge(depth_mm_day: np.ndarray, area_km2: np.ndarray, has_gaps: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """(n, T) ft³/s with NaN on missing days."""
    n, t = depth_mm_day.shape
    noisy = depth_mm_day * np.exp(NOISE_SD * rng.standard_normal((n, t)) - NOISE_SD**2 / 2)
    cfs = three_significant_digits(depth_to_cubic_feet(noisy, area_km2))
    for site in np.flatnonzero(has_gaps):
        for _ in range(rng.integers(1, 4)):
            length = int(min(rng.integers(5, 150), max(t // 10, 1)))
            start = int(rng.integers(0, max(t - length, 1)))
            cfs[site, start:start + length] = np.nan
    return cfs


def quality_flags(tmean: np.ndarray) -> np.ndarray:
    """``A`` (approved) or ``A:e`` (approved, estimated) per day."""
    return np.where(tmean < ICE_TEMPERATURE, "A:e", "A")
