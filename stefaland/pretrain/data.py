"""Pretraining samples, read from the store one shard at a time.

The store is never materialised: each *lane* (an independent stream of shards) holds only the
shard it is currently sampling from, so memory is bounded by the shard size, not by the number
of sites. An epoch visits every shard once, in an order reshuffled per epoch.

Every random choice — the shard order, the sites and windows of a batch, its masks — is drawn
from a generator seeded by ``(seed, epoch, step, lane)``. A resumed run therefore re-enters the
same shard at the same position, and a run on N processes (each serving some lanes) draws the
same global batch as a run on one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import xarray as xr

from ..errors import StefaLandError
from ..run.folds import coordinate_folds, folds_of_sites, store_sites
from ..run.variables import variable_columns
from ..store import read_shard, shard_slices
from .config import PretrainConfig
from .masking import StaticGrouping, dynamic_mask, static_mask

TRAIN_STREAM, EVAL_STREAM = 0, 1


@dataclass
class StoreSchema:
    """The variables a run trains on and the statistics it normalises with (saved in run.json)."""

    url: str
    dynamic_vars: list[str]
    static_vars: list[str]
    dynamic_groups: list[str]
    static_groups: list[str]
    static_never_mask: list[bool]
    dynamic_mean: list[float]
    dynamic_std: list[float]
    static_mean: list[float]
    static_std: list[float]
    n_sites: int
    n_time: int
    time_start: str
    time_end: str
    shard_size: int
    n_shards: int
    provenance: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def _names(dataset: xr.Dataset, dim: str) -> list[str]:
    return [str(v) for v in dataset[dim].values]


def _coord(dataset: xr.Dataset, name: str, default: object, size: int) -> list:
    if name in dataset.coords:
        return [v.item() if hasattr(v, "item") else v for v in dataset[name].values]
    return [default] * size


def _statistics(dataset: xr.Dataset, block: str, index: list[int], names: list[str], url: str) -> tuple[list[float], list[float]]:
    for key in (f"{block}_mean", f"{block}_std"):
        if key not in dataset:
            raise StefaLandError(f"{url}: store has no '{key}' statistics (was its build finished?)")
    mean = np.asarray(dataset[f"{block}_mean"].values, dtype=np.float64)[index]
    std = np.asarray(dataset[f"{block}_std"].values, dtype=np.float64)[index]
    for name, m, s in zip(names, mean, std):
        if not (np.isfinite(m) and np.isfinite(s)):
            raise StefaLandError(f"{url}: {block} variable '{name}' has no finite mean/std (is it all missing?)")
    std = np.where(std > 0, std, 1.0)  # a constant variable: z-scores of 0, not a division by zero
    return mean.tolist(), std.tolist()


def store_schema(dataset: xr.Dataset, config: PretrainConfig, url: str) -> StoreSchema:
    """Resolve the run's variables against the store and check the config fits it."""
    dvars, svars = _names(dataset, "dvar"), _names(dataset, "svar")
    d_names, d_index = variable_columns(dvars, config.data.dynamic_vars, "dynamic", url)
    s_names, s_index = variable_columns(svars, config.data.static_vars, "static", url)
    if not d_index or not s_index:
        raise StefaLandError(f"{url}: pretraining needs at least one dynamic and one static variable")
    never = [bool(v) for v in _coord(dataset, "svar_never_mask", False, len(svars))]
    for name in config.masking.never_mask:
        if name not in svars:
            raise StefaLandError(f"config masking.never_mask: '{name}' is not a static variable of {url}")
        never[svars.index(name)] = True
    dgroups = [str(v or "") for v in _coord(dataset, "dvar_group", "", len(dvars))]
    sgroups = [str(v or "") for v in _coord(dataset, "svar_group", "", len(svars))]
    time = dataset["time"]
    if config.data.start or config.data.end:
        time = time.sel(time=slice(config.data.start, config.data.end))
    if time.size < config.data.seq_len:
        raise StefaLandError(
            f"{url}: data.seq_len {config.data.seq_len} exceeds the {time.size} days available in the training period"
        )
    d_mean, d_std = _statistics(dataset, "dynamic", d_index, d_names, url)
    s_mean, s_std = _statistics(dataset, "static", s_index, s_names, url)
    slices = shard_slices(dataset)
    return StoreSchema(
        url=url, dynamic_vars=d_names, static_vars=s_names,
        dynamic_groups=[dgroups[i] for i in d_index], static_groups=[sgroups[i] for i in s_index],
        static_never_mask=[never[i] for i in s_index],
        dynamic_mean=d_mean, dynamic_std=d_std, static_mean=s_mean, static_std=s_std,
        n_sites=int(dataset.sizes["site"]), n_time=int(time.size),
        time_start=str(np.datetime_as_string(time.values[0], unit="D")),
        time_end=str(np.datetime_as_string(time.values[-1], unit="D")),
        shard_size=int(slices[0].stop - slices[0].start), n_shards=len(slices),
        provenance=dict(dataset.attrs.get("provenance", {}) or {}),
    )


