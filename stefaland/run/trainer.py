"""The training loop's skeleton: the steps every StefaLand run takes, each one overridable.

Pretraining and finetuning train different models on different samples, but a run of either goes
through the same steps in the same order (as neuralhydrology's ``BaseTrainer``): pick the device,
open the data, find the checkpoint to resume from, build the model and its optimiser, restore the
checkpoint into them, then train epoch by epoch — each epoch's steps, then its evaluation and its
checkpoint — and finish and tear down. :meth:`Trainer.fit` is that order; a stage overrides the
steps (:class:`stefaland.pretrain.trainer.PretrainTrainer`,
:class:`stefaland.finetune.trainer.FinetuneTrainer`) and never the order, so a resumed run of
either stage repeats what the uninterrupted run did.

Shared here besides the order: the optimiser update with its divergence guard (a NaN gradient
must not reach the weights), the warm-up + cosine learning-rate schedule, and the seeds derived
from a run's position (so a resumed run draws the same batches and dropout masks).
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from ..divergence import check_finite_step


def derived_seed(*position: int) -> int:
    """A seed for one position of a run (``seed, epoch[, step, rank]``): the same on a resumed run."""
    return int(np.random.SeedSequence(list(position)).generate_state(1)[0])


def warmup_cosine(warmup: int, schedule: str, final_ratio: float, total: int) -> Callable[[int], float]:
    """The learning-rate factor of update ``step``: linear warm-up over ``warmup`` updates, then
    ``constant`` or ``cosine`` decay to ``final_ratio`` at update ``total``."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class Trainer(ABC):
    """One training run; :meth:`fit` calls the steps below in this order.

    ``setup`` = :meth:`setup_device`, :meth:`setup_data`, :meth:`load_state`, :meth:`setup_model`,
    :meth:`setup_optimiser`, :meth:`resume` (only with a state), :meth:`wrap_model`; then, while
    epochs remain and nothing :attr:`stopped` the run, :meth:`train_epoch` (which calls
    :meth:`train_step` per batch) and :meth:`end_epoch` (:meth:`evaluate`, :meth:`checkpoint`);
    then :meth:`finish` and :meth:`teardown`, whose value :meth:`fit` returns.
    """

    #: names the run in divergence errors ("pretraining diverged at epoch 2, step 7: …")
    run_name = "training"

    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.epoch = 0  # epochs completed: the next epoch to train is ``epoch + 1``
        self.stopped = False  # set by a step (early stopping) to end the run before ``epochs``
        self.metrics: list[dict[str, Any]] = []

    def fit(self) -> Any:
        self.setup()
        with self.display():
            while self.epoch < self.epochs and not self.stopped:
                self.train_epoch()
                self.end_epoch()
        self.finish()
        return self.teardown()

    def setup(self) -> None:
        self.setup_device()
        self.setup_data()
        state = self.load_state()
        self.setup_model()
        self.setup_optimiser()
        if state is not None:
            self.resume(state)
        self.wrap_model()

    # ------------------------------------------------------------------ setup steps

    @abstractmethod
    def setup_device(self) -> None:
        """Set :attr:`device` (and join a process group, for a distributed run)."""

    def setup_data(self) -> None:
        """Open what the run samples from (nothing to do when the caller passed the data in)."""

    def load_state(self) -> dict[str, Any] | None:
        """The checkpoint to resume from, or None to start afresh."""
        return None

    @abstractmethod
    def setup_model(self) -> None:
        """Build (or place on :attr:`device`) the model whose weights are trained and saved."""

    @abstractmethod
    def setup_optimiser(self) -> None:
        """Set :attr:`optimizer` and :attr:`scheduler` for the model's trainable parameters."""

    def resume(self, state: dict[str, Any]) -> None:
        """Load ``state`` (from :meth:`load_state`) into the model, optimiser, schedule and position."""

    def wrap_model(self) -> None:
        """Wrap the model for execution (DDP, torch.compile); the unwrapped one stays what is saved."""

    def display(self) -> contextlib.AbstractContextManager[Any]:
        """What shows progress for the whole run (per-epoch bars are the stage's own)."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ the epochs

    @abstractmethod
    def train_epoch(self) -> None:
        """Train epoch ``epoch + 1`` (or its rest, on a run resumed mid-epoch), one :meth:`train_step` per batch."""

    @abstractmethod
    def train_step(self, batch: Any) -> torch.Tensor:
        """One optimiser update on ``batch``; returns its loss."""

    @abstractmethod
    def end_epoch(self) -> None:
        """After an epoch's steps: :meth:`evaluate`, advance :attr:`epoch`, :meth:`checkpoint`, log."""

    @abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Scores of the current weights on data the run does not train on (empty: nothing to score)."""

    @abstractmethod
    def checkpoint(self) -> None:
        """Save everything a resumed run needs to continue from here, and the metrics so far."""

    def finish(self) -> None:
        """After the last epoch: what the run leaves behind beside its checkpoints."""

    def teardown(self) -> Any:
        """Release what the run holds; returns what :meth:`fit` returns (the metrics rows by default)."""
        return self.metrics

    # ------------------------------------------------------------------ shared by every stage

    def optimise(self, loss: torch.Tensor, parameters: Iterable[torch.nn.Parameter], grad_clip: float,
                 epoch: int, step: int) -> torch.Tensor:
        """Back-propagate ``loss``, clip the gradients to ``grad_clip``, update; returns the gradient norm.

        The divergence guard runs before the optimiser step: a NaN or inf loss or gradient stops
        the run (one line naming ``epoch`` and ``step``) while the weights are still the last good
        ones (under DDP the gradients are averaged first, so every rank stops at the same step).
        """
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        check_finite_step(loss.detach(), grad_norm, None, epoch, step, self.run_name)
        self.optimizer.step()
        self.scheduler.step()
        return grad_norm
