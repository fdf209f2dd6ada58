"""Daily MSWX (Tmax, Tmin, SWd, RelHum) and MSWEP (precipitation) miniatures, one file per day.

Weather is the planet's normals plus space-time noise: Gaussian-smoothed white noise (a few
degrees across, so neighbouring cells agree) made persistent in time by an AR(1) filter whose
state carries from one year to the next. Rain falls where an occurrence field drops below the
local wet-day share, so dry days are real zeros and wet spells cover several cells; wet days are
cloudier (less SWd), more humid and have a smaller diurnal range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage, special

from ..progress import progress
from .products_io import DayFiles
from .products_world import Grid, Normals, Planet, normals

# folder under MSWX_V100/Past → (variable, attributes)
MSWX = {
    "Tmax": ("air_temperature", {"units": "degree_Celsius", "long_name": "Daily maximum air temperature"}),
    "Tmin": ("air_temperature", {"units": "degree_Celsius", "long_name": "Daily minimum air temperature"}),
    "SWd": ("downward_shortwave_radiation", {"units": "W m-2", "long_name": "Downward shortwave radiation"}),
    "RelHum": ("relative_humidity", {"units": "%", "long_name": "Relative humidity"}),
}
MSWEP = ("precipitation", {"units": "mm/d", "long_name": "Precipitation"})
SMOOTH_DEG = 4.0  # spatial scale of the weather noise
PERSISTENCE = {"temperature": 0.75, "occurrence": 0.45, "amount": 0.2, "humidity": 0.6}


def daily_resolution(resolution: float) -> float:
    """The daily grid: coarser than the statics, so a year of daily files stays a few tens of MB."""
    return max(2.5, resolution)


def mswx_path(root: Path, folder: str, day: pd.Timestamp) -> Path:
    return root / "MSWX_V100" / "Past" / folder / "Daily" / f"{day.year}{day.day_of_year:03d}.nc"


def mswep_path(root: Path, day: pd.Timestamp) -> Path:
    return root / "MSWEP_V280" / "Past" / "Daily" / f"{day.year}{day.day_of_year:03d}.nc"


def insolation(lat: np.ndarray, doy: np.ndarray) -> np.ndarray:
    """Daily-mean top-of-atmosphere shortwave (W m-2), (days, rows, 1); zero in the polar night."""
    phi = np.deg2rad(lat)[None, :, None]
    angle = 2 * np.pi * doy[:, None, None] / 365.0
    decl = np.deg2rad(23.44) * np.sin(2 * np.pi * (284 + doy[:, None, None]) / 365.0)
    h0 = np.arccos(np.clip(-np.tan(phi) * np.tan(decl), -1.0, 1.0))
    top = 1361.0 / np.pi * (1 + 0.033 * np.cos(angle))
    return np.maximum(top * (h0 * np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.sin(h0)), 0.0)


class Weather:
    """Year-by-year daily fields on ``grid``; call :meth:`year` in order (the AR state carries over)."""

    def __init__(self, planet: Planet, grid: Grid, seed: int) -> None:
        self.grid, self.seed = grid, seed
        fields = vars(normals(planet, grid))  # float32: a year of daily arrays is the bulk of the work
        self.normals = Normals(**{name: values.astype(np.float32) for name, values in fields.items()})
        self._state: dict[str, np.ndarray] = {}

    def _noise(self, rng: np.random.Generator, days: int, kind: str) -> np.ndarray:
        sigma = SMOOTH_DEG / self.grid.resolution
        white = rng.standard_normal((days, *self.grid.shape), dtype=np.float32)
        smooth = ndimage.gaussian_filter(white, sigma=(0, sigma, sigma), mode=("nearest", "nearest", "wrap"))
        smooth /= smooth.std()
        phi = PERSISTENCE[kind]
        previous = self._state.get(kind)
        for t in range(days):
            if previous is not None:
                smooth[t] = phi * previous + np.sqrt(1 - phi**2) * smooth[t]
            previous = smooth[t]
        assert previous is not None  # a noise field has one day at least
        self._state[kind] = previous.copy()
        return smooth

    def year(self, year: int) -> dict[str, np.ndarray]:
        """{Tmax, Tmin, SWd, RelHum, precipitation}: (days, rows, cols) float32 of ``year``."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 7100, year]))
        doy = np.arange(1, pd.Timestamp(year, 12, 31).day_of_year + 1, dtype=np.float32)
        n = self.normals
        days = doy.size
        season = np.cos(2 * np.pi * (doy[:, None, None] - 200.0) / 365.25)
        spread = (2.0 + 0.04 * np.abs(self.grid.lat)).astype(np.float32)[None, :, None]  # °C, wider at high latitudes
        anomaly = spread * self._noise(rng, days, "temperature")
        tmean = n.tmean + n.amplitude * season + anomaly
        rain_cycle = 1 + n.wet_amp * np.cos(2 * np.pi * (doy[:, None, None] - n.wet_doy) / 365.25)
        wet_share = np.clip(n.wet_fraction * rain_cycle, 0.01, 0.95)
        wet = special.ndtr(self._noise(rng, days, "occurrence")) < wet_share
        amount = -np.log1p(-special.ndtr(self._noise(rng, days, "amount")) * 0.999)  # exponential, mean ~1
        precipitation = np.where(wet, n.precip * rain_cycle / wet_share * amount, 0.0)
        diurnal = np.clip(6.0 + 9.0 * (1 - n.wet_fraction) - 3.0 * wet, 2.0, None)
        humid = self._noise(rng, days, "humidity")
        humidity = np.clip(20.0 + 85.0 * n.wet_fraction + 12.0 * wet - 0.8 * anomaly + 6.0 * humid, 5.0, 100.0)
        transmissivity = np.clip(0.74 - 0.32 * wet - 0.12 * n.wet_fraction + 0.03 * humid, 0.2, 0.8)
        shortwave = insolation(self.grid.lat, doy) * transmissivity
        fields = {"Tmax": tmean + diurnal / 2, "Tmin": tmean - diurnal / 2, "SWd": shortwave,
                  "RelHum": humidity, "precipitation": precipitation}
        return {name: np.round(values, 1).astype(np.float32) for name, values in fields.items()}


def write_daily(root: Path, planet: Planet, resolution: float, seed: int, start_year: int, years: int,
                quiet: bool = False) -> int:
    """Write every MSWX and MSWEP daily file; return how many files."""
    grid = Grid(daily_resolution(resolution))
    weather = Weather(planet, grid, seed)
    files = DayFiles(grid)
    written = 0
    for year in range(start_year, start_year + years):
        fields = weather.year(year)
        dates = pd.date_range(f"{year}-01-01", f"{year}-12-31", freq="D")
        for t, day in enumerate(progress(dates, f"MSWX/MSWEP {year}", quiet=quiet)):
            for folder, (name, attrs) in MSWX.items():
                files.write(mswx_path(root, folder, day), name, attrs, fields[folder][t], day)
            files.write(mswep_path(root, day), MSWEP[0], MSWEP[1], fields["precipitation"][t], day)
            written += len(MSWX) + 1
    return written
