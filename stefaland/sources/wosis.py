"""Intake driver for soil-profile texture tables (WoSIS-like; paper Table C7): horizons → topsoil.

Profile databases (WoSIS, the Africa Soil Profiles DB) give one row per horizon: a profile id,
its coordinates, the horizon's upper and lower depth (cm) and sand/silt/clay (weight %). The
finetuning target is one texture per profile, so horizons are reduced to the **thickness-weighted
mean over a fixed layer** (default 0-30 cm, the HWSD/SoilGrids "topsoil"): each horizon weighs by
the centimetres it shares with the layer; horizons outside the layer, or with a lower depth not
below the upper one, weigh nothing; a profile with no weight in the layer is left out. Overlapping
horizons (re-sampled depths) are each counted, as the database lists them.

With ``normalise: true`` the three means are rescaled to sum to 100 % (lab sums drift by a few %
through rounding and coarse fragments); the target then holds proportions of the fine earth.
A profile whose rows disagree on its coordinates is refused by name (``coordinates: error``) or,
with ``coordinates: first``, takes the coordinates of its first row.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from intake.source.base import DataSource, Schema

from ..errors import StefaLandError
from ..fileio import read_source_bytes

TEXTURE = {"sand": "SNDPPT", "silt": "SLTPPT", "clay": "CLYPPT"}


def _read_table(url: str, source: str, storage_options: dict | None) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(read_source_bytes(url, source, storage_options)), dtype=str, keep_default_na=True)


def _numeric(frame: pd.DataFrame, columns: list[str], url: str, source: str, profile: str) -> pd.DataFrame:
    out = frame[columns].apply(pd.to_numeric, errors="coerce")
    bad = out.isna() & frame[columns].notna()
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise StefaLandError(
            f"source {source}: file {url} line {row + 2} (profile {frame[profile].iat[row]}): column "
            f"{columns[col]} has a non-numeric value {frame[columns[col]].iat[row]!r}"
        )
    return out


def _check_coordinates(horizons: pd.DataFrame, profile: str, lat: str, lon: str, url: str, source: str,
                       rule: str, tolerance: float) -> pd.DataFrame:
    """One lat/lon per profile: refuse (``error``) or take the first row's (``first``)."""
    grouped = horizons.groupby(profile, sort=False)[[lat, lon]]
    spread = grouped.max() - grouped.min()
    conflicting = spread[(spread[lat] > tolerance) | (spread[lon] > tolerance)]
    if len(conflicting) and rule == "error":
        name = conflicting.index[0]
        rows = horizons.loc[horizons[profile] == name, [lat, lon]].drop_duplicates()
        shown = "; ".join(f"{a:g}, {b:g}" for a, b in rows.to_numpy()[:3])
        raise StefaLandError(
            f"source {source}: profile {name} in {url} has contradicting coordinates ({shown}); "
            f"fix the file or set coordinates: first"
        )
    missing = horizons[horizons[[lat, lon]].isna().any(axis=1)]
    if len(missing):
        raise StefaLandError(f"source {source}: profile {missing[profile].iat[0]} in {url} has no {lat}/{lon}")
    return horizons.groupby(profile, sort=False)[[lat, lon]].first()


def topsoil_texture(horizons: pd.DataFrame, top_cm: float, bottom_cm: float, upper: str, lower: str,
                    profile: str, normalise: bool) -> pd.DataFrame:
    """Thickness-weighted sand/silt/clay (%) of each profile over [top_cm, bottom_cm]."""
    overlap = (np.minimum(horizons[lower], bottom_cm) - np.maximum(horizons[upper], top_cm)).clip(lower=0.0)
    weighted = pd.DataFrame({name: horizons[column] * overlap for name, column in TEXTURE.items()})
    valid = horizons[list(TEXTURE.values())].notna().all(axis=1)
    weight = overlap.where(valid, 0.0)
    weighted = weighted.where(valid, 0.0)
    weighted["_weight"] = weight
    weighted[profile] = horizons[profile].to_numpy()
    sums = weighted.groupby(profile, sort=False).sum()
    sums = sums[sums["_weight"] > 0]
    texture = sums[list(TEXTURE)].div(sums["_weight"], axis=0)
    if normalise:
        texture = texture.div(texture.sum(axis=1), axis=0) * 100.0
    texture["layer_thickness_cm"] = sums["_weight"]
    return texture


class SoilProfilesSource(DataSource):
    """Horizon table (one row per horizon) → one row per profile: id, lat, lon, sand, silt, clay (%)."""

    name = "stefaland_soil_profiles"
    container = "dataframe"
    version = "1"
    partition_access = False

    def __init__(self, urlpath: str, top_cm: float = 0.0, bottom_cm: float = 30.0, normalise: bool = False,
                 coordinates: str = "error", coordinate_tolerance: float = 1e-6, profile: str = "SOURCEID",
                 lat: str = "LATWGS84", lon: str = "LONWGS84", upper: str = "UHDICM", lower: str = "LHDICM",
                 storage_options: dict | None = None, metadata: dict | None = None):
        super().__init__(storage_options=storage_options, metadata=metadata)
        if coordinates not in ("error", "first"):
            raise StefaLandError(f"source {self._label()}: coordinates must be 'error' or 'first' (got {coordinates!r})")
        if not float(top_cm) < float(bottom_cm):
            raise StefaLandError(f"source {self._label()}: top_cm {top_cm} must be above bottom_cm {bottom_cm}")
        self.urlpath = str(urlpath)
        self.top_cm, self.bottom_cm = float(top_cm), float(bottom_cm)
        self.normalise = bool(normalise)
        self.coordinates = coordinates
        self.tolerance = float(coordinate_tolerance)
        self.columns = {"profile": profile, "lat": lat, "lon": lon, "upper": upper, "lower": lower}
        self._frame: pd.DataFrame | None = None

    def _label(self) -> str:
        return (self.metadata or {}).get("source_name", self.name)

    def _get_schema(self) -> Schema:
        frame = self.read()
        return Schema(datashape=None, dtype=None, shape=frame.shape, npartitions=1, extra_metadata={})

    def read(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = self._aggregate()
        return self._frame.copy()

    def _aggregate(self) -> pd.DataFrame:
        c = self.columns
        label = self._label()
        raw = _read_table(self.urlpath, label, self.storage_options)
        needed = [c["profile"], c["lat"], c["lon"], c["upper"], c["lower"], *TEXTURE.values()]
        absent = [name for name in needed if name not in raw.columns]
        if absent:
            raise StefaLandError(f"source {label}: file {self.urlpath} has no column {absent[0]!r}")
        raw[c["profile"]] = raw[c["profile"]].astype(str).str.strip()
        numbers = _numeric(raw, needed[1:], self.urlpath, label, c["profile"])
        horizons = pd.concat([raw[[c["profile"]]], numbers], axis=1)
        where = _check_coordinates(horizons, c["profile"], c["lat"], c["lon"], self.urlpath, label,
                                   self.coordinates, self.tolerance)
        texture = topsoil_texture(horizons, self.top_cm, self.bottom_cm, c["upper"], c["lower"],
                                  c["profile"], self.normalise)
        table = where.join(texture, how="inner").rename(columns={c["lat"]: "lat", c["lon"]: "lon"})
        table.index.name = c["profile"]
        return table.reset_index()

    def to_dask(self) -> pd.DataFrame:
        return self.read()

    def _close(self) -> None:
        self._frame = None
