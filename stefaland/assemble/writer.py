"""Create the zarr store's skeleton, fill it shard by shard, and mark it complete last.

The skeleton (coordinates, static attributes, empty chunked arrays) is written first; each shard
then writes exactly one chunk per array; the completeness flag flips only after the statistics are
in. A reader that checks the flag (``stefaland.store.open_store``) can never see a half store.

Every write goes through a :class:`~stefaland.store.integrity.RecordingStore`, which notes each
chunk's size and CRC-32 in the build state; :func:`finalise` turns those notes into the store's
integrity record (in the marker) just before the flag. The chunk arrays also carry zarr's
``crc32c`` codec, so even a reader that bypasses StefaLand cannot decode a damaged chunk.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, cast

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from ..store.integrity import INTEGRITY_ATTR, RecordingStore, make_record, zarr_store
from ..store.layout import COMPLETE_ATTR, PROVENANCE_ATTR, SHARD_SIZE_ATTR


@dataclass
class BlockLayout:
    """The variables of one array of the store (dynamic, target or static) and their metadata."""

    name: str  # dynamic | target | static
    dim: str  # dvar | tvar | svar
    variables: list[str]
    units: list[str]
    groups: list[str]
    descriptions: list[str]
    never_mask: list[bool]

    def coords(self) -> dict[str, Any]:
        coords: dict[str, Any] = {
            self.dim: np.asarray(self.variables, dtype=object),
            f"{self.dim}_units": (self.dim, np.asarray(self.units, dtype=object)),
            f"{self.dim}_group": (self.dim, np.asarray(self.groups, dtype=object)),
            f"{self.dim}_description": (self.dim, np.asarray(self.descriptions, dtype=object)),
        }
        if self.name == "static":
            coords[f"{self.dim}_never_mask"] = (self.dim, np.asarray(self.never_mask, dtype=bool))
        return coords


def _compressors() -> tuple:
    return (ZstdCodec(level=0), Crc32cCodec())


def create_skeleton(
    url: str,
    sites: pd.DataFrame,
    time: pd.DatetimeIndex,
    blocks: list[BlockLayout],
    static_values: np.ndarray,
    shard_size: int,
    provenance: dict,
    sink: dict[str, list[int]],
) -> None:
    """Write coordinates, the static block and empty time-series arrays; mark incomplete.

    ``url`` must hold nothing but the output marker (the caller cleared it); written chunks are
    noted in ``sink``.
    """
    n_sites, n_time = len(sites), len(time)
    coords: dict = {
        "site": np.asarray(sites.index, dtype=object),
        "time": pd.DatetimeIndex(time).as_unit("ns"),
        "lat": ("site", sites["lat"].to_numpy(dtype=np.float64)),
        "lon": ("site", sites["lon"].to_numpy(dtype=np.float64)),
        "region": ("site", np.asarray(sites["region"], dtype=object)),
    }
    for column in sites.columns:
        if column.startswith("fold_"):
            coords[column] = ("site", sites[column].to_numpy(dtype=np.int16))
    data_vars: dict = {}
    encoding: dict = {}
    for block in blocks:
        coords.update(block.coords())
        n_vars = len(block.variables)
        if block.name == "static":
            data_vars["static"] = (("site", "svar"), static_values.astype(np.float32))
            encoding["static"] = {"chunks": (shard_size, n_vars), "compressors": _compressors()}
        else:
            chunks = (shard_size, n_time, n_vars)
            empty = da.full((n_sites, n_time, n_vars), np.nan, dtype=np.float32, chunks=chunks)
            data_vars[block.name] = (("site", "time", block.dim), empty)
            encoding[block.name] = {"chunks": chunks, "compressors": _compressors()}
        for stat in ("mean", "std"):
            data_vars[f"{block.name}_{stat}"] = ((block.dim,), np.full(n_vars, np.nan))
    dataset = xr.Dataset(data_vars, coords=coords)
    dataset.attrs = {COMPLETE_ATTR: False, SHARD_SIZE_ATTR: int(shard_size), PROVENANCE_ATTR: provenance,
                     INTEGRITY_ATTR: 1}
    # mode "a": the folder already holds the output marker, which mode "w" would delete. Some S3
    # servers (SeaweedFS) keep the empty "folders" of a store just removed by --force for a while,
    # and zarr warns about each while it lists the new root; they are rewritten right here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        dataset.to_zarr(RecordingStore(zarr_store(url), sink), mode="a", compute=False, encoding=encoding,
                        consolidated=False, zarr_format=3)


def open_group(url: str, sink: dict[str, list[int]]) -> zarr.Group:
    """The store's root group for writing; chunk writes are noted in ``sink``."""
    return zarr.open_group(RecordingStore(zarr_store(url), sink), mode="r+")


def _array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of the root group: the skeleton holds arrays only, never subgroups."""
    return cast(zarr.Array, group[name])


def write_shard(group: zarr.Group, block: str, rows: slice, values: np.ndarray) -> None:
    _array(group, block)[rows.start : rows.stop] = values.astype(np.float32)


def finalise(group: zarr.Group, statistics: dict[str, tuple[np.ndarray, np.ndarray]],
             sink: dict[str, list[int]], write_record) -> None:
    """Write the normalisation statistics, then the integrity record, then (last) the completeness flag.

    ``write_record(record)`` stores the record (in the output marker); a build killed between it
    and the flag leaves an incomplete store that the next run finalises again.
    """
    for block, (mean, std) in statistics.items():
        _array(group, f"{block}_mean")[:] = mean
        _array(group, f"{block}_std")[:] = std
    write_record(make_record(group, sink))
    group.attrs.update({COMPLETE_ATTR: True})
