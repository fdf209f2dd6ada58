"""Export the frozen pretrained encoder's embeddings per site, for scikit-learn or any other model.

Why a separate export: the encoder is the reusable part of StefaLand. A user who wants to map a
soil property, cluster basins or feed another model should not need our finetuning code — only
arrays. ``embed`` runs the encoder once over a store and writes a zarr with

* ``static_embedding (site, feature)``: the static token, averaged over the site's windows
  (the token attends to the forcings too, so it is a summary of the site, not of the attributes
  alone);
* ``time_embedding (site, time, feature)``: the per-day tokens, the period cut into consecutive
  windows of ``window`` days (the encoder's positions stop at ``max_len``); the last window is
  aligned to the period's end and the days it shares with the one before take its values.

The inputs are z-scored with the **checkpoint's** statistics (the encoder learned on those), the
variables taken from the store by name in the pretraining order. See docs/EMBEDDINGS.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass

import dask.array
import numpy as np
import torch
import xarray as xr

from . import fileio
from .errors import StefaLandError
from .model import StefaLandEncoder
from .outputs import claim_output, remove_owned, write_marker
from .progress import progress
from .run.pretrained import PretrainedCheckpoint, load_by_name_and_shape, read_checkpoint
from .store import open_store, plain_strings, shard_slices

log = logging.getLogger("stefaland.embed")

COMPLETE_ATTR = "stefaland_complete"


@dataclass
class EmbedSummary:
    out: str
    n_sites: int
    n_time: int
    d_model: int
    window: int


def _stats(checkpoint: PretrainedCheckpoint, dataset: xr.Dataset, kind: str, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = getattr(checkpoint, f"{kind}_mean"), getattr(checkpoint, f"{kind}_std")
    if mean is None or std is None:  # an old checkpoint without its statistics: the store's own
        log.warning("%s: no %s statistics in the checkpoint; using the store's", checkpoint.url, kind)
        mean = np.asarray(dataset[f"{kind}_mean"].values, np.float64)[index]
        std = np.asarray(dataset[f"{kind}_std"].values, np.float64)[index]
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return np.asarray(mean, np.float64), std


def _columns(checkpoint: PretrainedCheckpoint, dataset: xr.Dataset, kind: str, dim: str, store: str) -> np.ndarray:
    available = [str(v) for v in dataset[dim].values]
    wanted = getattr(checkpoint, f"{kind}_vars")
    if wanted is None:
        return np.arange(len(available))
    missing = [name for name in wanted if name not in available]
    if missing:
        raise StefaLandError(
            f"{store}: {kind} variable {missing[0]!r} the encoder was pretrained on is not in the store "
            f"(it has: {', '.join(available)})"
        )
    return np.asarray([available.index(name) for name in wanted], dtype=np.int64)


def load_frozen_encoder(url: str) -> tuple[StefaLandEncoder, PretrainedCheckpoint]:
    """The encoder of a pretraining checkpoint (run folder or ``.pt``), every tensor loaded, in eval mode."""
    checkpoint = read_checkpoint(url)
    if checkpoint.config is None or checkpoint.dynamic_vars is None or checkpoint.static_vars is None:
        raise StefaLandError(f"{checkpoint.url}: not a pretraining checkpoint (no encoder config or variable list)")
    encoder = StefaLandEncoder(len(checkpoint.dynamic_vars), len(checkpoint.static_vars), checkpoint.config)
    report = load_by_name_and_shape(encoder, checkpoint.state_dict)
    if report.missing or report.mismatched:
        raise StefaLandError(
            f"{checkpoint.url}: encoder tensor {(report.missing or report.mismatched)[0]} not loadable from the checkpoint"
        )
    encoder.eval()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    return encoder, checkpoint


def window_starts(n_time: int, window: int) -> list[int]:
    """Consecutive windows covering ``n_time`` days; the last one ends on the last day."""
    starts = list(range(0, max(n_time - window, 0) + 1, window))
    if starts[-1] + window < n_time:
        starts.append(n_time - window)
    return starts


@torch.no_grad()
def embed_arrays(encoder: StefaLandEncoder, dynamic: np.ndarray, static: np.ndarray, window: int,
                 batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Z-scored ``dynamic (n, T, n_dyn)`` and ``static (n, n_static)`` → static (n, d), time (n, T, d)."""
    n, n_time = dynamic.shape[:2]
    d = encoder.config.d_model
    starts = window_starts(n_time, window)
    time_out = np.empty((n, n_time, d), dtype=np.float32)
    static_sum = np.zeros((n, d), dtype=np.float64)
    for first in range(0, n, batch_size):
        rows = slice(first, min(first + batch_size, n))
        s = torch.from_numpy(np.ascontiguousarray(static[rows], dtype=np.float32))  # (b, n_static)
        for start in starts:  # later windows overwrite the days they share with earlier ones
            x = torch.from_numpy(np.ascontiguousarray(dynamic[rows, start:start + window], dtype=np.float32))
            out = encoder(x, s)  # time_tokens (b, window, d), static_token (b, d)
            time_out[rows, start:start + window] = out.time_tokens.numpy()
            static_sum[rows] += out.static_token.numpy() / len(starts)
    return static_sum.astype(np.float32), time_out


