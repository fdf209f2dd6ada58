"""A run folder: whose it is (lock and marker), its ``config.yaml``, and when it may be resumed.

Every training run writes into a folder it may be asked to continue later (a preempted pod, a
second ``stefaland pretrain`` with the same ``--out``). Continuing with another config would mix
two experiments in one folder without a word, so the config the folder was started with is kept
in it and compared before anything is written; and only one process may write a folder at once,
so it is locked for as long as the run trains (see :mod:`stefaland.outputs` for locks and markers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ..errors import StefaLandError
from ..fileio import exists, join, read_bytes, write_bytes_atomic
from ..outputs import Claim, adopt_output, claim_output, lock_output

CONFIG_FILE = "config.yaml"
Config = TypeVar("Config")


def config_url(directory: str) -> str:
    return join(directory, CONFIG_FILE)


def refuse_other_config(directory: str, config: Config, read: Callable[[bytes, str], Config],
                        same: Callable[[Config, Config], bool] = lambda saved, ours: saved == ours,
                        what: str = "run folder") -> None:
    """One line when ``directory`` holds a run started with a config other than ``config``.

    ``read(raw, url)`` parses the saved ``config.yaml``; ``same(saved, ours)`` compares the two
    (a stage may leave out keys that change how a run executes but not what it computes).
    """
    url = config_url(directory)
    if exists(url) and not same(read(read_bytes(url), url), config):
        raise StefaLandError(f"{url}: this {what} holds a run with a different config; use a new --out or the same config")


def write_config(directory: str, text: str) -> str:
    """``<directory>/config.yaml``, written whole: what the next resume is compared with."""
    url = config_url(directory)
    write_bytes_atomic(url, text.encode())
    return url


def claim_run_folder(out: str, kind: str) -> Claim:
    """Lock the run folder ``out`` and check it is new (or empty) or a StefaLand ``kind`` run.

    A folder of other files, a plain file, an S3 prefix holding other things or another kind of
    output is refused in one line and left untouched; a second process training into the same
    folder gets "being written by …". The lock is refreshed every minute from a background thread
    (:meth:`stefaland.outputs.Claim.keep_alive`), so a run killed on another machine (a preempted
    pod) frees it ten minutes later, and the replacement pod of the same Kubernetes run at once.
    """
    return claim_output(out, kind, resumable=True).kept_alive()


def adopt_run_folder(out: str, kind: str) -> bool:
    """Mark ``out`` as a ``kind`` run shared by writers that each lock a part of it (:func:`lock_part`)."""
    return adopt_output(out, kind)


def lock_part(directory: str, kind: str) -> Claim:
    """The lock of one part of an adopted run folder (``<out>/fold-<k>``), refreshed every minute.

    The pods of an Indexed Job train their folds in parallel while two writers of one fold never
    both run.
    """
    return lock_output(directory, kind).kept_alive()
