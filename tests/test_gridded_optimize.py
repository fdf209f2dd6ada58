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

from stefaland.build.readers import SourceReader
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
