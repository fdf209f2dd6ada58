"""The pretraining loop: shards in, checkpoints, metrics and a loss curve out.

Determinism is by construction rather than by bookkeeping: the data, the masks and the dropout
of step ``k`` of epoch ``e`` come from generators seeded by ``(seed, e, k, rank)``, so a run
resumed from a checkpoint (model, optimiser, scheduler, position) repeats the uninterrupted run
bit for bit on CPU. RNG states are still saved in the checkpoint for anything outside that.

:class:`PretrainTrainer` fills in the steps of :class:`stefaland.run.trainer.Trainer`; what is
particular to pretraining is the process group (torchrun), checkpoints within an epoch, and
``torch.compile`` / DDP wrapping of the module that runs the forward pass.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from .. import __version__
from ..divergence import check_finite_step
from ..errors import StefaLandError
from ..fileio import remove
from ..model import MaskedReconstructionModel
from ..outputs import Claim
from ..run import folder
from ..run.checkpoint import checkpoint_dir, latest_pointer, load_latest, save_checkpoint
from ..run.device import select_device, set_threads
from ..run.manifest import write_run_manifest
from ..run.metrics_log import write_metrics
from ..run.record import write_run_record
from ..run.trainer import Trainer, derived_seed, warmup_cosine
from ..store import open_store
from . import distributed
from .config import PretrainConfig, parse_config
from .data import MaskedBatch, ShardBatches, StoreSchema, store_schema
from .loss import ReconstructionLoss
from .loss_display import TrainingBar, plot_loss
from .objective import PretrainObjective
from .reconstruction_metrics import LossAccumulator

log = logging.getLogger("stefaland.pretrain.trainer")


@dataclass
class PretrainResult:
    out: str
    global_step: int
    epochs_done: int
    resumed_from: int | None  # global step of the checkpoint the run resumed from
    metrics: list[dict[str, Any]]
    schema: StoreSchema


def _rng_states() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def _tensors(batch: MaskedBatch, device: torch.device) -> tuple[torch.Tensor, ...]:
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


def build_objective_and_optimiser(config: PretrainConfig, schema: StoreSchema, steps_per_epoch: int, device: torch.device):
    """Model + learnable loss weights, their optimiser and learning-rate schedule."""
    objective = build_objective(config, schema, device)
    optimizer, scheduler = build_optimiser(config, objective, config.train.epochs * steps_per_epoch)
    return objective, optimizer, scheduler


def build_objective(config: PretrainConfig, schema: StoreSchema, device: torch.device) -> PretrainObjective:
    """The masked-reconstruction model with its learnable loss weights, the same initial weights on every rank."""
    torch.manual_seed(config.train.seed)  # identical initial weights on every rank
    n_dynamic, n_static = len(schema.dynamic_vars), len(schema.static_vars)
    model = MaskedReconstructionModel(n_dynamic, n_static, config.model)
    loss = ReconstructionLoss(n_dynamic, n_static, config.loss.dynamic_weight, config.loss.static_weight,
                              config.loss.learn_weights)
    return PretrainObjective(model, loss).to(device)


def build_optimiser(config: PretrainConfig, objective: PretrainObjective,
                    total_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optim = config.optim
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad],
                                  lr=optim.lr, weight_decay=optim.weight_decay)
    factor = warmup_cosine(optim.warmup_steps, optim.schedule, optim.min_lr_ratio, total_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class PretrainTrainer(Trainer):
    """One pretraining run (one process of it, under torchrun) into the run folder ``out``.

    ``objective`` (never wrapped) is what is saved, loaded and evaluated; ``runner`` (DDP and/or
    ``torch.compile`` around it) runs the training forward.
    """

    run_name = "pretraining"

    def __init__(self, store: str, config: PretrainConfig, out: str, resume: bool | None, quiet: bool,
                 context: distributed.DistributedContext, claim: Claim | None) -> None:
        super().__init__(config.train.epochs)
        self.store, self.config, self.out, self.resume_mode, self.quiet = store, config, out, resume, quiet
        self.context, self.claim = context, claim
        self.train = config.train
        self.step_in_epoch, self.global_step = 0, 0
        self.resumed_from: int | None = None

    # ------------------------------------------------------------------ setup

    def setup_device(self) -> None:
        set_threads(self.train.num_threads)
        self.device = select_device(self.train.device, self.context.local_rank)
        distributed.init_process_group(self.context, self.device)

    def setup_data(self) -> None:
        dataset = open_store(self.store)
        self.schema = store_schema(dataset, self.config, self.store)
        self.data = ShardBatches(dataset, self.schema, self.config, self.context.rank, self.context.world_size)

    def load_state(self) -> dict[str, Any] | None:
        return _resume_state(self.out, self.config, self.resume_mode, self.context, self.schema, self.data.n_lanes,
                             self.claim)

    def setup_model(self) -> None:
        self.objective = build_objective(self.config, self.schema, self.device)

    def setup_optimiser(self) -> None:
        self.optimizer, self.scheduler = build_optimiser(self.config, self.objective,
                                                         self.train.epochs * self.data.steps_per_epoch)

    def resume(self, state: dict[str, Any]) -> None:
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _restore_rng(state["rng"])
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        self.metrics, self.resumed_from = list(state["metrics"]), self.global_step
        if self.context.is_main:
            log.info("resuming %s at epoch %d, step %d (global step %d)", self.out, self.epoch + 1,
                     self.step_in_epoch, self.global_step)

    def wrap_model(self) -> None:
        use_cuda = self.device.type == "cuda"
        self.autocast = self.train.precision == "bf16" or (self.train.precision == "auto" and use_cuda)
        compiled = self.train.compile == "on" or (self.train.compile == "auto" and use_cuda)
        # Checkpoint keys then carry no ``module.`` / ``_orig_mod.`` prefix, so compiled, eager, 1- and
        # N-process runs read each other's checkpoints. Compiling the DDP wrapper (not the inner
        # module) lets dynamo split graphs at DDP's gradient buckets; checked with gloo on CPU.
        runner: Callable[..., Any] = self.objective  # torch.compile returns a plain callable
        if self.context.enabled:
            runner = DistributedDataParallel(self.objective, device_ids=[self.device.index] if use_cuda else None)
        if compiled:
            if self.context.is_main:
                log.info("torch.compile on: the first step also compiles (tens of seconds on CPU)")
            runner = torch.compile(runner)
        self.runner = runner
        self.accumulator = LossAccumulator(self.schema, self.config)
        self.started = time.perf_counter()

    def display(self) -> TrainingBar:
        self.bar = TrainingBar(self.quiet or not self.context.is_main)
        return self.bar

    # ------------------------------------------------------------------ the epochs

    def train_epoch(self) -> None:
        self.bar.start_epoch(self.epoch, self.epochs, self.data.steps_per_epoch, self.step_in_epoch)
        self.objective.train()
        for step in range(self.step_in_epoch, self.data.steps_per_epoch):
            torch.manual_seed(derived_seed(self.train.seed, self.epoch, step, self.context.rank))  # dropout of this step
            self.train_step(self.data.batch(self.epoch, step))
            self._log_step(step)

    def train_step(self, batch: MaskedBatch) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            output = self.runner(*_tensors(batch, self.device), len(self.data.lanes))
        self.optimise(output.total, self.objective.parameters(), self.config.optim.grad_clip,
                      self.epoch + 1, self.global_step + 1)
        check_finite_step(None, None, self.objective, self.epoch + 1, self.global_step + 1, self.run_name)
        self.global_step += 1
        self.accumulator.add(output.sums, output.total)
        return output.total

    def _log_step(self, step: int) -> None:
        """A metrics row every ``log_every`` steps, at the epoch's last step and at each checkpoint
        (so no partial sums need saving in it); a checkpoint every ``checkpoint_every`` steps."""
        last_step = step == self.data.steps_per_epoch - 1
        checkpoint_due = self.global_step % self.train.checkpoint_every == 0 and not last_step
        if self.global_step % self.train.log_every == 0 or last_step or checkpoint_due:
            losses = self.accumulator.summary(self.context)
            row = {"kind": "train", "epoch": self.epoch + 1, "step": self.global_step,
                   "lr": self.scheduler.get_last_lr()[0], **losses,
                   "time": round(time.time(), 3)}  # wall clock, for throughput
            self.metrics.append(row)
            self.bar.update({k: v for k, v in losses.items() if ":" in k or k == "recon"})
        else:
            self.bar.update({})
        if checkpoint_due:
            self.step_in_epoch = step + 1
            self.checkpoint()

    def end_epoch(self) -> None:
        scores = self.evaluate()
        if scores:
            self.metrics.append({"kind": "eval", "epoch": self.epoch + 1, "step": self.global_step, **scores})
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.checkpoint()
        if self.context.is_main and scores:
            log.info("epoch %d/%d: masked reconstruction %.4f (predict-the-mean %.4f)",
                     self.epoch, self.epochs, scores["recon"], scores["baseline"])

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.objective, self.data, self.device, self.train.eval_batches, self.context, self.schema,
                        self.config)

    def checkpoint(self) -> None:
        """Rank 0 saves the state at (``epoch``, ``step_in_epoch``); every rank waits for it."""
        if self.context.is_main:
            if self.claim is not None:
                self.claim.check()  # another process took the run folder over: stop rather than mix runs
            save_checkpoint(self.out, self.global_step, {
                "objective": self.objective.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": _rng_states(),
                "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                "config": self.config.model_dump(mode="json"), "metrics": self.metrics,
                "schema": self.schema.to_json(), "stefaland_version": __version__, "lanes": self.data.n_lanes,
            }, keep=self.train.keep_checkpoints)
            write_metrics(self.out, self.metrics)
        distributed.barrier(self.context)

    # ------------------------------------------------------------------ the end

    def finish(self) -> None:
        if self.context.is_main:
            plot_loss(self.out, self.metrics)
            write_run_manifest(self.out)  # sizes and checksums, so `stefaland pull` can verify
        log.debug("rank %d: %d steps in %.1f s", self.context.rank, self.global_step, time.perf_counter() - self.started)

    def teardown(self) -> PretrainResult:
        """The known-good gloo teardown, in this order: barrier, free the DDP module and optimiser,
        collect, destroy (:func:`stefaland.pretrain.distributed.destroy_process_group`)."""
        result = PretrainResult(self.out, self.global_step, self.epoch, self.resumed_from, self.metrics, self.schema)
        distributed.barrier(self.context)
        del self.runner, self.objective, self.optimizer, self.scheduler
        distributed.destroy_process_group(self.context)
        return result


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
        return PretrainTrainer(store, config, out, resume, quiet, context, claim).fit()
    finally:
        if claim is not None:
            claim.release()


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
