"""Detect a damaged store instead of training on it: a record of every chunk, checked on open and read.

Why three levels, and why these:

* **Record at write time.** The build writes through :class:`RecordingStore`, which notes the
  size and CRC-32 of every chunk *as it is handed to storage* (so corruption that happens later,
  on disk or in transit, can never be blessed by a read-back). At completion the record (arrays,
  shapes, chunk sizes and checksums) goes into the store's marker ``.stefaland/zarr.json``.
* **Cheap check on open** (:func:`check_on_open`): one listing of the store (one paginated LIST
  on S3, a directory walk locally) compared with the record: a deleted, truncated or foreign chunk,
  or an array whose shape changed, stops :func:`stefaland.store.open_store` at once. No chunk is
  read, so opening a 4,000-site store stays a matter of milliseconds locally.
* **Check on every read** (:class:`VerifyingStore`): a chunk's CRC-32 is compared before zarr
  decodes it. CRC-32 runs at GB/s, far below the cost of decompressing and copying the chunk,
  and it catches flipped bytes that keep a chunk's size (which the listing cannot see) in exactly
  the shards a trainer reads — naming the array and shard. The chunks also carry zarr's own
  ``crc32c`` codec, so readers that bypass StefaLand (plain ``xarray.open_zarr``) fail on them too.
* **Full check** (:func:`verify_store`, ``stefaland store verify``): reads every recorded chunk.

A store without a marker (written by an older StefaLand or by hand) opens unchecked (debug log), and
``store verify`` calls it unverifiable; a store whose root says it has a record but has none is refused.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import dataclass
from typing import Any

import zarr
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from .. import fileio
from ..errors import StefaLandError

log = logging.getLogger("stefaland.store")

CHECKSUM = "crc32"
INTEGRITY_ATTR = "stefaland_integrity"  # in the root zarr.json: "this store has a record"
RECORD_KEY = "record"  # in the marker's attributes


def zarr_store(url: str, read_only: bool = False):
    """A zarr 3 store object for a local path or an object URL (credentials from the environment)."""
    url = str(url)
    if fileio.is_remote(url):
        # no listing cache: a store replaced by this process must not be listed as it was before
        options = fileio.storage_options_for(url, {"use_listings_cache": False})
        return FsspecStore.from_url(url, storage_options=options, read_only=read_only)
    return LocalStore(url, read_only=read_only)


def is_chunk(key: str) -> bool:
    return not key.endswith("zarr.json") and "/c/" in f"/{key}" and not key.startswith(".stefaland")


def checksum(data: bytes) -> int:
    return zlib.crc32(data)


def describe(key: str, record: dict[str, Any] | None = None) -> str:
    """``array dynamic shard 3 (chunk dynamic/c/3/0/0)``: shard = chunk index along ``site``."""
    array, _, rest = key.partition("/c/")
    if key.startswith("c/"):
        array, rest = "", key[2:]
    index = rest.split("/")
    dims = ((record or {}).get("arrays", {}).get(array) or {}).get("dims") or []
    if dims and dims[0] == "site" and index and index[0].isdigit():
        return f"array {array or '/'} shard {index[0]} (chunk {key})"
    return f"array {array or '/'} chunk {key}"


class RecordingStore(WrapperStore):
    """Writes through to ``store`` and notes ``key -> [size, crc32]`` of every chunk in ``sink``."""

    def __init__(self, store, sink: dict[str, list[int]]) -> None:
        super().__init__(store)
        self.sink = sink

    def _with_store(self, store):
        return type(self)(store, self.sink)

    async def set(self, key: str, value) -> None:
        await self._store.set(key, value)
        if is_chunk(key):
            data = value.to_bytes()
            self.sink[key] = [len(data), checksum(data)]

    async def delete(self, key: str) -> None:
        await self._store.delete(key)
        self.sink.pop(key, None)


class VerifyingStore(WrapperStore):
    """Reads through ``store``; a recorded chunk that is missing or whose CRC-32 differs is an error."""

    def __init__(self, store, url: str, record: dict[str, Any]) -> None:
        super().__init__(store)
        self.url = url
        self.record = record
        self.chunks: dict[str, list[int]] = record.get("chunks", {})
        self.arrays = set(record.get("arrays", {}))

    def _with_store(self, store):
        return type(self)(store, self.url, self.record)

    async def get(self, key: str, prototype, byte_range=None):
        value = await self._store.get(key, prototype, byte_range)
        if byte_range is not None or not is_chunk(key):
            return value
        expected = self.chunks.get(key)
        if expected is None:
            if value is not None and key.partition("/c/")[0] in self.arrays:
                raise StefaLandError(f"{self.url}: {describe(key, self.record)} is not in the store's record "
                                     "(written after the build?); the store is damaged")
            return value
        if value is None:
            raise StefaLandError(f"{self.url}: {describe(key, self.record)} is missing; the store is damaged "
                                 "(rebuild it with 'stefaland data build --force')")
        data = value.to_bytes()
        if len(data) != expected[0] or checksum(data) != expected[1]:
            raise StefaLandError(f"{self.url}: {describe(key, self.record)} fails its checksum; the store is damaged "
                                 "(rebuild it with 'stefaland data build --force')")
        return value


def array_layout(group: zarr.Group) -> dict[str, dict[str, Any]]:
    """Shape, chunk shape, dtype and dimension names of every array of ``group`` (metadata only)."""
    layout: dict[str, dict[str, Any]] = {}
    for name, array in group.arrays():
        dims = getattr(array.metadata, "dimension_names", None)
        layout[name] = {"shape": list(array.shape), "chunks": list(array.chunks), "dtype": str(array.dtype),
                        "dims": list(dims) if dims else []}
    return layout


def make_record(group: zarr.Group, chunks: dict[str, list[int]]) -> dict[str, Any]:
    return {"checksum": CHECKSUM, "arrays": array_layout(group), "chunks": dict(sorted(chunks.items()))}


def list_keys(url: str) -> dict[str, int]:
    """Every key of the store (relative, ``/``-separated) with its size, in one listing."""
    fs, path = fileio.filesystem(url)
    path = path.rstrip("/")
    if fileio.is_remote(url):
        found = fs.find(path + "/", withdirs=False, detail=True)
        return {name[len(path) + 1:]: int(info.get("size") or 0) for name, info in found.items()}
    keys: dict[str, int] = {}
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d != ".stefaland"]
        for name in files:
            full = os.path.join(root, name)
            keys[os.path.relpath(full, path).replace(os.sep, "/")] = os.path.getsize(full)
    return keys


def _problems(url: str, record: dict[str, Any], listing: dict[str, int], sizes_only: bool) -> list[str]:
    problems: list[str] = []
    arrays = set(record.get("arrays", {}))
    for key, (size, crc) in record.get("chunks", {}).items():
        if key not in listing:
            problems.append(f"{describe(key, record)} is missing")
        elif listing[key] != size:
            problems.append(f"{describe(key, record)} has {listing[key]} bytes, {size} were written")
        elif not sizes_only:
            fs, path = fileio.filesystem(fileio.join(url, key))
            if checksum(fs.cat_file(path)) != crc:
                problems.append(f"{describe(key, record)} fails its checksum")
    for key in listing:
        if is_chunk(key) and key.partition("/c/")[0] in arrays and key not in record.get("chunks", {}):
            problems.append(f"{describe(key, record)} is not in the store's record")
    return problems


def _check_layout(url: str, record: dict[str, Any], group: zarr.Group) -> list[str]:
    actual = array_layout(group)
    problems = []
    for name, expected in record.get("arrays", {}).items():
        if name not in actual:
            problems.append(f"array {name} is missing")
        elif actual[name]["shape"] != expected["shape"] or actual[name]["dtype"] != expected["dtype"]:
            problems.append(f"array {name} has shape {actual[name]['shape']} {actual[name]['dtype']}, the record says "
                            f"{expected['shape']} {expected['dtype']}")
    return problems


def check_on_open(url: str, record: dict[str, Any]) -> None:
    """The cheap check (one listing, no chunk read): raises on the first damaged chunk."""
    problems = _problems(url, record, list_keys(url), sizes_only=True)
    if problems:
        more = f" ({len(problems) - 1} more problems; run 'stefaland store verify {url}')" if len(problems) > 1 else ""
        raise StefaLandError(f"{url}: {problems[0]}; the store is damaged{more}")


@dataclass
class VerifySummary:
    url: str
    arrays: int
    chunks: int
    bytes: int
    problems: list[str]


def verify_store(url: str) -> VerifySummary:
    """Read every recorded chunk and compare it with the record; the metadata with the record's layout."""
    from ..outputs import read_marker

    url = str(url).rstrip("/")
    marker = read_marker(url)
    if marker is None:
        raise StefaLandError(f"{url}: not a StefaLand store (no marker .stefaland/zarr.json)")
    if marker.get("stefaland_output") != "store":
        raise StefaLandError(f"{url}: is a StefaLand {marker.get('stefaland_output')} output, not a store")
    record = marker.get(RECORD_KEY)
    if not isinstance(record, dict):
        raise StefaLandError(f"{url}: has no integrity record (its build did not finish, or it predates records)")
    try:
        group = zarr.open_group(zarr_store(url, read_only=True), mode="r")
        problems = _check_layout(url, record, group)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, json.JSONDecodeError, ValueError) as exc:
        problems = [f"zarr metadata unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"]
    listing = list_keys(url)
    problems += _problems(url, record, listing, sizes_only=False)
    chunks = record.get("chunks", {})
    return VerifySummary(url, len(record.get("arrays", {})), len(chunks), sum(s for s, _ in chunks.values()), problems)
