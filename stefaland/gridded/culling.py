"""Computing one shard of a lazy (dask-backed) source: culled first, so a scheduler gets only its tasks.

Lives outside ``stefaland.gridded`` because every lazy source needs it (zarr/NetCDF opened with
dask too), and the gridded extras (geopandas, exactextract) need not be installed.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class _Computable(Protocol):
    """A lazy object that ``compute()`` turns into its values (an xarray object, a dask collection)."""

    def compute(self) -> Any: ...


C = TypeVar("C", bound=_Computable)


def cull_shard(data: T) -> T:
    """``data`` (an xarray object or dask collection) with a graph of only the tasks it needs.

    A shard selected from a lazy extraction (``extract_to_sites(...).isel(site=...)``) still
    carries the graph of the whole extraction: slicing keeps every layer of every shard. The
    synchronous scheduler culls it before running, but a ``distributed`` client serialises the
    whole graph and lets the scheduler cull it: for 34 shards of 128 sites on a 10-year 0.1° grid
    (6.4° chunks), 42,020 tasks (8.1 MB) sent per shard instead of 1,190 (0.35 MB), which made a
    shard take ≈1.8× as long (benchmarks/README.md). ``dask.optimize`` culls (and fuses) here, in
    the client, so only the shard's own tasks are sent; the same operations run on the same
    chunks, so the values are identical, bit for bit.
    Anything that is not a dask collection (NumPy-backed data) is returned unchanged.
    """
    import dask

    if not dask.is_dask_collection(data):
        return data
    (culled,) = dask.optimize(data)
    return culled


def compute_shard(data: C) -> C:
    """``data.compute()`` after :func:`cull_shard`: a shard costs the scheduler only its own tasks."""
    return cull_shard(data).compute()
