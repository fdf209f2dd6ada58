"""Epoch loop with a checkpoint after every epoch, so an interrupted finetune resumes.

Randomness is derived from (seed, epoch): the windows an epoch draws and its dropout masks do
not depend on whether the run was interrupted before it, so a resumed run ends with the same
weights as an uninterrupted one. Checkpoint files are written whole before ``latest.json`` is
pointed at them (:mod:`stefaland.run.checkpoint`), and ``metrics.csv`` is
rewritten atomically after each epoch.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from stefaland import fileio
from stefaland.divergence import check_finite_step
from stefaland.errors import StefaLandError
from stefaland.progress import progress
from stefaland.run.checkpoint import load_latest, load_torch_file, save_checkpoint
from stefaland.run.device import select_device
from stefaland.run.metrics_log import write_metrics
from stefaland.run.trainer import Trainer, derived_seed, warmup_cosine

from .config import FinetuneConfig
from .data import SiteData, Variables, WindowBatch, WindowSampler, batches_per_epoch
from .models.registry import model_spec, trainable_parameters

log = logging.getLogger("stefaland.finetune")


def masked_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """RMSE, MSE or NSE* over the observed cells only; NaN targets count for nothing.

    ``weights`` (B,) scale each row's squared errors (NSE*: 1 / (site std + 0.1)^2).
    """
    observed = torch.isfinite(target)
    error = torch.where(observed, prediction - torch.nan_to_num(target), torch.zeros_like(prediction))
    squared = error**2
    if weights is not None:
        squared = squared * (weights[:, None] if squared.dim() == 2 else weights)
    mse = squared.sum() / observed.sum().clamp_min(1)
    return torch.sqrt(mse + 1e-8) if kind == "rmse" else mse


def nse_weights(data: SiteData) -> np.ndarray:
    """neuralhydrology's NSE* weights per training site: 1 / (std of its target + 0.1)^2, in z units."""
    if data.target.ndim == 1:
        return np.ones(len(data.sites), dtype=np.float32)
    with np.errstate(all="ignore"):
        std = np.nanstd(data.target.astype(np.float64), axis=1)
    std = np.where(np.isfinite(std), std, 1.0)
    return (1.0 / (std + 0.1) ** 2).astype(np.float32)


