"""Intake driver for the Harmonized World Soil Database v2 (HWSD2): mapping-unit raster + layer table.

HWSD2 is a 30 arc-second raster of soil mapping unit ids (``HWSD2.bil``, uint16, nodata 65535)
and an MS Access database (``HWSD2.mdb``) describing each unit. Our dependencies cannot read
Access, so the user exports its ``HWSD2_LAYERS`` table to CSV (``mdb-export HWSD2.mdb
HWSD2_LAYERS > HWSD2_LAYERS.csv``). A unit is a mix of soils (rows with a ``SEQUENCE`` and the
``SHARE`` of the unit they cover) and each soil has depth layers D1..D7; a unit's property in one
layer is the SHARE-weighted mean over its soils with a valid value (HWSD writes missing as
negative numbers, e.g. -9), the shares renormalised over those soils, NaN when none is valid.

The raster is then mapped to those values lazily: a dense lookup array indexed by unit id,
applied block by block, so the global grid is never loaded.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from ..errors import StefaLandError
from ..fileio import read_source_bytes
from .base import LazyProductSource
from .raster import open_band

UNIT, LAYER, SHARE = "HWSD2_SMU_ID", "LAYER", "SHARE"


def read_layers(url: str, columns: Sequence[str], storage_options: dict | None, source: str) -> pd.DataFrame:
    """The exported HWSD2_LAYERS table: unit id, layer, share and ``columns``, numbers checked."""
    table = pd.read_csv(io.BytesIO(read_source_bytes(url, source, storage_options)), dtype=str, keep_default_na=False)
    table.columns = [str(c).strip() for c in table.columns]
    for name in (UNIT, LAYER, SHARE, *columns):
        if name not in table.columns:
            raise StefaLandError(f"source {source}: file {url} has no column {name}")
    out = pd.DataFrame({LAYER: table[LAYER].str.strip()})
    for name in (UNIT, SHARE, *columns):
        text = table[name].str.strip()
        values = pd.to_numeric(text, errors="coerce")
        bad = values.isna() & (text != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise StefaLandError(f"source {source}: file {url} line {row + 2}: column {name} has a non-numeric value {text.iat[row]!r}")
        out[name] = values
    if out[UNIT].isna().any():
        row = int(np.flatnonzero(out[UNIT].isna().to_numpy())[0])
        raise StefaLandError(f"source {source}: file {url} line {row + 2}: no {UNIT}")
    return out


def unit_means(table: pd.DataFrame, columns: Sequence[str], layer: str, url: str, source: str) -> pd.DataFrame:
    """SHARE-weighted mean of each column per mapping unit in ``layer``; index: unit id (int)."""
    rows = table[table[LAYER] == layer]
    if rows.empty:
        present = ", ".join(sorted(map(str, table[LAYER].unique()))[:10])
        raise StefaLandError(f"source {source}: layer {layer} not found in {url} (layers: {present})")
    units = rows[UNIT].astype(np.int64)
    means = {}
    for name in columns:
        valid = (rows[name] >= 0) & (rows[SHARE] > 0)
        weight = rows[SHARE].where(valid, 0.0)
        weighted = (rows[name] * weight).where(valid, 0.0)
        sums = pd.DataFrame({"w": weight.to_numpy(), "v": weighted.to_numpy()}, index=units.to_numpy()).groupby(level=0).sum()
        means[name] = (sums["v"] / sums["w"].where(sums["w"] > 0)).astype(np.float64)
    return pd.DataFrame(means)


def _lookup_block(ids: np.ndarray, table: np.ndarray, nodata: float | None) -> np.ndarray:
    """Unit ids → values; nodata, ids outside the table and ids without a value → NaN."""
    if np.issubdtype(ids.dtype, np.floating):
        ids = np.where(np.isfinite(ids), ids, -1)
    index = ids.astype(np.int64)
    ok = (index >= 0) & (index < table.size)
    if nodata is not None and np.isfinite(nodata):
        ok &= ids != nodata
    out = np.full(ids.shape, np.nan, dtype=np.float32)
    out[ok] = table[index[ok]]
    return out


def map_units(units: xr.DataArray, means: pd.DataFrame, nodata: float | None) -> xr.Dataset:
    """A lazy Dataset {column: (y, x)} from the unit-id raster and the per-unit means."""
    ids = means.index.to_numpy(dtype=np.int64)
    ids_ok = ids >= 0
    size = int(ids[ids_ok].max()) + 1 if ids_ok.any() else 1
    data = units.data if isinstance(units.data, da.Array) else da.from_array(units.data, chunks=2048)
    out = {}
    for name in means.columns:
        table = np.full(size, np.nan, dtype=np.float32)
        table[ids[ids_ok]] = means[name].to_numpy()[ids_ok]
        shared = dask.delayed(table, pure=True)  # one copy in the graph, not one per block
        mapped = da.map_blocks(_lookup_block, data, shared, nodata, dtype=np.float32)
        out[str(name)] = xr.DataArray(mapped, dims=units.dims, coords=units.coords)
    return xr.Dataset(out)


class HwsdSource(LazyProductSource):
    """HWSD2 raster + exported HWSD2_LAYERS CSV → lazy Dataset {column: (y, x)} for one layer."""

    name = "stefaland_hwsd"

    def input_paths(self) -> list[str]:
        """The raster with its header (an ESRI .bil is data + .hdr) and the layer table."""
        stem = self.raster.rsplit(".", 1)[0]
        return [f"{stem}.*", self.layers]

    def __init__(self, raster: str, layers: str, layer: str = "D1", columns: Sequence[str] = ("SAND", "SILT", "CLAY"),
                 chunks: int = 2048, storage_options: dict | None = None, metadata: dict | None = None):
        super().__init__(storage_options=storage_options, metadata=metadata)
        self.raster = str(raster)
        self.layers = str(layers)
        self.layer = str(layer)
        self.columns = [str(c) for c in columns]
        if not self.columns:
            raise StefaLandError(f"source {self._label()}: columns is empty; name the HWSD2_LAYERS columns to map (e.g. SAND)")
        self.chunks = int(chunks)

    def _open(self) -> xr.Dataset:
        label = self._label()
        table = read_layers(self.layers, self.columns, self.storage_options, label)
        means = unit_means(table, self.columns, self.layer, self.layers, label)
        units = open_band(self.raster, self.storage_options, self.chunks, False, label)
        nodata = units.rio.nodata
        return map_units(units, means, None if nodata is None else float(nodata))
