"""Open a store built by ``stefaland data build`` and read it one shard of sites at a time.

A trainer must never materialise the whole store (4,229 sites × 40 years does not fit a laptop's
patience), and must never train on a store whose build was interrupted or whose chunks were damaged
— so every reader goes through :func:`open_store`, which checks the completeness flag and the
store's integrity record (cheaply, see :mod:`.integrity`) and returns a dataset whose every chunk
read is checksummed, and :func:`read_shard`, which loads exactly one chunk of sites.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import xarray as xr
import zarr

from ..errors import StefaLandError
from ..fileio import is_remote, storage_options_for
from .integrity import INTEGRITY_ATTR, RECORD_KEY, VerifyingStore, check_on_open, zarr_store
from .layout import COMPLETE_ATTR, SHARD_SIZE_ATTR

log = logging.getLogger("stefaland.store")
_WARNED: set[str] = set()


def _open_zarr(url: str, record: dict | None = None) -> xr.Dataset:
    """The store as a lazy dataset; with ``record``, every chunk read is checked against it."""
    storage_options = storage_options_for(url) if is_remote(url) else None
    try:
        if record is not None:
            return xr.open_zarr(VerifyingStore(zarr_store(url, read_only=True), url, record), consolidated=False)
        return xr.open_zarr(url, consolidated=False, storage_options=storage_options)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError) as exc:
        raise StefaLandError(f"{url}: not a StefaLand store (no zarr group found)") from exc


def plain_strings(dataset: xr.Dataset) -> xr.Dataset:
    """Zarr 3 hands back numpy's StringDType; most of the ecosystem still expects object strings."""
    fixed = {
        name: coord.astype(object) for name, coord in dataset.coords.items() if coord.dtype.kind == "T"
    }
    return dataset.assign_coords(fixed) if fixed else dataset


def open_store(url: str, allow_incomplete: bool = False) -> xr.Dataset:
    """Open the store lazily; refuse one whose build did not finish or whose chunks are damaged.

    A store with an integrity record is listed once and compared with it (missing, truncated or
    foreign chunks stop here), and the returned dataset checks every chunk it reads. A store
    without a marker (older StefaLand, or written by hand) opens unchecked (a debug line says so;
    ``stefaland store verify`` refuses it as unverifiable).
    """
    from ..outputs import read_marker

    url = str(url).rstrip("/") or str(url)
    marker = read_marker(url)
    if marker is not None and marker.get("stefaland_output") != "store":
        raise StefaLandError(f"{url}: is a StefaLand {marker.get('stefaland_output')} output, not a store")
    record = (marker or {}).get(RECORD_KEY)
    record = record if isinstance(record, dict) else None
    dataset = _open_zarr(url, record)
    complete = dataset.attrs.get(COMPLETE_ATTR) is True
    if not allow_incomplete and not complete:
        raise StefaLandError(
            f"{url}: store is incomplete (its build was interrupted); re-run 'stefaland data build' to resume it"
        )
    if not complete:
        return plain_strings(dataset)
    if record is not None:
        check_on_open(url, record)
        for name, layout in record.get("arrays", {}).items():
            if name in dataset.variables and list(dataset[name].shape) != layout["shape"]:
                raise StefaLandError(f"{url}: array {name} has shape {list(dataset[name].shape)}, the record says "
                                     f"{layout['shape']}; the store is damaged")
        return plain_strings(dataset)
    if marker is not None or dataset.attrs.get(INTEGRITY_ATTR):
        raise StefaLandError(f"{url}: the store's integrity record is missing (.stefaland/zarr.json); the store is "
                             "damaged (rebuild it with 'stefaland data build --force')")
    if url not in _WARNED:
        _WARNED.add(url)
        log.debug("%s: no integrity record (written by an older StefaLand or by hand); chunks are not checked", url)
    return plain_strings(dataset)


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