@dataclass
class MaskedBatch:
    """One (local) pretraining batch, already normalised, with the CVGM masks: what the model and the loss consume.

    Not finetuning's :class:`stefaland.finetune.data.WindowBatch` (tensors with a target): the two
    stages' batches share only the input arrays, so each has its own name.
    """

    dynamic: np.ndarray  # (B, T, n_dynamic) float32 z-scores, NaN = missing
    static: np.ndarray  # (B, n_static) float32
    dynamic_mask: np.ndarray  # (B, T, n_dynamic) bool, True = hidden by CVGM
    static_mask: np.ndarray  # (B, n_static) bool
    lanes: list[int]  # the lanes, in order, each contributing an equal slice of the batch


@dataclass
class _LoadedShard:
    index: int
    dynamic: np.ndarray  # (n_sites, n_time, n_dynamic) float32 z-scores
    static: np.ndarray  # (n_sites, n_static) float32 z-scores


class ShardBatches:
    """Batches for the lanes one process serves; holds at most one shard per lane in memory."""

    def __init__(self, dataset: xr.Dataset, schema: StoreSchema, config: PretrainConfig,
                 rank: int = 0, world_size: int = 1) -> None:
        self.dataset, self.schema, self.config = dataset, schema, config
        self.n_lanes = max(config.data.lanes, world_size)
        if self.n_lanes % world_size:
            raise StefaLandError(f"data.lanes ({config.data.lanes}) must be a multiple of the number of processes ({world_size})")
        if config.data.batch_size % self.n_lanes:
            raise StefaLandError(f"data.batch_size ({config.data.batch_size}) must be a multiple of the {self.n_lanes} lanes")
        if schema.n_shards < self.n_lanes:
            raise StefaLandError(f"{schema.url}: the store has {schema.n_shards} shards, fewer than the {self.n_lanes} lanes/processes")
        self.lanes = list(range(rank, self.n_lanes, world_size))
        self.per_lane = config.data.batch_size // self.n_lanes
        self.steps_per_epoch = max(1, math.ceil(schema.n_sites * config.data.samples_per_site / config.data.batch_size))
        self.grouping = StaticGrouping.from_metadata(schema.static_groups, schema.static_never_mask)
        self._d_index = [list(map(str, dataset["dvar"].values)).index(v) for v in schema.dynamic_vars]
        self._s_index = [list(map(str, dataset["svar"].values)).index(v) for v in schema.static_vars]
        self._d_mean = np.asarray(schema.dynamic_mean, np.float32)
        self._d_std = np.asarray(schema.dynamic_std, np.float32)
        self._s_mean = np.asarray(schema.static_mean, np.float32)
        self._s_std = np.asarray(schema.static_std, np.float32)
        self._time = slice(config.data.start, config.data.end) if (config.data.start or config.data.end) else None
        self._loaded: dict[int, _LoadedShard] = {}
        self.shards_loaded = 0  # how many shard reads happened (tests check lazy loading)
        self._keep = _kept_sites(dataset, config.data.exclude, schema.url)

    def shard_order(self, epoch: int, stream: int = TRAIN_STREAM) -> list[list[int]]:
        """Per lane, the shards it visits this epoch (all shards once over all lanes)."""
        order = np.random.default_rng([self.config.train.seed, stream, epoch]).permutation(self.schema.n_shards)
        return [order[lane :: self.n_lanes].tolist() for lane in range(self.n_lanes)]

    def shard_for(self, epoch: int, step: int, lane: int, stream: int = TRAIN_STREAM) -> int:
        shards = self.shard_order(epoch, stream)[lane]
        if stream == EVAL_STREAM:
            return shards[step % len(shards)]
        return shards[step * len(shards) // self.steps_per_epoch]  # contiguous blocks of steps per shard

    def _shard(self, lane: int, index: int) -> _LoadedShard:
        loaded = self._loaded.get(lane)
        if loaded is None or loaded.index != index:
            self._loaded.pop(lane, None)  # drop the old shard before reading the next
            raw = read_shard(self.dataset, index, time=self._time)
            keep = self._keep[shard_slices(self.dataset)[index]]
            if not keep.any():
                raise StefaLandError(f"{self.schema.url}: shard {index} holds only excluded (held-out) sites; "
                                     "rebuild the store with larger shards")
            dynamic = (raw.dynamic[keep][:, :, self._d_index] - self._d_mean) / self._d_std
            static = (raw.static[keep][:, self._s_index] - self._s_mean) / self._s_std
            loaded = _LoadedShard(index, dynamic.astype(np.float32), static.astype(np.float32))
            self._loaded[lane] = loaded
            self.shards_loaded += 1
        return loaded

    def _lane_batch(self, epoch: int, step: int, lane: int, stream: int) -> tuple[np.ndarray, ...]:
        shard = self._shard(lane, self.shard_for(epoch, step, lane, stream))
        rng = np.random.default_rng([self.config.train.seed, stream, epoch, step, lane])
        seq_len, n = self.config.data.seq_len, self.per_lane
        sites = rng.integers(0, shard.dynamic.shape[0], n)
        starts = rng.integers(0, shard.dynamic.shape[1] - seq_len + 1, n)
        days = starts[:, None] + np.arange(seq_len)  # (b, T)
        dynamic = shard.dynamic[sites[:, None], days]  # (b, T, n_dynamic)
        static = shard.static[sites]  # (b, n_static)
        masking = self.config.masking
        d_mask = dynamic_mask(rng, n, seq_len, dynamic.shape[-1], masking.dynamic_ratio,
                              masking.min_window, masking.max_window)
        s_mask = static_mask(rng, n, self.grouping, masking.static_ratio)
        return dynamic, static, d_mask, s_mask

    def batch(self, epoch: int, step: int, stream: int = TRAIN_STREAM) -> MaskedBatch:
        parts = [self._lane_batch(epoch, step, lane, stream) for lane in self.lanes]
        dynamic, static, d_mask, s_mask = (np.concatenate(block) for block in zip(*parts))
        return MaskedBatch(dynamic, static, d_mask, s_mask, list(self.lanes))

    def eval_batch(self, index: int) -> MaskedBatch:
        """A fixed batch (same windows and masks every epoch) to compare checkpoints on."""
        return self.batch(epoch=0, step=index, stream=EVAL_STREAM)


def _kept_sites(dataset: xr.Dataset, exclude, url: str) -> np.ndarray:
    """Boolean per store site: False for the held-out fold that pretraining must not see."""
    if exclude is None:
        return np.ones(dataset.sizes["site"], dtype=bool)
    folds: np.ndarray | None
    if exclude.split_file:
        from ..splits import read_split

        split = read_split(exclude.split_file)
        if split.scheme and split.scheme != exclude.split:  # a PUB file excluding a "pur" fold: the wrong sites
            raise StefaLandError(f"{exclude.split_file}: split file scheme is {split.scheme!r} but data.exclude.split "
                                 f"is {exclude.split!r}; give the split file of that scheme")
        folds = folds_of_sites(store_sites(dataset), split.folds)
    else:
        folds = coordinate_folds(dataset, exclude.split)
        if folds is None:
            raise StefaLandError(f"{url}: data.exclude names split {exclude.split!r}, but the store has no "
                                 f"fold_{exclude.split} coordinate; give data.exclude.split_file")
    if not (folds == exclude.fold).any():
        raise StefaLandError(f"{url}: data.exclude: no site is in fold {exclude.fold} of {exclude.split}")
    return folds != exclude.fold
