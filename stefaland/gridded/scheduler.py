"""``--scheduler local|ADDRESS``: where the dask graphs of a gridded build run.

We never write a scheduler of our own: ``local`` starts a ``dask.distributed`` LocalCluster sized
to this machine, and an address (``tcp://host:8786``, as printed by ``dask scheduler``,
dask-kubernetes or the dask Helm chart) connects a ``Client`` to an existing cluster, whose
workers must see the same data URLs (object storage) as this process.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import psutil

from ..errors import StefaLandError

log = logging.getLogger("stefaland.gridded")

CONNECT_TIMEOUT_S = 30
# leave room for this process (the build itself, its output shard) beside the workers
MEMORY_SHARE = 0.8
# dask's nanny starts every worker with MALLOC_TRIM_THRESHOLD_=65536, which also turns off glibc's
# dynamic mmap threshold: every chunk-sized array is then mapped afresh and page-faulted in.
# Point extraction allocates a chunk per task, and takes 11-26 % more CPU so (benchmarks/README.md);
# a worker holds one shard's chunks at a time, so glibc's defaults, as in one process, are
# kept. ``None`` unsets a key of ``pre-spawn-environ`` (a value set in the OS environment still wins).
LOCAL_WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
# imported on every local worker at cluster start, not inside its first shard (≈1 s per worker on
# 2 busy cores: with short builds, a fifth of the shard loop)
WARM_MODULES = ("numpy", "scipy.sparse", "pandas", "xarray", "dask.array", "stefaland.gridded")


def _import_modules(names: tuple[str, ...]) -> None:
    import importlib

    for name in names:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


@dataclass(frozen=True)
class LocalSize:
    n_workers: int
    threads_per_worker: int
    memory_limit: int  # bytes per worker


def local_size(n_workers: int | None = None) -> LocalSize:
    """Workers = physical cores (max 8 by default), 1 thread each: extraction is NumPy/HDF5 bound,
    and HDF5 reads hold the GIL, so processes scale where threads would not."""
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    workers = n_workers or max(1, min(cores, available, 8))
    memory = int(psutil.virtual_memory().total * MEMORY_SHARE / workers)
    return LocalSize(workers, 1, memory)


@contextlib.contextmanager
def dask_client(scheduler: str = "local", n_workers: int | None = None, processes: bool = True,
                timeout: float | None = None) -> Iterator[object]:
    """A ``distributed.Client`` for the duration of a build; closed (and a local cluster stopped) after.

    ``timeout`` (connecting to an address) defaults to ``$STEFALAND_SCHEDULER_TIMEOUT`` seconds, else
    30: ``submit build`` sets it, because its client pod may start before the scheduler pod."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler in ("", "local"):
        size = local_size(n_workers)
        log.info("starting a local dask cluster: %d workers x %d thread, %.1f GiB each",
                 size.n_workers, size.threads_per_worker, size.memory_limit / 2**30)
        with dask.config.set(LOCAL_WORKER_CONFIG), \
                LocalCluster(n_workers=size.n_workers, threads_per_worker=size.threads_per_worker,
                             memory_limit=size.memory_limit, processes=processes,
                             dashboard_address=":0") as cluster, Client(cluster) as client:
            client.run(_import_modules, WARM_MODULES)
            yield client
        return
    if timeout is None:
        timeout = _timeout_from_environment()
    if "://" not in scheduler and ":" not in scheduler:
        raise StefaLandError(f"--scheduler {scheduler!r}: give 'local' or a scheduler address such as tcp://host:8786")
    try:
        client = Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise StefaLandError(f"--scheduler {scheduler}: cannot reach the dask scheduler ({exc})") from None
    log.info("connected to dask scheduler %s (%d workers)", scheduler, len(client.scheduler_info().get("workers", {})))
    try:
        yield client
    finally:
        client.close()


def _timeout_from_environment() -> float:
    text = os.environ.get("STEFALAND_SCHEDULER_TIMEOUT", "")
    if not text:
        return CONNECT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise StefaLandError(f"STEFALAND_SCHEDULER_TIMEOUT {text!r}: expected a positive number of seconds")
    return value