def _site_coords(dataset: xr.Dataset) -> dict:
    coords = {"site": ("site", np.asarray(dataset["site"].values).astype(str).astype(object))}
    for name in ("lat", "lon", "region"):
        if name in dataset.coords:
            values = np.asarray(dataset[name].values)
            coords[name] = ("site", values.astype(str).astype(object) if values.dtype.kind in "OTU" else values)
    return coords


def _open_group(target: str):
    import zarr

    if fileio.is_remote(target):
        store = zarr.storage.FsspecStore.from_url(target, storage_options=fileio.storage_options_for(target))
        return zarr.open_group(store, mode="r+")
    return zarr.open_group(target, mode="r+")


def _write_zarr(target: str, template: xr.Dataset, pieces, chunk_sites: int, quiet: bool, total: int) -> None:
    """Metadata and coordinates first (flagged incomplete), then one site shard at a time, then the flag."""
    options = fileio.storage_options_for(target) if fileio.is_remote(target) else None
    encoding = {"static_embedding": {"chunks": (chunk_sites, template.sizes["feature"])},
                "time_embedding": {"chunks": (chunk_sites, template.sizes["time"], template.sizes["feature"])}}
    # mode "a": ``target`` holds only the output marker, which mode "w" would delete
    template.to_zarr(target, mode="a", compute=False, encoding=encoding, consolidated=False, zarr_format=3,
                     storage_options=options)
    group = _open_group(target)
    for rows, static_emb, time_emb in progress(pieces, "embedding shards", total=total, quiet=quiet):
        group["static_embedding"][rows.start:rows.stop] = static_emb
        group["time_embedding"][rows.start:rows.stop] = time_emb
    group.attrs[COMPLETE_ATTR] = True  # last write: complete from here on


def embed(checkpoint: str, store: str, out: str, window: int | None = None, batch_size: int = 16,
          start: str | None = None, end: str | None = None, hide: list[str] | None = None,
          quiet: bool = False, force: bool = False) -> EmbedSummary:
    """Write the embeddings of every site of ``store`` to the zarr ``out`` (local: temp dir + rename).

    ``hide``: input variables shown to the encoder as missing (its mask vector), so an embedding
    used to predict, say, clay carries no copy of the clay attribute itself. ``out`` is claimed
    first (:func:`stefaland.outputs.claim_output`): anything there that is not a StefaLand
    embedding is refused, a previous embedding is replaced only with ``force``.
    """
    out = str(out).rstrip("/") or str(out)
    with claim_output(out, "embed", force=force) as claim:
        return _embed(checkpoint, store, out, window, batch_size, start, end, hide, quiet, claim.existed)


