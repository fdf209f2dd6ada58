"""Process-group setup and teardown for ``torchrun`` runs (gloo on CPU, nccl on GPU).

The trainer reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` from the environment, so the same
code runs under ``stefaland pretrain --nproc N`` (which spawns torchrun) and under a Kubernetes
job that calls ``torchrun … -m stefaland_cli.main pretrain …`` itself.
"""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
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


def torchrun_command(nproc: int, module_args: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run`` on this Python, standalone rendezvous on a free port."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "stefaland_cli.main", *module_args]


def launch(nproc: int, module_args: Sequence[str]) -> int:
    """Run the CLI ``module_args`` on ``nproc`` local processes; returns torchrun's exit status."""
    command = torchrun_command(nproc, module_args)
    log.info("launching %d processes: %s", nproc, " ".join(command))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.call(command, env=env)
