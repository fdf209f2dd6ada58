"""A shard of a lazy gridded extraction is culled before it is computed (benchmarks/README.md,
"Global 0.1° gridded build"): slicing one shard out of ``extract_to_sites(..., site_chunk=...)``
keeps the graph of every shard, which a distributed client would serialise and ship whole. The
graph handed to ``compute`` must hold only the shard's tasks, and give the same values, bit for bit."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from stefaland.catalog.readers import SourceReader
from stefaland.catalog.spec import CatalogSpec, SourceSpec, VariableSpec
from stefaland.gridded import compute_shard, cull_shard, extract_to_sites

SHARD = 3
N_SITES = 12  # 4 shards


def n_tasks(obj) -> int:
    return len(dict(obj.__dask_graph__()))


def _field(block_id=None) -> np.ndarray:
    """A chunk of a deterministic, irregular field (no two neighbouring cells or days equal)."""
    t, i, j = block_id
    day = np.arange(t * 10, t * 10 + 10)[:, None, None]
    row = np.arange(i * 4, i * 4 + 4)[None, :, None]
    col = np.arange(j * 4, j * 4 + 4)[None, None, :]
    return np.sin(0.37 * day + 0.11 * row * row) + 1.7 * np.cos(0.05 * col * row) + 0.001 * day * col


@pytest.fixture()
def grid() -> xr.Dataset:
    """30 days × 16 × 16 cells, chunks of 10 days × 4 × 4 cells (36 chunks), never in memory."""
    data = da.map_blocks(_field, chunks=((10,) * 3, (4,) * 4, (4,) * 4), dtype=np.float64, name="toy-field")
    return xr.Dataset({"v": (("time", "lat", "lon"), data, {"units": "m"})},
                      coords={"time": pd.date_range("2000-01-01", periods=30), "lat": -7.5 + np.arange(16.0),
                              "lon": 100.5 + np.arange(16.0)})


@pytest.fixture()
def sites() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"site": [f"s{k:02d}" for k in range(N_SITES)], "lat": rng.uniform(-8, 8, N_SITES),
                         "lon": rng.uniform(100, 116, N_SITES)})


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
def test_a_shard_is_culled_to_its_own_tasks(grid: xr.Dataset, sites: pd.DataFrame, method: str) -> None:
    lazy = extract_to_sites(grid, sites, method, ["v"], None, "toy", site_chunk=SHARD)["v"]
    assert lazy.data.chunks[0] == (SHARD,) * (N_SITES // SHARD)
    whole = n_tasks(lazy.data)
    shard = lazy.isel(site=slice(SHARD, 2 * SHARD))
    # the problem: slicing keeps every shard's tasks in the graph
    assert n_tasks(shard.data) >= whole
    culled = cull_shard(shard)
    assert isinstance(culled, xr.DataArray) and isinstance(culled.data, da.Array)
    # the fix: a quarter of the sites, at most a quarter of the tasks ...
    assert n_tasks(culled.data) * (N_SITES // SHARD) <= whole
    # ... and no more than an extraction of only those sites, before any culling
    alone = extract_to_sites(grid, sites.iloc[SHARD:2 * SHARD], method, ["v"], None, "toy", site_chunk=SHARD)["v"]
    assert n_tasks(culled.data) <= n_tasks(alone.data)
    # same values, bit for bit: culled, un-culled, the whole extraction sliced, the shard alone
    with dask.config.set(scheduler="synchronous"):
        got = culled.values
        assert np.array_equal(got, shard.values)
        assert np.array_equal(got, lazy.values[SHARD:2 * SHARD])
        assert np.array_equal(got, alone.values)
        assert np.array_equal(got, compute_shard(shard).values)
    assert got.shape == (SHARD, 30) and np.isfinite(got).all()
    xr.testing.assert_identical(culled.compute(scheduler="synchronous"), shard.compute(scheduler="synchronous"))


def test_numpy_data_passes_through(sites: pd.DataFrame) -> None:
    grid = xr.Dataset({"v": (("lat", "lon"), np.arange(16.0 * 16).reshape(16, 16), {"units": "m"})},
                      coords={"lat": -7.5 + np.arange(16.0), "lon": 100.5 + np.arange(16.0)})
    eager = extract_to_sites(grid, sites, "nearest", ["v"], None, "toy")
    assert cull_shard(eager) is eager
    xr.testing.assert_identical(compute_shard(eager), eager)


class _GridSource:
    def __init__(self, ds: xr.Dataset) -> None:
        self.ds = ds

    def to_dask(self) -> xr.Dataset:
        return self.ds


def test_the_build_reader_computes_a_culled_shard(grid: xr.Dataset, sites: pd.DataFrame,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``SourceReader.read`` (what ``data build`` calls per shard) hands ``compute`` the shard's tasks only."""
    spec = SourceSpec(name="grid", role="dynamic", variables=(VariableSpec("grid_v", "v", "m"),),
                      gridded={"method": "nearest"}, grid_variables=("v",))
    catalog = CatalogSpec(url="memory", sha256="", dataset="toy", sites_source="sites", start=None, end=None,
                          sources={"grid": spec}, catalog={"grid": _GridSource(grid)})
    table = sites.set_index("site")
    reader = SourceReader(catalog, spec, table, shard_size=SHARD)
    whole = n_tasks(reader._data())
    handed: list[int] = []
    compute = xr.Dataset.compute

    def recording(self, **kwargs):
        handed.append(n_tasks(self) if dask.is_dask_collection(self) else 0)
        return compute(self, **kwargs)

    time = pd.date_range("2000-01-01", periods=30)
    shard_sites = list(table.index[2 * SHARD:3 * SHARD])
    with dask.config.set(scheduler="synchronous"):
        unculled = reader._data()[["v"]].reindex(site=shard_sites).reindex(time=time).compute()
        monkeypatch.setattr(xr.Dataset, "compute", recording)
        got = reader.read(shard_sites, time)
    assert handed and 0 < handed[-1] and handed[-1] * (N_SITES // SHARD) <= whole
    xr.testing.assert_identical(got, unculled)
    assert np.array_equal(got["v"].values, unculled["v"].values)
    assert list(got["site"].values) == shard_sites and np.isfinite(got["v"].values).all()


def test_culled_shard_on_a_distributed_client(grid: xr.Dataset, sites: pd.DataFrame) -> None:
    """The distributed path, where the un-culled graph is the costly one: same values, bit for bit."""
    from distributed import Client

    lazy = extract_to_sites(grid, sites, "bilinear", ["v"], None, "toy", site_chunk=SHARD)
    shard = lazy.isel(site=slice(0, SHARD))
    with dask.config.set(scheduler="synchronous"):
        expected = shard.compute()
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0"):
        got = compute_shard(shard)
    xr.testing.assert_identical(got, expected)
    assert np.array_equal(got["v"].values, expected["v"].values)


# --------------------------------------------------------------------------- one task per shard, spatial order


def test_compute_shards_without_a_client_equals_compute_shard(grid: xr.Dataset, sites: pd.DataFrame) -> None:
    from stefaland.gridded import compute_shards

    lazy = extract_to_sites(grid, sites, "bilinear", ["v"], None, "toy", site_chunk=SHARD)["v"]
    shards = [lazy.isel(site=slice(s, s + SHARD)) for s in range(0, N_SITES, SHARD)]
    with dask.config.set(scheduler="synchronous"):
        got = list(compute_shards(shards, client=None))
        expected = [compute_shard(shard) for shard in shards]
    assert len(got) == len(expected) == N_SITES // SHARD
    for a, b in zip(got, expected):
        xr.testing.assert_identical(a, b)


def test_compute_shards_on_a_client_one_task_per_shard(grid: xr.Dataset, sites: pd.DataFrame) -> None:
    """Each shard is a single task on the cluster, results come back in shard order, bit for bit."""
    from distributed import Client

    from stefaland.gridded import compute_shards

    lazy = extract_to_sites(grid, sites, "nearest", ["v"], None, "toy", site_chunk=SHARD)["v"]
    shards = [lazy.isel(site=slice(s, s + SHARD)) for s in range(0, N_SITES, SHARD)]
    with dask.config.set(scheduler="synchronous"):
        expected = [shard.compute() for shard in shards]
    numpy_backed = expected[0]  # passes through untouched, in its place
    with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0") as client:
        got = list(compute_shards([*shards, numpy_backed], in_flight=2))  # the current client
        keys = client.run_on_scheduler(lambda dask_scheduler: {str(t[0]) for t in dask_scheduler.transition_log})
    assert len(got) == len(shards) + 1
    for a, b in zip(got, [*expected, numpy_backed]):
        xr.testing.assert_identical(a, b)
        assert np.array_equal(a.values, b.values)
    # the scheduler saw exactly one task per lazy shard, not the shard graphs' tasks
    assert n_tasks(cull_shard(shards[0]).data) > 10
    assert len(keys) == len(shards) and all(k.startswith("_compute_here") for k in keys)


def test_shards_computed_in_overlapping_worker_threads_leave_the_scheduler_setting_alone() -> None:
    """Two worker threads computing shards whose runs overlap (the second starts later and ends later)
    must not change the process's dask scheduler setting: a leaked "synchronous" would make every
    later build skip its cluster, and a restored "dask.distributed" mid-shard fans a shard's graph out."""
    import threading
    import time

    from stefaland.gridded.shards import _compute_here, _Payload

    def slow(seconds: float):
        return da.from_delayed(dask.delayed(lambda: (time.sleep(seconds), np.ones(3))[1])(), (3,), float)

    before = dask.config.get("scheduler", None)
    first = threading.Thread(target=_compute_here, args=(_Payload(slow(0.2)),))
    second = threading.Thread(target=_compute_here, args=(_Payload(slow(0.5)),))
    first.start()
    time.sleep(0.05)
    second.start()
    first.join()
    second.join()
    assert dask.config.get("scheduler", None) == before


def test_spatial_order_groups_sites_by_region() -> None:
    from stefaland.gridded import spatial_order

    rng = np.random.default_rng(3)
    centres = np.array([[45.0, 7.0], [-30.0, 140.0], [40.0, -100.0], [-10.0, -60.0]])
    region = rng.integers(0, len(centres), 400)
    lat = centres[region, 0] + rng.uniform(-3, 3, region.size)
    lon = centres[region, 1] + rng.uniform(-3, 3, region.size)
    order = spatial_order(lat, lon)
    assert sorted(order.tolist()) == list(range(region.size))  # a permutation
    # in order, the region changes only at the 3 boundaries between the 4 clusters
    assert np.count_nonzero(np.diff(region[order])) == len(centres) - 1
    # a stable order: identical cells keep their input order; the antimeridian wraps to one column range
    assert spatial_order([1.0, 1.0, 1.0], [179.99, -180.0, 179.99]).tolist() == [1, 0, 2]


def test_spatial_order_means_a_chunk_is_read_by_one_shard(grid: xr.Dataset) -> None:
    """On the toy grid (4 x 4 cells per chunk), spatially ordered shards each touch fewer chunks."""
    from stefaland.gridded import spatial_order

    rng = np.random.default_rng(5)
    n = 48
    sites = pd.DataFrame({"site": [f"p{k:02d}" for k in range(n)], "lat": rng.uniform(-8, 8, n), "lon": rng.uniform(100, 116, n)})

    def chunk_reads(table: pd.DataFrame) -> int:
        lazy = extract_to_sites(grid, table, "nearest", ["v"], None, "toy", site_chunk=12)["v"]
        return sum(sum(1 for k in dict(cull_shard(lazy.isel(site=slice(s, s + 12))).data.__dask_graph__())
                       if isinstance(k, tuple) and str(k[0]).startswith("toy-field")) for s in range(0, n, 12))

    ordered = sites.iloc[spatial_order(sites["lat"], sites["lon"], cell_deg=1.0)].reset_index(drop=True)
    assert chunk_reads(ordered) < chunk_reads(sites)


def test_local_cluster_workers_keep_glibc_malloc_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """dask's MALLOC_TRIM_THRESHOLD_=65536 made point extraction cost 11-26 % more CPU per worker."""
    import os

    from stefaland.gridded.scheduler import dask_client

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with dask_client("local", n_workers=1) as client:
        seen = list(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values())
    assert seen == [None]


# --------------------------------------------------------------------------- data build reads a gridded source on the fast path


def _reader(grid: xr.Dataset, sites: pd.DataFrame, shard_size: int = SHARD) -> SourceReader:
    spec = SourceSpec(name="grid", role="dynamic", variables=(VariableSpec("grid_v", "v", "m"),),
                      gridded={"method": "bilinear"}, grid_variables=("v",))
    catalog = CatalogSpec(url="memory", sha256="", dataset="toy", sites_source="sites", start=None, end=None,
                          sources={"grid": spec}, catalog={"grid": _GridSource(grid)})
    return SourceReader(catalog, spec, sites.set_index("site"), shard_size=shard_size)


@pytest.mark.parametrize("window_sites", [N_SITES, 2 * SHARD, 1])
def test_read_shards_equals_read_shard_by_shard(grid: xr.Dataset, sites: pd.DataFrame, window_sites: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Sorted spatially inside the extraction, handed back in store order: the same values, bit for bit,
    whatever the window (all shards at once, two, one)."""
    import stefaland.catalog.readers as readers

    time = pd.date_range("1999-12-30", periods=33)  # wider than the grid: NaN days kept as read() gives them
    shards = [list(sites["site"].iloc[s:s + SHARD]) for s in range(0, N_SITES, SHARD)]
    reader = _reader(grid, sites)
    with dask.config.set(scheduler="synchronous"):
        expected = [reader.read(shard, time) for shard in shards]
        monkeypatch.setattr(readers, "GRIDDED_WINDOW_BYTES", window_sites * 2 * 8 * len(time))
        got = list(_reader(grid, sites).read_shards(shards[1:] + shards[:1], time))  # any pending subset, any order
    for a, b in zip(got, expected[1:] + expected[:1]):
        xr.testing.assert_identical(a, b)
        assert np.array_equal(a["v"].values, b["v"].values, equal_nan=True)


def test_read_shards_sorts_sites_spatially_within_the_extraction(grid: xr.Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """Store shards that each mix the grid's south and north: the extraction sees the sites in
    Z-order, so each batch it computes lies in one half (and reads only that half's chunks)."""
    import stefaland.gridded.extract as extract_module

    south = np.arange(N_SITES) % 2 == 0  # alternate south / north in store order
    mixed = pd.DataFrame({"site": [f"m{k:02d}" for k in range(N_SITES)], "lat": np.where(south, -6.0, 6.0),
                          "lon": 101.0 + 0.1 * (np.arange(N_SITES) // 2)})
    extracted: list[pd.DataFrame] = []
    original = extract_module.extract_to_sites

    def recording(ds, table, *args, **kwargs):
        extracted.append(table)
        return original(ds, table, *args, **kwargs)

    monkeypatch.setattr(extract_module, "extract_to_sites", recording)
    shards = [list(mixed["site"].iloc[s:s + SHARD]) for s in range(0, N_SITES, SHARD)]
    with dask.config.set(scheduler="synchronous"):
        got = list(_reader(grid, mixed).read_shards(shards, None))
        expected = [_reader(grid, mixed).read(shard, None) for shard in shards]
    assert [list(g["site"].values) for g in got] == shards  # handed back in store order ...
    for a, b in zip(got, expected):
        xr.testing.assert_identical(a, b)  # ... with the same values
    table = extracted[0]  # read_shards' one extraction (read() made the others)
    for start in range(0, N_SITES, SHARD):  # every batch of the extraction in one half
        assert len(set(np.sign(table["lat"].iloc[start:start + SHARD]))) == 1


def test_read_shards_runs_one_task_per_batch_on_a_client(grid: xr.Dataset, sites: pd.DataFrame) -> None:
    from distributed import Client

    time = pd.date_range("2000-01-01", periods=30)
    shards = [list(sites["site"].iloc[s:s + SHARD]) for s in range(0, N_SITES, SHARD)]
    with dask.config.set(scheduler="synchronous"):
        expected = [_reader(grid, sites).read(shard, time) for shard in shards]
    with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0") as client:
        got = list(_reader(grid, sites).read_shards(shards, time))
        keys = client.run_on_scheduler(lambda dask_scheduler: {str(t[0]) for t in dask_scheduler.transition_log})
    for a, b in zip(got, expected):
        xr.testing.assert_identical(a, b)
    assert len(keys) == len(shards) and all(k.startswith("_compute_here") for k in keys)