def _embed(checkpoint: str, store: str, out: str, window: int | None, batch_size: int, start: str | None,
           end: str | None, hide: list[str] | None, quiet: bool, replace: bool) -> EmbedSummary:
    encoder, ckpt = load_frozen_encoder(checkpoint)
    assert ckpt.dynamic_vars is not None and ckpt.static_vars is not None  # load_frozen_encoder refuses one without
    dataset = open_store(store)
    if start or end:
        dataset = dataset.sel(time=slice(start, end))
    n_time = int(dataset.sizes["time"])
    if n_time == 0:
        raise StefaLandError(f"{store}: no days in {start}..{end}")
    window = int(window or encoder.config.max_len)
    if not 1 <= window <= encoder.config.max_len:
        raise StefaLandError(f"--window {window} must be between 1 and the encoder's max_len {encoder.config.max_len}")
    window = min(window, n_time)
    d_idx = _columns(ckpt, dataset, "dynamic", "dvar", store)
    s_idx = _columns(ckpt, dataset, "static", "svar", store)
    d_mean, d_std = _stats(ckpt, dataset, "dynamic", d_idx)
    s_mean, s_std = _stats(ckpt, dataset, "static", s_idx)
    hide = list(hide or [])
    unknown = [name for name in hide if name not in ckpt.dynamic_vars and name not in ckpt.static_vars]
    if unknown:
        raise StefaLandError(f"--hide {unknown[0]!r} is not an input of the encoder")
    d_hidden = [ckpt.dynamic_vars.index(n) for n in hide if n in ckpt.dynamic_vars]
    s_hidden = [ckpt.static_vars.index(n) for n in hide if n in ckpt.static_vars]
    slices = shard_slices(dataset)

    def pieces():
        for rows in slices:
            part = dataset.isel(site=rows)
            dyn = (part["dynamic"].values[..., d_idx].astype(np.float64) - d_mean) / d_std  # (n, T, n_dyn)
            sta = (part["static"].values[..., s_idx].astype(np.float64) - s_mean) / s_std  # (n, n_static)
            dyn[..., d_hidden] = np.nan
            sta[..., s_hidden] = np.nan
            yield (rows, *embed_arrays(encoder, dyn, sta, window, batch_size))

    attrs = {"checkpoint": ckpt.url, "store": str(store), "window": window, "d_model": encoder.config.d_model,
             "dynamic_vars": list(ckpt.dynamic_vars), "static_vars": list(ckpt.static_vars), "hidden": hide,
             "provenance": dict(dataset.attrs.get("provenance", {}) or {})}
    chunk = int(slices[0].stop - slices[0].start)
    n_site, d = int(dataset.sizes["site"]), encoder.config.d_model
    template = xr.Dataset(
        {"static_embedding": (("site", "feature"), dask.array.zeros((n_site, d), chunks=(chunk, d), dtype=np.float32)),
         "time_embedding": (("site", "time", "feature"),
                            dask.array.zeros((n_site, n_time, d), chunks=(chunk, n_time, d), dtype=np.float32))},
        coords={**_site_coords(dataset), "time": dataset["time"].values, "feature": np.arange(d)},
        attrs={**attrs, COMPLETE_ATTR: False},
    )
    if fileio.is_remote(out):
        if replace:
            remove_owned(out)  # a StefaLand embedding (the claim checked its marker)
        write_marker(out, "embed")
        _write_zarr(out, template, pieces(), chunk, quiet, len(slices))
    else:
        parent = os.path.dirname(os.path.abspath(out))
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-", suffix=".zarr")
        try:
            write_marker(tmp, "embed")
            _write_zarr(tmp, template, pieces(), chunk, quiet, len(slices))
            if os.path.lexists(out):
                remove_owned(out)  # ours (the claim checked its marker), or an empty folder
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return EmbedSummary(str(out), int(dataset.sizes["site"]), n_time, encoder.config.d_model, window)


def open_embeddings(url: str) -> xr.Dataset:
    """Open an embeddings zarr; refuse one whose export was interrupted."""
    options = fileio.storage_options_for(url) if fileio.is_remote(url) else None
    try:
        dataset = xr.open_zarr(url, consolidated=False, storage_options=options)
    except (FileNotFoundError, KeyError) as exc:
        raise StefaLandError(f"{url}: no embeddings zarr found") from exc
    if dataset.attrs.get(COMPLETE_ATTR) is not True:
        raise StefaLandError(f"{url}: embeddings are incomplete (the export was interrupted); run 'stefaland embed' again")
    return plain_strings(dataset)
