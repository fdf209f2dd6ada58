"""Check a predictions file against what its writer recorded, before ``report`` scores it.

Why: a bit flipped on a disk or in a copy changes a score without any error, and a fold that died
between writing its predictions and finishing left a file that looks like any other. Two records
vouch for a file:

* **the run's manifest.** A finetuning fold writes ``manifest.json`` (size and sha256 of every file)
  last, after its predictions. The file must match its entry; a file the manifest beside it does
  not list, or a run folder (``run.json``) without a manifest (the run never finished), is refused.
* **the data digest.** Every predictions file StefaLand writes carries ``stefaland_data_sha256``:
  the sha256 of its arrays, coordinates and identifying attributes, so files without a manifest
  (``stefaland predict`` outputs, copies) are checked too. It covers the values scored, not the
  container's bytes (the manifest does that).

A file with neither (written by other tools, or by StefaLand before these records existed) is
scored, and the report says on stderr and in its JSON that it was not verified.
"""

from __future__ import annotations

import hashlib
import posixpath

import numpy as np
import xarray as xr

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.run.manifest import MANIFEST, file_sha256, list_run_files, read_manifest

DIGEST_ATTR = "stefaland_data_sha256"
RUN_RECORD = "run.json"  # in a training run's folder from its start; the manifest comes last
_HASHED_ATTRS = ("task", "split", "fold", "model", "units", "variable")
_HASHED_COORDS = ("site", "time", "lat", "lon")

VERIFIED_MANIFEST = "manifest sha256"
VERIFIED_DIGEST = "data sha256"
UNVERIFIED = "unverified"


# ------------------------------------------------------------------------------------ data digest

def data_digest(dataset: xr.Dataset) -> str:
    """sha256 of what a report reads from ``dataset``: every data variable, site/time/lat/lon, and the
    identifying attributes, in a form that survives a NetCDF or zarr round trip (NaN payloads and
    float widths normalised, times as int64 ns, strings as UTF-8)."""
    digest = hashlib.sha256()
    names = sorted(str(v) for v in dataset.data_vars) + [c for c in _HASHED_COORDS if c in dataset.coords]
    for name in names:
        values = np.asarray(dataset[name].values)
        digest.update(f"\0{name}{values.shape}\0".encode())
        digest.update(_canonical(values))
    for key in _HASHED_ATTRS:
        digest.update(f"\0{key}={dataset.attrs.get(key, '')}".encode())
    return digest.hexdigest()


def _canonical(values: np.ndarray) -> bytes:
    if values.dtype.kind in "fiub":
        as_float = values.astype("<f8")
        return np.where(np.isnan(as_float), np.nan, as_float).astype("<f8").tobytes()
    if values.dtype.kind == "M":
        return values.astype("datetime64[ns]").astype("<i8").tobytes()
    return "\0".join(str(v) for v in values.ravel()).encode()


def with_digest(dataset: xr.Dataset) -> xr.Dataset:
    """``dataset`` with its data digest as the attribute ``stefaland_data_sha256`` (what writers store)."""
    clean = dataset.copy()
    clean.attrs.pop(DIGEST_ATTR, None)
    return clean.assign_attrs({DIGEST_ATTR: data_digest(clean)})


def check_digest(dataset: xr.Dataset, url: str) -> bool:
    """True when ``dataset`` carries a digest and it matches (False: none recorded); one line if not."""
    recorded = dataset.attrs.get(DIGEST_ATTR)
    if recorded is None:
        return False
    try:
        actual = data_digest(dataset)
    except Exception as exc:  # noqa: BLE001 - damaged arrays: say which file
        raise StefaLandError(f"{url}: cannot read its arrays ({type(exc).__name__}: {exc})") from exc
    if actual != str(recorded):
        raise StefaLandError(f"{url}: data sha256 is {actual} but the file recorded {recorded} when it was written "
                             f"({DIGEST_ATTR}): changed or damaged since; write it again")
    return True


# ------------------------------------------------------------------------------------ manifest

def verify_against_manifest(url: str) -> bool:
    """True when the ``manifest.json`` beside ``url`` lists it with the same sha256; False when no
    manifest covers it. One line when the sha256 differs, the manifest does not list it, or it sits
    in a run folder that never wrote its manifest (a fold that did not finish)."""
    folder, name = _parent(url)
    entries = read_manifest(folder)
    manifest = fileio.join(folder, MANIFEST)
    if entries is None:
        if fileio.exists(fileio.join(folder, RUN_RECORD)):
            raise StefaLandError(f"{url}: its run folder has {RUN_RECORD} but no {MANIFEST}, which a run writes last: "
                                 "the run did not finish; run it again (it resumes) before scoring it")
        return False
    if name.endswith(".zarr"):
        _check_zarr(url, name, entries, manifest)
    elif name in entries:
        _check_file(url, entries[name], manifest)
    else:
        raise StefaLandError(f"{url}: not listed in {manifest}: written after its run finished? run it again, or "
                             "move the file out of the run folder")
    return True


def _parent(url: str) -> tuple[str, str]:
    url = str(url).rstrip("/")
    return posixpath.dirname(url), posixpath.basename(url)


def _check_file(url: str, entry: dict, manifest: str) -> None:
    expected = str(entry.get("sha256"))
    try:
        actual = file_sha256(url)
    except FileNotFoundError:
        raise StefaLandError(f"{url}: listed in {manifest} but missing") from None
    if actual != expected:
        raise StefaLandError(f"{url}: sha256 is {actual} but {manifest} expects {expected}: changed or damaged "
                             "since its run wrote it; pull or run it again")


def _check_zarr(url: str, name: str, entries: dict[str, dict], manifest: str) -> None:
    """Every file of a predictions zarr as listed, and no file the manifest does not list."""
    listed = {path[len(name) + 1:]: entry for path, entry in entries.items() if path.startswith(name + "/")}
    if not listed:
        raise StefaLandError(f"{url}: not listed in {manifest}: written after its run finished? run it again, or "
                             "move it out of the run folder")
    extra = sorted(set(list_run_files(url)) - set(listed))
    if extra:
        raise StefaLandError(f"{url}: holds {extra[0]}, which {manifest} does not list: changed since its run wrote it")
    for relative, entry in sorted(listed.items()):
        _check_file(fileio.join(url, relative), entry, manifest)
