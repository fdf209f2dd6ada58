"""Process-group setup and teardown for ``torchrun`` runs (gloo on CPU, nccl on GPU).

The trainer reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` from the environment, so the same
code runs under ``stefaland pretrain --nproc N`` (torchrun's launcher, run in that process) and
under a Kubernetes job that calls ``torchrun … -m stefaland_cli.main pretrain …`` itself.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger("stefaland.pretrain.distributed")


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistributedContext:
    env = os.environ
    return DistributedContext(
        rank=int(env.get("RANK", 0)), world_size=int(env.get("WORLD_SIZE", 1)), local_rank=int(env.get("LOCAL_RANK", 0))
    )


def init_process_group(context: DistributedContext, device: torch.device) -> None:
    if context.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=context.rank, world_size=context.world_size)
        log.info("rank %d/%d joined the %s process group", context.rank, context.world_size, backend)


def barrier(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.barrier()


def broadcast_flag(context: DistributedContext, flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. "a checkpoint exists")."""
    if not context.enabled:
        return flag
    value = torch.tensor([int(flag)])
    dist.broadcast(value, src=0)
    return bool(value.item())


def destroy_process_group(context: DistributedContext) -> None:
    """Last step of a clean exit; the caller must first ``barrier`` and ``del`` its DDP model and optimiser.

    gloo aborts about one run in three at exit unless every rank meets at a barrier and the
    objects holding references into the group are freed (``gc.collect``) before it is destroyed.
    """
    if not (context.enabled and dist.is_initialized()):
        return
    gc.collect()
    dist.destroy_process_group()


def launch(nproc: int, module_args: Sequence[str]) -> int:
    """Run the CLI ``module_args`` on ``nproc`` local processes; returns 0, or the first failed worker's status.

    Through torchrun's own parser and ``run`` rather than a ``python -m torch.distributed.run`` command
    line spelt out here: a launcher flag torchrun does not know fails at once, and the launcher's
    defaults (standalone rendezvous on a free port, restarts, log handling) stay torchrun's.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "--module", "stefaland_cli.main", *module_args])
    log.info("launching %d processes: stefaland %s", nproc, " ".join(module_args))
    # One BLAS thread per worker unless the user chose otherwise; torchrun would set it in this
    # process for good (with a warning), so it is set for the launch only.
    chosen = "OMP_NUM_THREADS" in os.environ
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        run(args)
    except ChildFailedError as exc:
        return next((failure.exitcode for failure in exc.failures.values() if failure.exitcode), 1)
    finally:
        if not chosen:
            os.environ.pop("OMP_NUM_THREADS", None)
    return 0
