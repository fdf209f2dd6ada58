"""Shard-level parallelism for a lazy gridded extraction on a ``dask.distributed`` cluster.

Handing a shard's graph to the distributed scheduler task by task (``compute_shard``) costs, per
task, a scheduler round trip and often a transfer of a generated chunk between workers: for
point extraction, where every task is a few milliseconds of NumPy, that overhead dominated
(25 k site-days/s on 2 workers against 250 k for the synchronous scheduler in one process,
benchmarks/README.md). Here a shard is **one** task: its culled graph travels to a worker as an
opaque payload and runs there on dask's synchronous scheduler, exactly as it would in one
process; several shards run at once, one per worker thread. Values are identical, bit for bit:
the same operations run on the same chunks.

Sites should be ordered spatially before they are cut into shards (:func:`spatial_order`): a
shard of sites drawn from every continent touches almost every chunk holding a site, so each chunk
is read (or generated) once per shard instead of about once.
"""

from __future__ import annotations

import collections
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


def spatial_order(lat: Iterable[float], lon: Iterable[float], cell_deg: float = 0.1) -> np.ndarray:
    """Indices that sort sites along a Z-order (Morton) curve of their ``cell_deg`` grid cells.

    Consecutive sites in this order are near each other at every scale, so consecutive shards
    cover compact regions whatever the grid's chunk size: a chunk is shared by few shards.
    Stable for ties (sites in the same cell keep their order).
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    rows = np.clip(np.floor((lat + 90.0) / cell_deg), 0, 2**16 - 1).astype(np.uint64)
    cols = np.clip(np.floor((((lon + 180.0) % 360.0)) / cell_deg), 0, 2**16 - 1).astype(np.uint64)
    return np.argsort(_interleave(rows) | (_interleave(cols) << np.uint64(1)), kind="stable")


def _interleave(values: np.ndarray) -> np.ndarray:
    """Spread the low 16 bits of ``values`` to the even bit positions (Morton code half)."""
    v = values & np.uint64(0xFFFF)
    for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


class _Payload:
    """A lazy object passed to ``client.submit`` untouched: distributed unpacks dask collections
    found in a task's arguments (it would schedule their graph task by task), not this wrapper."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj


def _compute_here(payload: _Payload) -> Any:
    """In a worker: the shard's graph on the synchronous scheduler, in this thread.

    The scheduler is passed to this call, not set in ``dask.config``: the config is one dict for the
    whole process, so worker threads that set and restore it out of order leave each other (and
    the caller) on the wrong scheduler; a shard would then fan its graph out to the cluster.
    """
    return payload.obj.compute(scheduler="synchronous")


# ``dask.config.set(scheduler=...)`` values that ask for a local scheduler, not a distributed client
LOCAL_SCHEDULERS = {"sync", "synchronous", "single-threaded", "threads", "threading", "processes", "multiprocessing"}


def active_client() -> Any | None:
    """The ``distributed.Client`` a ``dask_client(...)`` block (or the caller) made current, if any.

    None inside ``dask.config.set(scheduler="synchronous")`` (or another local scheduler), even if
    a client exists: the caller asked for this process, as ``.compute()`` would honour."""
    import dask

    if dask.config.get("scheduler", None) in LOCAL_SCHEDULERS:
        return None
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def compute_shards(shards: Iterable[Any], client: Any | None = None, in_flight: int | None = None) -> Iterator[Any]:
    """Compute lazy shards (xarray objects or dask collections), yielding results in input order.

    With a distributed ``client`` (default: the current one), each shard is culled here and runs
    as one task on a worker's synchronous scheduler; up to ``in_flight`` shards (default: twice
    the cluster's worker threads) are submitted at once, so every worker stays busy while results
    come back. Without a client, each shard is computed here (culled, synchronous or threaded as
    dask is configured). NumPy-backed shards pass through unchanged either way.
    """
    import dask

    from .culling import compute_shard, cull_shard

    client = client if client is not None else active_client()
    if client is None:
        for shard in shards:
            yield compute_shard(shard)
        return
    if in_flight is None:
        threads = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values())
        in_flight = 2 * max(threads, 1)
    pending: collections.deque = collections.deque()
    for shard in shards:
        if dask.is_dask_collection(shard):
            with warnings.catch_warnings():  # a batch's graph carries its sites' cell weights by design
                warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
                pending.append((client.submit(_compute_here, _Payload(cull_shard(shard)), pure=False), None))
        else:
            pending.append((None, shard))
        while len(pending) >= in_flight:
            yield _result(*pending.popleft())
    while pending:
        yield _result(*pending.popleft())


def _result(future: Any, value: Any) -> Any:
    return value if future is None else future.result()
