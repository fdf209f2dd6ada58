"""The pretraining loop: shards in, checkpoints, metrics and a loss curve out.

Determinism is by construction rather than by bookkeeping: the data, the masks and the dropout
of step ``k`` of epoch ``e`` come from generators seeded by ``(seed, e, k, rank)``, so a run
resumed from a checkpoint (model, optimiser, scheduler, position) repeats the uninterrupted run
bit for bit on CPU. RNG states are still saved in the checkpoint for anything outside that.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from .. import __version__
from ..divergence import check_finite_step
from ..errors import StefaLandError
from ..model import MaskedReconstructionModel
from ..outputs import Claim
from ..run import folder
from ..run.checkpoint import checkpoint_dir, latest_pointer, load_latest, save_checkpoint
from ..run.device import select_device, set_threads
from ..run.manifest import write_run_manifest
from ..run.metrics_log import write_metrics
from ..run.record import write_run_record
from ..storage import remove
from ..store import open_store
from . import distributed
from .config import PretrainConfig, parse_config
from .data import Batch, ShardBatches, StoreSchema, store_schema
from .loss import ReconstructionLoss
from .metrics import LossAccumulator
from .objective import PretrainObjective
from .report import TrainingBar, plot_loss

log = logging.getLogger("stefaland.pretrain.trainer")


@dataclass
class PretrainResult:
    out: str
    global_step: int
    epochs_done: int
    resumed_from: int | None  # global step of the checkpoint the run resumed from
    metrics: list[dict[str, Any]]
    schema: StoreSchema


def _step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1)[0])


def _schedule(config: PretrainConfig, total_steps: int):
    optim = config.optim

    def factor(step: int) -> float:
        if optim.warmup_steps and step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - optim.warmup_steps) / max(1, total_steps - optim.warmup_steps))
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _rng_states() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def _tensors(batch: Batch, device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device)
                 for a in (batch.dynamic, batch.static, batch.dynamic_mask, batch.static_mask))


def _same_run(saved: PretrainConfig, config: PretrainConfig) -> bool:
    """Whether a run folder started with ``saved`` may be resumed with ``config``.

    ``train.compile`` is left out of the comparison: it changes how steps execute, not what they
    compute, and checkpoints hold the uncompiled module's weights either way.
    """
    saved = saved.model_copy(update={"train": saved.train.model_copy(update={"compile": config.train.compile})})
    return saved == config


def _check_run_folder(out: str, config: PretrainConfig) -> None:
    """Refuse to resume a run folder whose saved config differs from this one (:func:`_same_run`)."""
    folder.refuse_other_config(out, config, parse_config, _same_run)


def _write_run_files(out: str, config: PretrainConfig, schema: StoreSchema, context: distributed.DistributedContext, lanes: int) -> None:
    folder.write_config(out, config.to_yaml())
    run = {
        "stefaland_version": __version__, "torch_version": torch.__version__,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "store": schema.url, "store_provenance": schema.provenance,
        "world_size": context.world_size, "lanes": lanes,
        "variables": schema.to_json(),
    }
    write_run_record(out, run)


RUN_KIND = "pretrain"


def _resume_state(out: str, config: PretrainConfig, resume: bool | None, context: distributed.DistributedContext,
                  schema: StoreSchema, lanes: int, claim: Claim | None = None) -> dict[str, Any] | None:
    """The checkpoint to continue from (None: start afresh); rank 0 checks the run folder first."""
    state = None
    if context.is_main:
        if resume is not False:
            _check_run_folder(out, config)
            state = load_latest(out)
        elif latest_pointer(out) is not None:  # --no-resume: start over, leaving no stale checkpoints
            log.warning("%s: --no-resume given, discarding its checkpoints", out)
            remove(checkpoint_dir(out))
        if resume is True and state is None:
            raise StefaLandError(f"{out}: --resume given but the run folder holds no checkpoint")
        if state is not None and state.get("lanes", lanes) != lanes:
            raise StefaLandError(
                f"{out}: the run used {state['lanes']} data lanes but this launch has {lanes}; "
                f"resume with the same data.lanes / --nproc so it sees the same batches"
            )
        if claim is not None and not claim.existed:
            claim.mark()  # the first file of a new run folder, so even a half-started run is recognisably ours
        _write_run_files(out, config, schema, context, lanes)
    has_state = distributed.broadcast_flag(context, state is not None)
    if has_state and state is None:  # the other ranks read the same checkpoint rank 0 found
        state = load_latest(out)
    distributed.barrier(context)
    return state


def _build(config: PretrainConfig, schema: StoreSchema, steps_per_epoch: int, device: torch.device):
    """Model + learnable loss weights, their optimiser and learning-rate schedule."""
    torch.manual_seed(config.train.seed)  # identical initial weights on every rank
    n_dynamic, n_static = len(schema.dynamic_vars), len(schema.static_vars)
    model = MaskedReconstructionModel(n_dynamic, n_static, config.model)
    loss = ReconstructionLoss(n_dynamic, n_static, config.loss.dynamic_weight, config.loss.static_weight,
                              config.loss.learn_weights)
    objective = PretrainObjective(model, loss).to(device)
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad],
                                  lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, config.train.epochs * steps_per_epoch))
    return objective, optimizer, scheduler


def pretrain(
    store: str,
    config: PretrainConfig,
    out: str,
    resume: bool | None = None,
    quiet: bool = False,
) -> PretrainResult:
    """Pretrain on ``store`` (path or URL) into the run folder ``out`` (path or ``s3://`` URL).

    ``resume``: None = resume when ``out`` holds a checkpoint; True = require one; False = start
    over even if one exists. Picks up ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` when launched by torchrun.
    Rank 0 first claims ``out`` (:func:`stefaland.run.folder.claim_run_folder`) and holds its lock
    until it returns; resume rules are :func:`_check_run_folder`'s.
    """
    context = distributed.context_from_env()
    claim = folder.claim_run_folder(out, RUN_KIND) if context.is_main else None
    try:
        return _pretrain(store, config, out, resume, quiet, context, claim)
    finally:
        if claim is not None:
            claim.release()


def _pretrain(store: str, config: PretrainConfig, out: str, resume: bool | None, quiet: bool,
              context: distributed.DistributedContext, claim: Claim | None) -> PretrainResult:
    train = config.train
    set_threads(train.num_threads)
    device = select_device(train.device, context.local_rank)
    distributed.init_process_group(context, device)

    dataset = open_store(store)
    schema = store_schema(dataset, config, store)
    data = ShardBatches(dataset, schema, config, context.rank, context.world_size)

    state = _resume_state(out, config, resume, context, schema, data.n_lanes, claim)
    objective, optimizer, scheduler = _build(config, schema, data.steps_per_epoch, device)
    epoch, step_in_epoch, global_step, metrics, resumed_from = 0, 0, 0, [], None
    if state is not None:
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _restore_rng(state["rng"])
        epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        metrics, resumed_from = list(state["metrics"]), global_step
        if context.is_main:
            log.info("resuming %s at epoch %d, step %d (global step %d)", out, epoch + 1, step_in_epoch, global_step)

    use_cuda = device.type == "cuda"
    autocast = config.train.precision == "bf16" or (config.train.precision == "auto" and use_cuda)
    compiled = config.train.compile == "on" or (config.train.compile == "auto" and use_cuda)
    # ``runner`` runs the training forward; ``objective`` (never wrapped) is what is saved, loaded
    # and evaluated, so checkpoint keys carry no ``module.`` / ``_orig_mod.`` prefix and compiled,
    # eager, 1- and N-process runs read each other's checkpoints. Compiling the DDP wrapper (not
    # the inner module) lets dynamo split graphs at DDP's gradient buckets; checked with gloo on CPU.
    runner: torch.nn.Module = objective
    if context.enabled:
        runner = DistributedDataParallel(objective, device_ids=[device.index] if use_cuda else None)
    if compiled:
        if context.is_main:
            log.info("torch.compile on: the first step also compiles (tens of seconds on CPU)")
        runner = torch.compile(runner)

    def checkpoint(next_epoch: int, next_step: int) -> None:
        if context.is_main:
            if claim is not None:
                claim.check()  # another process took the run folder over: stop rather than mix runs
            save_checkpoint(out, global_step, {
                "objective": objective.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": _rng_states(),
                "epoch": next_epoch, "step_in_epoch": next_step, "global_step": global_step,
                "config": config.model_dump(mode="json"), "metrics": metrics,
                "schema": schema.to_json(), "stefaland_version": __version__, "lanes": data.n_lanes,
            }, keep=train.keep_checkpoints)
            write_metrics(out, metrics)
        distributed.barrier(context)

    accumulator = LossAccumulator(schema, config)
    n_local_lanes = len(data.lanes)
    started = time.perf_counter()
    with TrainingBar(quiet or not context.is_main) as bar:
        while epoch < train.epochs:
            bar.start_epoch(epoch, train.epochs, data.steps_per_epoch, step_in_epoch)
            objective.train()
            for step in range(step_in_epoch, data.steps_per_epoch):
                torch.manual_seed(_step_seed(train.seed, epoch, step, context.rank))  # dropout of this step
                tensors = _tensors(data.batch(epoch, step), device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    output = runner(*tensors, n_local_lanes)
                optimizer.zero_grad(set_to_none=True)
                output.total.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(objective.parameters(), config.optim.grad_clip)
                # before the step: a NaN gradient must not reach the weights (DDP has averaged the
                # gradients, so every rank sees the same norm and stops at the same step)
                check_finite_step(output.total, grad_norm, None, epoch + 1, global_step + 1, "pretraining")
                optimizer.step()
                scheduler.step()
                check_finite_step(None, None, objective, epoch + 1, global_step + 1, "pretraining")
                global_step += 1
                accumulator.add(output.sums, output.total)
                last_step = step == data.steps_per_epoch - 1
                checkpoint_due = global_step % train.checkpoint_every == 0 and not last_step
                # a row is also logged at each checkpoint, so no partial sums need saving in it
                if global_step % train.log_every == 0 or last_step or checkpoint_due:
                    row = {"kind": "train", "epoch": epoch + 1, "step": global_step,
                           "lr": scheduler.get_last_lr()[0], **accumulator.summary(context),
                           "time": round(time.time(), 3)}  # wall clock, for throughput
                    metrics.append(row)
                    bar.update({k: v for k, v in row.items() if ":" in k or k == "recon"})
                else:
                    bar.update({})
                if checkpoint_due:
                    checkpoint(epoch, step + 1)
            scores = evaluate(objective, data, device, train.eval_batches, context, schema, config)
            if scores:
                metrics.append({"kind": "eval", "epoch": epoch + 1, "step": global_step, **scores})
            epoch, step_in_epoch = epoch + 1, 0
            checkpoint(epoch, 0)
            if context.is_main and scores:
                log.info("epoch %d/%d: masked reconstruction %.4f (predict-the-mean %.4f)",
                         epoch, train.epochs, scores["recon"], scores["baseline"])
    if context.is_main:
        plot_loss(out, metrics)
        write_run_manifest(out)  # sizes and checksums, so `stefaland pull` can verify
    log.debug("rank %d: %d steps in %.1f s", context.rank, global_step, time.perf_counter() - started)

    result = PretrainResult(out, global_step, epoch, resumed_from, metrics, schema)
    distributed.barrier(context)  # the known-good gloo teardown: barrier, free, collect, destroy
    del runner, objective, optimizer, scheduler
    distributed.destroy_process_group(context)
    return result


@torch.no_grad()
def evaluate(objective: PretrainObjective, data: ShardBatches, device: torch.device, n_batches: int,
             context: distributed.DistributedContext, schema: StoreSchema, config: PretrainConfig) -> dict[str, float]:
    """Masked reconstruction error on fixed batches, next to the predict-the-mean error."""
    if n_batches == 0:
        return {}
    objective.eval()
    accumulator = LossAccumulator(schema, config)
    for index in range(n_batches):
        dynamic, static, d_mask, s_mask = _tensors(data.eval_batch(index), device)
        output = objective(dynamic, static, d_mask, s_mask, len(data.lanes))
        accumulator.add(output.sums, output.total)
    objective.train()
    return accumulator.summary(context)
