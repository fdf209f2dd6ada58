"""Epoch loop with a checkpoint after every epoch, so an interrupted finetune resumes.

Randomness is derived from (seed, epoch): the windows an epoch draws and its dropout masks do
not depend on whether the run was interrupted before it, so a resumed run ends with the same
weights as an uninterrupted one. Checkpoint files are written whole before ``latest.json`` is
pointed at them (the pretraining checkpoint module does exactly that), and ``metrics.csv`` is
rewritten atomically after each epoch.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from stefaland import storage
from stefaland.errors import StefaLandError
from stefaland.pretrain.checkpoint import load_latest, save_checkpoint
from stefaland.progress import progress

from .config import FinetuneConfig
from .data import SiteData, WindowSampler
from .models.registry import trainable_parameters

log = logging.getLogger("stefaland.finetune")

METRICS_FILE = "metrics.csv"


def masked_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """RMSE (or MSE) over the observed cells only; NaN targets count for nothing."""
    observed = torch.isfinite(target)
    error = torch.where(observed, prediction - torch.nan_to_num(target), torch.zeros_like(prediction))
    mse = (error**2).sum() / observed.sum().clamp_min(1)
    return torch.sqrt(mse + 1e-8) if kind == "rmse" else mse


def make_optimizer(config: FinetuneConfig, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    lr = config.train.learning_rate()
    if config.train.optimizer == "adadelta":
        return torch.optim.Adadelta(parameters, lr=lr)
    if config.train.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    return torch.optim.AdamW(parameters, lr=lr)


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def write_metrics(fold_dir: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    storage.write_bytes_atomic(storage.join(fold_dir, METRICS_FILE), buffer.getvalue().encode())


def train_model(model: nn.Module, data: SiteData, config: FinetuneConfig, fold_dir: str,
                extra_state: dict[str, Any] | None = None, quiet: bool = False) -> list[dict[str, Any]]:
    """Train ``model`` on ``data`` (training sites only) for ``config.train.epochs``; resume from ``fold_dir``."""
    train = config.train
    device = train.torch_device()
    model.to(device)
    parameters = trainable_parameters(model)
    if not parameters:
        raise StefaLandError(f"model {config.model.name!r} has no trainable parameters")
    optimizer = make_optimizer(config, parameters)
    metrics: list[dict[str, Any]] = []
    start_epoch = 0
    state = load_latest(fold_dir)
    if state is not None:
        model.load_state_dict(state["model"])  # copies into the tensors already on `device`
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, metrics = int(state["epoch"]), list(state["metrics"])
        log.info("resuming %s after epoch %d of %d", fold_dir, start_epoch, train.epochs)
    warmup = int(getattr(model, "warmup", 0))
    length = warmup + config.data.seq_len
    for epoch in range(start_epoch, train.epochs):
        started = time.perf_counter()
        seed = epoch_seed(train.seed, epoch)
        torch.manual_seed(seed)
        sampler = WindowSampler(data, train.batch_size, length, config.data.seq_len, train.iterations_per_epoch,
                                np.random.default_rng(seed))
        model.train()
        total, batches = 0.0, 0
        for batch in progress(sampler, f"epoch {epoch + 1}/{train.epochs}", total=len(sampler), quiet=quiet):
            prediction = model(batch.dynamic.to(device), batch.static.to(device))  # (B, seq_len)
            if batch.target.dim() == 1:  # a static target: the window's mean daily output
                loss = masked_loss(prediction.mean(1), batch.target.to(device), train.loss)
            else:
                loss = masked_loss(prediction, batch.target[:, warmup:].to(device), train.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(parameters, train.grad_clip)
            optimizer.step()
            total, batches = total + float(loss.detach()), batches + 1
        row = {"epoch": epoch + 1, "train_loss": total / max(batches, 1), "batches": batches,
               "seconds": round(time.perf_counter() - started, 3)}
        metrics.append(row)
        save_checkpoint(fold_dir, epoch + 1, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
            "metrics": metrics, "config": config.model_dump(mode="json"), **(extra_state or {}),
        }, keep=2)
        write_metrics(fold_dir, metrics)
        log.info("epoch %d/%d: train %s %.4f (%d batches, %.1f s)", epoch + 1, train.epochs, train.loss,
                 row["train_loss"], batches, row["seconds"])
    model.eval()
    return metrics