def make_optimizer(config: FinetuneConfig, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    lr, optimizer = config.learning_rate(), config.optimizer()
    if optimizer == "adadelta":
        return torch.optim.Adadelta(parameters, lr=lr)
    if optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    return torch.optim.AdamW(parameters, lr=lr)


def lr_schedule(optimizer: torch.optim.Optimizer, config: FinetuneConfig, total_updates: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant or cosine decay to ``lr * lr_final`` over the planned updates."""
    train = config.train
    factor = warmup_cosine(train.warmup_updates, train.lr_schedule, train.lr_final, total_updates)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class Validation:
    """What is scored after every epoch: sites and days the model never trains on."""

    data: SiteData
    variables: Variables


def validate(model: nn.Module, validation: Validation, config: FinetuneConfig) -> tuple[float, float]:
    """(loss in z units, median NSE on the physical scale) of ``model`` on the validation data."""
    from stefaland.metrics import site_metrics

    from .inference import predict_torch

    data, variables = validation.data, validation.variables
    sim = predict_torch(model, data, config.data.seq_len, config.data.overlap(), config.train.batch_size, quiet=True,
                        warmup=model_spec(config.model.name).warmup(config.model))
    obs = data.target if data.target.ndim == 1 else data.target[:, data.history:]
    loss_kind = "mse" if config.loss() == "nse" else config.loss()
    loss = float(masked_loss(torch.from_numpy(sim), torch.from_numpy(obs), loss_kind))
    physical, observed = variables.physical_simulation(sim), variables.physical(obs)
    if observed.ndim == 1:  # a static target: one value per site, scored across sites
        observed, physical = observed[None, :], physical[None, :]
    nse = site_metrics(observed, physical, ["NSE"], min_valid=min(30, observed.shape[1]))["NSE"]
    finite = nse[np.isfinite(nse)]
    model.train()
    return loss, float(np.median(finite)) if finite.size else float("nan")


BEST_FILE = "best.pt"


def _save_best(fold_dir: str, model: nn.Module) -> None:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    fileio.write_bytes_atomic(fileio.join(fold_dir, "checkpoints", BEST_FILE), buffer.getvalue())


def _load_best(fold_dir: str, model: nn.Module) -> None:
    url = fileio.join(fold_dir, "checkpoints", BEST_FILE)
    model.load_state_dict(load_torch_file(url, fileio.read_bytes(url)))


def _warn_if_undertrained(metrics: list[dict[str, Any]], updates: int, stopped_early: bool) -> None:
    """Say so when a run probably stopped before it had learned what it could."""
    if updates < 1000:
        log.warning("only %d optimiser updates in this run; recurrent models typically need 1,000 or more on "
                    "daily series (raise train.epochs or train.iterations_per_epoch / train.min_updates)", updates)
    losses = [row["train_loss"] for row in metrics if isinstance(row.get("train_loss"), float)]
    if not stopped_early and len(losses) >= 3 and losses[-1] < 0.95 * losses[-3]:
        log.warning("the training loss was still falling steeply at the end (%.4f two epochs before, %.4f last); "
                    "more epochs would probably help", losses[-3], losses[-1])


class FinetuneTrainer(Trainer):
    """Train ``model`` on ``data`` (training sites only) into ``fold_dir``, a checkpoint after every epoch.

    With ``validation``, every epoch is scored on it; the best epoch's weights are kept beside the
    checkpoints and loaded into ``model`` at the end, and ``train.patience`` stops the run early.
    """

    run_name = "finetuning"

    def __init__(self, model: nn.Module, data: SiteData, config: FinetuneConfig, fold_dir: str,
                 extra_state: dict[str, Any] | None = None, quiet: bool = False,
                 validation: Validation | None = None) -> None:
        super().__init__(config.train.epochs)
        self.model, self.data, self.config, self.fold_dir = model, data, config, fold_dir
        self.extra_state, self.quiet, self.validation = extra_state or {}, quiet, validation
        self.train = config.train
        self.best: dict[str, Any] = {"epoch": 0, "nse": -math.inf}

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        super().setup()
        log.info("%d batches an epoch x %d epochs = %d updates (batch %d, %d loss days per window)", self.per_epoch,
                 self.train.epochs, self.per_epoch * self.train.epochs, self.train.batch_size, self.loss_days)

    def setup_device(self) -> None:
        self.device = select_device(self.train.device)

    def setup_data(self) -> None:
        """Window lengths and batches per epoch; the NSE* weights of the training sites."""
        self.warmup = model_spec(self.config.model.name).warmup(self.config.model)  # input days consumed before the first output (HBV)
        self.spinup = self.config.data.spinup_days  # outputs that only warm the state up: not in the loss
        self.length = self.warmup + self.config.data.seq_len
        self.loss_days = self.config.data.seq_len - self.spinup
        self.per_epoch = batches_per_epoch(self.data, self.train.batch_size, self.length, self.loss_days,
                                           self.train.iterations_per_epoch, self.train.min_updates, self.train.epochs)
        self.loss_kind = self.config.loss()  # train.loss, or the target's default
        self.weights = torch.from_numpy(nse_weights(self.data)).to(self.device) if self.loss_kind == "nse" else None

    def load_state(self) -> dict[str, Any] | None:
        return load_latest(self.fold_dir)

    def setup_model(self) -> None:
        self.model.to(self.device)
        self.parameters = trainable_parameters(self.model)
        if not self.parameters:
            raise StefaLandError(f"model {self.config.model.name!r} has no trainable parameters")

    def setup_optimiser(self) -> None:
        self.optimizer = make_optimizer(self.config, self.parameters)
        self.scheduler = lr_schedule(self.optimizer, self.config, self.per_epoch * self.train.epochs)

    def resume(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])  # copies into the tensors already on `device`
        self.optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.metrics = int(state["epoch"]), list(state["metrics"])
        self.best, self.stopped = dict(state.get("best") or self.best), bool(state.get("stopped_early", False))
        log.info("resuming %s after epoch %d of %d", self.fold_dir, self.epoch, self.train.epochs)

    # ------------------------------------------------------------------ the epochs

    def train_epoch(self) -> None:
        self.epoch_started = time.perf_counter()
        seed = derived_seed(self.train.seed, self.epoch)
        torch.manual_seed(seed)
        sampler = WindowSampler(self.data, self.train.batch_size, self.length, self.loss_days, self.per_epoch,
                                np.random.default_rng(seed))
        self.model.train()
        self.total, self.batches = 0.0, 0
        for batch in progress(sampler, f"epoch {self.epoch + 1}/{self.epochs}", total=len(sampler), quiet=self.quiet):
            loss = self.train_step(batch)
            self.total, self.batches = self.total + float(loss.detach()), self.batches + 1
        check_finite_step(None, None, self.model, self.epoch + 1, self.batches, self.run_name)  # weights, once an epoch

    def train_step(self, batch: WindowBatch) -> torch.Tensor:
        device, spinup = self.device, self.spinup
        prediction = self.model(batch.dynamic.to(device), batch.static.to(device))  # (B, seq_len)
        row_weights = None if self.weights is None else self.weights[torch.from_numpy(batch.rows).to(device)]
        if batch.target.dim() == 1:  # a static target: the window's mean daily output
            loss = masked_loss(prediction.mean(1), batch.target.to(device), self.loss_kind, row_weights)
        else:
            loss = masked_loss(prediction[:, spinup:], batch.target[:, self.warmup + spinup:].to(device),
                               self.loss_kind, row_weights)
        grad_clip = self.train.grad_clip if self.train.grad_clip is not None else math.inf
        self.optimise(loss, self.parameters, grad_clip, self.epoch + 1, self.batches + 1)
        return loss

    def end_epoch(self) -> None:
        row: dict[str, Any] = {"epoch": self.epoch + 1, "train_loss": self.total / max(self.batches, 1),
                               "batches": self.batches, "lr": self.optimizer.param_groups[0]["lr"]}
        row.update(self.evaluate())
        row["seconds"] = round(time.perf_counter() - self.epoch_started, 3)
        self.metrics.append(row)
        self.epoch += 1
        self.checkpoint()
        log.info("epoch %d/%d: train %s %.4f%s (%d batches, %.1f s)", self.epoch, self.epochs, self.loss_kind,
                 row["train_loss"], f", valid NSE {row['valid_nse']:.3f}" if self.validation is not None else "",
                 self.batches, row["seconds"])

    def evaluate(self) -> dict[str, float]:
        """Validation loss and median NSE of epoch ``epoch + 1``; keeps the best epoch's weights and
        stops the run after ``train.patience`` epochs without a better one."""
        if self.validation is None:
            return {}
        loss, nse = validate(self.model, self.validation, self.config)
        epoch = self.epoch + 1
        if np.isfinite(nse) and nse > self.best["nse"]:
            self.best = {"epoch": epoch, "nse": nse}
            _save_best(self.fold_dir, self.model)
        if self.train.patience is not None and epoch - self.best["epoch"] >= self.train.patience:
            self.stopped = True
            log.info("early stop after epoch %d: no better validation NSE since epoch %d", epoch, self.best["epoch"])
        return {"valid_loss": loss, "valid_nse": nse}

    def checkpoint(self) -> None:
        save_checkpoint(self.fold_dir, self.epoch, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "metrics": self.metrics,
            "best": self.best, "stopped_early": self.stopped,
            "config": self.config.model_dump(mode="json"), **self.extra_state,
        }, keep=2)
        write_metrics(self.fold_dir, self.metrics)

    # ------------------------------------------------------------------ the end

    def finish(self) -> None:
        """Warn when the run looks undertrained; predict with the best validation epoch's weights."""
        _warn_if_undertrained(self.metrics, sum(int(r.get("batches", 0)) for r in self.metrics), self.stopped)
        if self.validation is not None and self.best["epoch"] > 0:
            _load_best(self.fold_dir, self.model)
            log.info("predicting with the best validation epoch %d (median NSE %.3f)", self.best["epoch"], self.best["nse"])
        self.model.eval()


def train_model(model: nn.Module, data: SiteData, config: FinetuneConfig, fold_dir: str,
                extra_state: dict[str, Any] | None = None, quiet: bool = False,
                validation: Validation | None = None) -> list[dict[str, Any]]:
    """Train ``model`` on ``data`` (training sites only) for ``config.train.epochs``; resume from
    ``fold_dir``; returns the metrics rows (see :class:`FinetuneTrainer`)."""
    return FinetuneTrainer(model, data, config, fold_dir, extra_state, quiet, validation).fit()


def best_epoch(metrics: list[dict[str, Any]]) -> int | None:
    """The epoch whose weights made the predictions: the best validation NSE, else the last."""
    scored = [(row["valid_nse"], row["epoch"]) for row in metrics
              if isinstance(row.get("valid_nse"), float) and np.isfinite(row["valid_nse"])]
    if scored:
        return int(max(scored)[1])
    return int(metrics[-1]["epoch"]) if metrics else None
