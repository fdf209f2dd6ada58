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

from stefaland import storage
from stefaland.divergence import check_finite_step
from stefaland.errors import StefaLandError
from stefaland.progress import progress
from stefaland.run.checkpoint import load_latest, save_checkpoint
from stefaland.run.metrics_log import write_metrics

from .config import FinetuneConfig
from .data import SiteData, Variables, WindowSampler, batches_per_epoch
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
    lr = config.train.learning_rate()
    if config.train.optimizer == "adadelta":
        return torch.optim.Adadelta(parameters, lr=lr)
    if config.train.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    return torch.optim.AdamW(parameters, lr=lr)


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def lr_schedule(optimizer: torch.optim.Optimizer, config: FinetuneConfig, total_updates: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant or cosine decay to ``lr * lr_final`` over the planned updates."""
    train = config.train
    warmup, final = train.warmup_updates, train.lr_final

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if train.lr_schedule == "constant":
            return 1.0
        progress_ = min(1.0, (step - warmup) / max(total_updates - warmup, 1))
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress_))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class Validation:
    """What is scored after every epoch: sites and days the model never trains on."""

    data: SiteData
    variables: Variables


def validate(model: nn.Module, validation: Validation, config: FinetuneConfig) -> tuple[float, float]:
    """(loss in z units, median NSE on the physical scale) of ``model`` on the validation data."""
    from stefaland.bounds import clip_to_bounds
    from stefaland.metrics import site_metrics

    from .predict import predict_torch

    data, variables = validation.data, validation.variables
    sim = predict_torch(model, data, config.data.seq_len, config.data.overlap(), config.train.batch_size, quiet=True,
                        warmup=model_spec(config.model.name).warmup(config.model))
    obs = data.target if data.target.ndim == 1 else data.target[:, data.history:]
    loss_kind = "mse" if config.train.loss == "nse" else config.train.loss
    loss = float(masked_loss(torch.from_numpy(sim), torch.from_numpy(obs), loss_kind))
    physical = clip_to_bounds(sim.astype(np.float64) * variables.target_std + variables.target_mean,
                              variables.target_bounds)
    observed = obs.astype(np.float64) * variables.target_std + variables.target_mean
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
    storage.write_bytes_atomic(storage.join(fold_dir, "checkpoints", BEST_FILE), buffer.getvalue())


def _load_best(fold_dir: str, model: nn.Module) -> None:
    url = storage.join(fold_dir, "checkpoints", BEST_FILE)
    model.load_state_dict(torch.load(io.BytesIO(storage.read_bytes(url)), map_location="cpu", weights_only=True))


def _warn_if_undertrained(metrics: list[dict[str, Any]], updates: int, stopped_early: bool) -> None:
    """Say so when a run probably stopped before it had learned what it could."""
    if updates < 1000:
        log.warning("only %d optimiser updates in this run; LSTMs on streamflow typically need 1,000 or more "
                    "(raise train.epochs or train.iterations_per_epoch / train.min_updates)", updates)
    losses = [row["train_loss"] for row in metrics if isinstance(row.get("train_loss"), float)]
    if not stopped_early and len(losses) >= 3 and losses[-1] < 0.95 * losses[-3]:
        log.warning("the training loss was still falling steeply at the end (%.4f two epochs before, %.4f last); "
                    "more epochs would probably help", losses[-3], losses[-1])


def train_model(model: nn.Module, data: SiteData, config: FinetuneConfig, fold_dir: str,
                extra_state: dict[str, Any] | None = None, quiet: bool = False,
                validation: Validation | None = None) -> list[dict[str, Any]]:
    """Train ``model`` on ``data`` (training sites only) for ``config.train.epochs``; resume from ``fold_dir``.

    With ``validation``, every epoch is scored on it; the best epoch's weights are kept beside the
    checkpoints and loaded into ``model`` at the end, and ``train.patience`` stops the run early.
    """
    train = config.train
    device = train.torch_device()
    model.to(device)
    parameters = trainable_parameters(model)
    if not parameters:
        raise StefaLandError(f"model {config.model.name!r} has no trainable parameters")
    warmup = model_spec(config.model.name).warmup(config.model)  # input days consumed before the first output (HBV)
    spinup = config.data.spinup_days  # outputs that only warm the state up: not in the loss
    length = warmup + config.data.seq_len
    loss_days = config.data.seq_len - spinup
    per_epoch = batches_per_epoch(data, train.batch_size, length, loss_days, train.iterations_per_epoch,
                                  train.min_updates, train.epochs)
    optimizer = make_optimizer(config, parameters)
    scheduler = lr_schedule(optimizer, config, per_epoch * train.epochs)
    weights = torch.from_numpy(nse_weights(data)).to(device) if train.loss == "nse" else None
    metrics: list[dict[str, Any]] = []
    start_epoch, best, stopped_early = 0, {"epoch": 0, "nse": -math.inf}, False
    state = load_latest(fold_dir)
    if state is not None:
        model.load_state_dict(state["model"])  # copies into the tensors already on `device`
        optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        start_epoch, metrics = int(state["epoch"]), list(state["metrics"])
        best, stopped_early = dict(state.get("best") or best), bool(state.get("stopped_early", False))
        log.info("resuming %s after epoch %d of %d", fold_dir, start_epoch, train.epochs)
    log.info("%d batches an epoch x %d epochs = %d updates (batch %d, %d loss days per window)", per_epoch,
             train.epochs, per_epoch * train.epochs, train.batch_size, loss_days)
    for epoch in range(start_epoch, train.epochs):
        if stopped_early:
            break
        started = time.perf_counter()
        seed = epoch_seed(train.seed, epoch)
        torch.manual_seed(seed)
        sampler = WindowSampler(data, train.batch_size, length, loss_days, per_epoch,
                                np.random.default_rng(seed))
        model.train()
        total, batches = 0.0, 0
        for batch in progress(sampler, f"epoch {epoch + 1}/{train.epochs}", total=len(sampler), quiet=quiet):
            prediction = model(batch.dynamic.to(device), batch.static.to(device))  # (B, seq_len)
            row_weights = None if weights is None else weights[torch.from_numpy(batch.rows).to(device)]
            if batch.target.dim() == 1:  # a static target: the window's mean daily output
                loss = masked_loss(prediction.mean(1), batch.target.to(device), train.loss, row_weights)
            else:
                loss = masked_loss(prediction[:, spinup:], batch.target[:, warmup + spinup:].to(device), train.loss,
                                   row_weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(parameters, train.grad_clip if train.grad_clip is not None else math.inf)
            check_finite_step(loss.detach(), norm, None, epoch + 1, batches + 1, "finetuning")  # before the step
            optimizer.step()
            scheduler.step()
            total, batches = total + float(loss.detach()), batches + 1
        check_finite_step(None, None, model, epoch + 1, batches, "finetuning")  # weights, once an epoch
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": total / max(batches, 1), "batches": batches,
                               "lr": optimizer.param_groups[0]["lr"]}
        if validation is not None:
            row["valid_loss"], row["valid_nse"] = validate(model, validation, config)
            if np.isfinite(row["valid_nse"]) and row["valid_nse"] > best["nse"]:
                best = {"epoch": epoch + 1, "nse": row["valid_nse"]}
                _save_best(fold_dir, model)
            if train.patience is not None and epoch + 1 - best["epoch"] >= train.patience:
                stopped_early = True
                log.info("early stop after epoch %d: no better validation NSE since epoch %d", epoch + 1, best["epoch"])
        row["seconds"] = round(time.perf_counter() - started, 3)
        metrics.append(row)
        save_checkpoint(fold_dir, epoch + 1, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch + 1, "metrics": metrics, "best": best, "stopped_early": stopped_early,
            "config": config.model_dump(mode="json"), **(extra_state or {}),
        }, keep=2)
        write_metrics(fold_dir, metrics)
        log.info("epoch %d/%d: train %s %.4f%s (%d batches, %.1f s)", epoch + 1, train.epochs, train.loss,
                 row["train_loss"], f", valid NSE {row['valid_nse']:.3f}" if validation is not None else "",
                 batches, row["seconds"])
    _warn_if_undertrained(metrics, sum(int(r.get("batches", 0)) for r in metrics), stopped_early)
    if validation is not None and best["epoch"] > 0:
        _load_best(fold_dir, model)
        log.info("predicting with the best validation epoch %d (median NSE %.3f)", best["epoch"], best["nse"])
    model.eval()
    return metrics


def best_epoch(metrics: list[dict[str, Any]]) -> int | None:
    """The epoch whose weights made the predictions: the best validation NSE, else the last."""
    scored = [(row["valid_nse"], row["epoch"]) for row in metrics
              if isinstance(row.get("valid_nse"), float) and np.isfinite(row["valid_nse"])]
    if scored:
        return int(max(scored)[1])
    return int(metrics[-1]["epoch"]) if metrics else None
