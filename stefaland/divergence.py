"""Stop a diverged run at the step it diverged, before it poisons a checkpoint.

Why: a NaN loss or gradient does not stop PyTorch. One NaN gradient passed to the optimiser turns
every weight into NaN, the run carries on "training" for hours, and its checkpoints (and every
finetune or prediction built on them) hold nothing. Pretraining and finetuning call
:func:`check_finite_step` after the backward pass (loss and gradient norm: before the optimiser
step, so the weights are still the last good ones) and after the step (weights), and
:func:`nonfinite_tensor` guards every checkpoint write.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from .errors import StefaLandError

HINT = "lower the learning rate (optim.lr / train.lr), tighten gradient clipping, or check the inputs for extreme values"


class DivergenceError(StefaLandError):
    """A non-finite loss, gradient norm or weight: the run cannot continue meaningfully."""


def _finite(value: torch.Tensor | float) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value.detach()).all())
    return math.isfinite(float(value))


def _first_nonfinite_parameter(model: torch.nn.Module) -> str | None:
    """Name of the first parameter holding a NaN or ±inf, or None (one device sync for all)."""
    named = [(n, p.detach()) for n, p in model.named_parameters() if p.is_floating_point() and p.numel()]
    if not named:
        return None
    # sums propagate NaN and inf; an overflow of a finite sum to inf is re-checked element-wise
    sums = torch.stack([p.float().sum() for _, p in named])
    if bool(torch.isfinite(sums).all()):
        return None
    for (name, tensor), total in zip(named, sums.tolist()):
        if not math.isfinite(total) and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def check_finite_step(loss: torch.Tensor | float | None, grad_norm: torch.Tensor | float | None,
                      model: torch.nn.Module | None, epoch: int, step: int, run: str = "training") -> None:
    """Raise :class:`DivergenceError` naming ``epoch`` and ``step`` (printed as given, so pass the
    1-based numbers a user sees) when the loss, the gradient norm or any weight of ``model`` is
    NaN or infinite. Any argument may be None to skip that check (e.g. weights only after the
    optimiser step)."""
    where = f"{run} diverged at epoch {epoch}, step {step}"
    if loss is not None and not _finite(loss):
        raise DivergenceError(f"{where}: the loss is {float(loss)}; {HINT}")
    if grad_norm is not None and not _finite(grad_norm):
        raise DivergenceError(f"{where}: the gradient norm is {float(grad_norm)}; {HINT}")
    if model is not None:
        name = _first_nonfinite_parameter(model)
        if name is not None:
            raise DivergenceError(f"{where}: weight {name!r} holds NaN or inf values; {HINT}")


def _tensors(value: Any, path: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _tensors(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{path}[{index}]")


def nonfinite_tensor(state: Any) -> str | None:
    """Path (``objective.encoder.w``, ``optimizer.state.3.exp_avg``) of the first floating-point
    tensor in a nested state holding NaN or inf, or None when every tensor is finite."""
    for path, tensor in _tensors(state, ""):
        if tensor.is_floating_point() or tensor.is_complex():
            if tensor.numel() and not bool(torch.isfinite(tensor).all()):
                return path
    return None
