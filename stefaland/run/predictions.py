"""The predictions file: the public contract between any model and ``stefaland report``.

A NetCDF (``.nc``) or zarr (``.zarr``) dataset with dims ``(site, time)`` -- or ``(site,)`` for a
static target -- holding ``obs`` and ``sim`` (optionally ensemble members ``sim_<member>``), the
optional site coordinates ``lat``/``lon``, and the attributes ``task``, ``split``, ``fold``,
``model`` and ``units`` (plus optional ``variable``). ``docs/PREDICTIONS.md`` is the user-facing
description; this module writes and validates it so the two cannot drift apart.

Files written here also carry ``stefaland_data_sha256`` (:mod:`stefaland.run.predictions_verify`), checked
whenever they are opened; their temp files never outlive a killed writer (:mod:`.atomic`).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.outputs import read_marker
from stefaland.run import atomic_file as atomic
from stefaland.run.predictions_verify import UNVERIFIED, VERIFIED_DIGEST, check_digest, with_digest

log = logging.getLogger(__name__)

REQUIRED_ATTRS = ("task", "split", "fold", "model", "units")
SUFFIXES = (".nc", ".nc4", ".zarr")
COMPLETE_ATTR = "stefaland_complete"


def write_predictions(
    path_or_url: str,
    obs: np.ndarray,
    sim: np.ndarray,
    sites: Sequence[str],
    times: Sequence[Any] | None,
    task: str,
    split: str,
    fold: str | int,
    model: str,
    units: str,
    lat: Sequence[float] | np.ndarray | None = None,
    lon: Sequence[float] | np.ndarray | None = None,
    variable: str | None = None,
    members: dict[str, np.ndarray] | None = None,
) -> str:
    """Write one (model, fold) predictions file, never leaving a half-written one behind.

    ``times=None`` (and 1-D ``obs``/``sim``) writes a static target with dims ``(site,)``.
    Local NetCDF and zarr are written beside the target and renamed into place; an S3 NetCDF is one
    PUT (atomic by itself); an S3 zarr carries ``stefaland_complete = False`` until its last write.
    """
    url = str(path_or_url)
    dataset = predictions_dataset(obs, sim, sites, times, task, split, fold, model, units, lat, lon,
                                  variable, members)
    if url.endswith(".zarr"):
        _write_zarr(dataset, url)
    elif url.endswith((".nc", ".nc4")):
        _write_netcdf(dataset, url)
    else:
        raise StefaLandError(f"{url}: a predictions file must end in .nc or .zarr")
    log.info("wrote predictions %s (%s, %s/%s fold %s, %d sites)", url, model, task, split, fold, len(sites))
    return url


def predictions_dataset(obs, sim, sites, times, task, split, fold, model, units, lat=None, lon=None,
                        variable=None, members=None) -> xr.Dataset:
    """The in-memory form of a predictions file (validated on the way in, like on the way out)."""
    sites = [str(s) for s in sites]
    dims: tuple[str, ...] = ("site",) if times is None else ("site", "time")
    coords: dict[str, Any] = {"site": np.asarray(sites, dtype=object)}
    if times is not None:
        coords["time"] = pd.DatetimeIndex(times)
    shape = tuple(len(coords[d]) for d in dims)
    data_vars: dict[str, Any] = {}
    for name, values in {"obs": obs, "sim": sim, **{f"sim_{k}": v for k, v in (members or {}).items()}}.items():
        array = np.asarray(values, dtype=np.float32)
        if array.shape != shape:
            raise StefaLandError(f"predictions {name}: shape {array.shape} does not match {dims} = {shape}")
        data_vars[name] = (dims, array, {"units": units})
    for name, values in (("lat", lat), ("lon", lon)):
        if values is not None:
            coords[name] = ("site", np.asarray(values, dtype=np.float64))
    attrs = {"task": task, "split": split, "fold": str(fold), "model": model, "units": units}
    if variable:
        attrs["variable"] = variable
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _write_netcdf(dataset: xr.Dataset, url: str) -> None:
    """Via a temporary file: h5netcdf writes a file several times faster than an in-memory image.

    The temp file is named after this writer and never outlives it (:mod:`stefaland.run.atomic_file`)."""
    dataset = with_digest(dataset)
    remote = fileio.is_remote(url)
    parent = tempfile.gettempdir() if remote else os.path.dirname(os.path.abspath(url))
    os.makedirs(parent, exist_ok=True)
    with atomic.writing(atomic.temp_path(parent, ".nc")) as tmp:
        dataset.to_netcdf(tmp, engine="h5netcdf")
        if remote:
            with open(tmp, "rb") as handle:
                fileio.write_bytes_atomic(url, handle.read())
        else:
            os.chmod(tmp, 0o644)
            os.replace(tmp, url)


def _write_zarr(dataset: xr.Dataset, url: str) -> None:
    dataset = with_digest(dataset)
    if fileio.is_remote(url):
        fileio.remove(url)
        pending = dataset.assign_attrs({COMPLETE_ATTR: 0})
        options = fileio.storage_options_for(url)
        pending.to_zarr(url, mode="w", consolidated=False, storage_options=options)
        import zarr

        store = zarr.storage.FsspecStore.from_url(url, storage_options=options)
        zarr.open_group(store, mode="r+").attrs[COMPLETE_ATTR] = 1  # last write: complete from here on
        return
    parent = os.path.dirname(os.path.abspath(url))
    os.makedirs(parent, exist_ok=True)
    with atomic.writing(atomic.temp_path(parent, ".zarr")) as tmp:
        dataset.assign_attrs({COMPLETE_ATTR: 1}).to_zarr(tmp, mode="w", consolidated=False)
        if os.path.exists(url):  # replacing: move the old one aside first, then drop it
            old = f"{url}.old-{uuid.uuid4().hex[:8]}"
            os.replace(url, old)
            os.replace(tmp, url)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, url)


@dataclass
class Found:
    """What a search for predictions found: candidate files, and what it passed over (path, why)."""

    files: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def list_prediction_files(runs: str) -> list[str]:
    """Every predictions file under a folder (recursively), matching a glob, or the file itself."""
    return find_prediction_files(runs).files


def find_prediction_files(runs: str) -> Found:
    """Candidate predictions files under ``runs``; zarr folders that are another StefaLand output
    (the store the runs were trained on, embeddings: their marker says so) are passed over."""
    runs = str(runs)
    fs, path = fileio.filesystem(runs)
    prefix = runs.split("://", 1)[0] + "://" if fileio.is_remote(runs) else ""
    if any(ch in path for ch in "*?["):
        found = sorted(fs.glob(path))
    elif fs.isfile(path) or path.rstrip("/").endswith(".zarr"):
        found = [path]
    elif fs.isdir(path):
        found = sorted(fs.find(path, withdirs=True))
    else:
        raise StefaLandError(f"{runs}: no such folder, file or glob match for predictions")
    result = Found()
    for item in found:
        item = item.rstrip("/")
        name = item.rsplit("/", 1)[-1]
        inside_zarr = any(part.endswith(".zarr") for part in item.split("/")[:-1])
        if name.startswith(atomic.TEMP_PREFIX) or ".old-" in name or inside_zarr or not name.endswith(SUFFIXES):
            continue
        url = prefix + item if prefix and not item.startswith(prefix) else item
        marker = read_marker(url) if name.endswith(".zarr") else None
        if marker is not None:
            result.skipped.append((url, f"a StefaLand {marker['stefaland_output']} output"))
            log.info("%s: skipped, a StefaLand %s output, not predictions", url, marker["stefaland_output"])
            continue
        result.files.append(url)
    return result


def _open_dataset(url: str) -> xr.Dataset:
    try:
        if url.rstrip("/").endswith(".zarr"):
            return xr.open_zarr(url, storage_options=fileio.storage_options_for(url) or None, consolidated=False)
        if fileio.is_remote(url):
            return xr.open_dataset(io.BytesIO(fileio.read_bytes(url)))
        return xr.open_dataset(url)
    except StefaLandError:
        raise
    except Exception as exc:  # a corrupt or foreign file: say which one
        raise StefaLandError(f"{url}: cannot be read as a predictions dataset ({type(exc).__name__}: {exc})") from exc


def open_predictions(url: str) -> xr.Dataset:
    """Open and validate one predictions file lazily (attributes first, arrays on ``.load()``);
    a file that records its data digest is checked against it (which reads its arrays)."""
    url = str(url)
    return _checked(_open_dataset(url), url)


def open_if_predictions(url: str) -> xr.Dataset | None:
    """:func:`open_predictions`, or None for a dataset that is no predictions file at all: no
    ``obs``, ``sim`` nor ``sim_<member>`` variable (HBV fluxes beside predict's output, a store
    without a marker). One that has some of them and breaks the contract is still one line."""
    url = str(url)
    dataset = _open_dataset(url)
    if not any(str(v) in ("obs", "sim") or str(v).startswith("sim_") for v in dataset.data_vars):
        dataset.close()
        return None
    return _checked(dataset, url)


def _checked(dataset: xr.Dataset, url: str) -> xr.Dataset:
    verified = check_digest(dataset, url)
    dataset = validate_predictions(dataset, url)
    dataset.attrs["verified"] = VERIFIED_DIGEST if verified else UNVERIFIED
    return dataset


def read_predictions(url: str) -> xr.Dataset:
    """Open, validate and load one predictions file; every problem is one line naming the file."""
    dataset = open_predictions(url)
    try:
        return dataset.load()
    except Exception as exc:
        raise StefaLandError(f"{url}: cannot read its arrays ({type(exc).__name__}: {exc})") from exc


def validate_predictions(dataset: xr.Dataset, url: str) -> xr.Dataset:
    """Check the contract and normalise it (string sites and fold, ``sim`` from members if absent)."""
    if COMPLETE_ATTR in dataset.attrs and not dataset.attrs[COMPLETE_ATTR]:
        raise StefaLandError(f"{url}: incomplete predictions store (interrupted write?); write it again")
    missing = [a for a in REQUIRED_ATTRS if a not in dataset.attrs]
    if missing:
        raise StefaLandError(f"{url}: missing attribute(s) {', '.join(missing)} (required: {', '.join(REQUIRED_ATTRS)})")
    if "obs" not in dataset:
        raise StefaLandError(f"{url}: no variable 'obs'")
    members = sorted(str(v) for v in dataset.data_vars if str(v).startswith("sim_"))
    if "sim" not in dataset:
        if not members:
            raise StefaLandError(f"{url}: no variable 'sim' (nor ensemble members 'sim_<member>')")
        log.info("%s: no 'sim'; scoring the mean of %d members", url, len(members))
        dataset["sim"] = xr.concat([dataset[m] for m in members], dim="member").mean("member")
    for name in ["obs", "sim", *members]:
        dims = dataset[name].dims
        if dims not in (("site", "time"), ("site",)):
            raise StefaLandError(f"{url}: variable {name!r} has dims {dims}; expected ('site', 'time') or ('site',)")
    if dataset["obs"].dims != dataset["sim"].dims:
        raise StefaLandError(f"{url}: 'obs' dims {dataset['obs'].dims} differ from 'sim' dims {dataset['sim'].dims}")
    if "time" in dataset.dims:
        dataset = _checked_time(dataset, url)
    sites = pd.Index([str(s) for s in dataset["site"].values])
    if sites.has_duplicates:
        raise StefaLandError(f"{url}: site {sites[sites.duplicated()][0]} appears more than once")
    dataset = dataset.assign_coords(site=np.asarray(sites, dtype=object))
    dataset.attrs["fold"] = str(dataset.attrs["fold"])
    for name in ("task", "split"):  # "PUB" and "pub" name the same scheme
        dataset.attrs[name] = str(dataset.attrs[name]).strip().lower()
    dataset.attrs.setdefault("variable", "")
    dataset.attrs["source"] = url
    return dataset


def _checked_time(dataset: xr.Dataset, url: str) -> xr.Dataset:
    """A time axis of unique datetimes, in order: scores pair steps by position across files, and
    integers or strings (or a repeated day) otherwise fail deep inside the join with a traceback."""
    if "time" not in dataset.coords:
        raise StefaLandError(f"{url}: dimension 'time' has no coordinate; give it datetime64 values")
    values = dataset["time"].values
    if not np.issubdtype(values.dtype, np.datetime64):
        example = values[0] if values.size else "none"
        raise StefaLandError(f"{url}: the time axis is not datetimes (dtype {values.dtype}, first value {example!r}); "
                             "write datetime64 values (CF units such as 'days since 1980-01-01')")
    index = pd.DatetimeIndex(values)
    if index.has_duplicates:
        repeated = index[index.duplicated()][0]
        raise StefaLandError(f"{url}: time {repeated.date()} appears more than once; write one step per time")
    if not index.is_monotonic_increasing:
        dataset = dataset.sortby("time")
    return dataset
