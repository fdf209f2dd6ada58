"""Open a store built by ``stefaland data build`` and read it one shard of sites at a time.

A trainer must never materialise the whole store (4,229 sites × 40 years does not fit a laptop's
patience), and must never train on a store whose build was interrupted — so every reader goes
through :func:`open_store`, which checks the completeness marker, and :func:`read_shard`, which
loads exactly one chunk of sites.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr
import zarr

from ..errors import StefaLandError
from ..storage import is_remote, storage_options_for
from .layout import COMPLETE_ATTR, SHARD_SIZE_ATTR


def _open_zarr(url: str) -> xr.Dataset:
    kwargs = {"storage_options": storage_options_for(url)} if is_remote(url) else {}
    try:
        return xr.open_zarr(url, consolidated=False, **kwargs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError) as exc:
        raise StefaLandError(f"{url}: not a StefaLand store (no zarr group found)") from exc


def _plain_strings(dataset: xr.Dataset) -> xr.Dataset:
    """Zarr 3 hands back numpy's StringDType; most of the ecosystem still expects object strings."""
    fixed = {
        name: coord.astype(object) for name, coord in dataset.coords.items() if coord.dtype.kind == "T"
    }
    return dataset.assign_coords(fixed) if fixed else dataset


def open_store(url: str, allow_incomplete: bool = False) -> xr.Dataset:
    """Open the store lazily; refuse one whose build did not finish."""
    dataset = _open_zarr(str(url))
    if not allow_incomplete and dataset.attrs.get(COMPLETE_ATTR) is not True:
        raise StefaLandError(
            f"{url}: store is incomplete (its build was interrupted); re-run 'stefaland data build' to resume it"
        )
    return _plain_strings(dataset)


def shard_size(dataset: xr.Dataset) -> int:
    return int(dataset.attrs.get(SHARD_SIZE_ATTR, dataset.sizes["site"]))


def shard_count(dataset: xr.Dataset) -> int:
    size = shard_size(dataset)
    return (dataset.sizes["site"] + size - 1) // size


def shard_slices(dataset: xr.Dataset) -> list[slice]:
    size, n = shard_size(dataset), dataset.sizes["site"]
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


@dataclass
class StoreShard:
    """One shard of sites, in memory: what a trainer samples from."""

    sites: np.ndarray  # (n_sites,) str
    dynamic: np.ndarray  # (n_sites, n_time, n_dvar) float32, canonical units, NaN = missing
    static: np.ndarray  # (n_sites, n_svar) float32
    target: np.ndarray | None  # (n_sites, n_time, n_tvar) float32 or None when the store has no targets


def read_shard(dataset: xr.Dataset, index: int, time: slice | None = None) -> StoreShard:
    """Load shard ``index`` (optionally a time window) — reads one chunk per array, nothing more."""
    slices = shard_slices(dataset)
    if not 0 <= index < len(slices):
        raise StefaLandError(f"shard {index} does not exist (the store has {len(slices)} shards)")
    part = dataset.isel(site=slices[index])
    if time is not None:
        part = part.sel(time=time)
    target = part["target"].values if "target" in part else None
    return StoreShard(
        sites=part["site"].values.astype(str),
        dynamic=part["dynamic"].values,
        static=part["static"].values,
        target=target,
    )
