"""Which torch device a run trains on, and how many CPU threads it uses.

Pretraining and finetuning read the same setting (``train.device``); only pretraining runs under
torchrun, where each process takes the GPU of its local rank.
"""

from __future__ import annotations

import torch

from ..errors import StefaLandError

AUTO = "auto"
KEY = "train.device"


def select_device(choice: str, local_rank: int | None = None) -> torch.device:
    """``auto``: CUDA when there is one, else the CPU; otherwise the named device.

    With ``local_rank`` (a torchrun process) ``cuda`` means the local rank's GPU; without it,
    ``choice`` is any torch device string (``cuda:1``). A device this machine or this torch build
    cannot give is refused in one line here, before any data is read, rather than as torch's
    assertion traceback at the first ``.to(device)``.
    """
    if choice == AUTO:
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    device = _parse(choice)
    if device.type == "cuda":
        _check_cuda(choice, device)
    elif device.type == "mps":
        _check_mps(choice)
    if local_rank is None:
        return device
    if device.type == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _parse(choice: str) -> torch.device:
    try:
        return torch.device(choice)
    except (RuntimeError, TypeError, ValueError):
        raise StefaLandError(f"{KEY} is {choice!r}, not a torch device; use 'auto', 'cpu', 'cuda', 'cuda:N' or "
                             "'mps'") from None


def _build() -> str:
    """``torch 2.4.0+cpu`` / ``torch 2.4.0, CUDA 12.4``: what the error lines say this torch is."""
    cuda = torch.version.cuda
    return f"torch {torch.__version__}" + (f", CUDA {cuda}" if cuda else "")


def _check_cuda(choice: str, device: torch.device) -> None:
    """Why: a CPU-only torch fails with "Torch not compiled with CUDA enabled" deep in the model."""
    if torch.version.cuda is None and torch.version.hip is None:
        raise StefaLandError(f"{KEY} is {choice!r} but this torch build has no CUDA ({_build()}); use 'auto' or "
                             "'cpu', or install a CUDA build of torch")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise StefaLandError(f"{KEY} is {choice!r} but no CUDA device is available ({_build()}); use 'auto' or "
                             "'cpu', or check the driver and CUDA_VISIBLE_DEVICES")
    if device.index is not None and device.index >= count:
        raise StefaLandError(f"{KEY} is {choice!r} but this machine has {count} CUDA device(s) "
                             f"(cuda:0..cuda:{count - 1}); choose one of them or 'cuda'")


def _check_mps(choice: str) -> None:
    if not torch.backends.mps.is_built():
        raise StefaLandError(f"{KEY} is {choice!r} but this torch build has no MPS (Apple GPU) support "
                             f"({_build()}); use 'auto' or 'cpu'")
    if not torch.backends.mps.is_available():
        raise StefaLandError(f"{KEY} is {choice!r} but no MPS (Apple GPU) device is available ({_build()}); "
                             "use 'auto' or 'cpu'")


def set_threads(threads: int | None) -> None:
    """CPU threads of this process (``None``: torch's default); ``train.num_threads`` / ``train.threads``."""
    if threads:
        torch.set_num_threads(threads)
