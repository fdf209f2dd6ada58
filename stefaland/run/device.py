"""Which torch device a run trains on, and how many CPU threads it uses.

Pretraining and finetuning read the same setting (``train.device``); only pretraining runs under
torchrun, where each process takes the GPU of its local rank.
"""

from __future__ import annotations

import torch

from ..errors import StefaLandError

AUTO = "auto"


def select_device(choice: str, local_rank: int | None = None) -> torch.device:
    """``auto``: CUDA when there is one, else the CPU; otherwise the named device.

    With ``local_rank`` (a torchrun process) ``cuda`` means the local rank's GPU and is refused in
    one line when there is none; without it, ``choice`` is any torch device string (``cuda:1``).
    """
    if choice == AUTO:
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if local_rank is None:
        return torch.device(choice)
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise StefaLandError("config train.device is 'cuda' but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def set_threads(threads: int | None) -> None:
    """CPU threads of this process (``None``: torch's default); ``train.num_threads`` / ``train.threads``."""
    if threads:
        torch.set_num_threads(threads)
