"""The pretraining runs one command asks for: one run, or one per fold of a holdout, each here or on
several local processes.

Pretraining once per fold (``--split pub --fold all``) is the paper's leak-free PUB/PUR setup: the
run for fold ``k`` never samples fold ``k``'s sites (``data.exclude``), and finetuning fold ``k``
reads it through ``model.pretrained: <out>/fold-{fold}``. The folds, their ids and their folders
come from the holdout (:mod:`stefaland.splits.plan`), as they do for finetuning.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import StefaLandError
from ..fileio import join
from .config import PretrainConfig, with_overrides
from .trainer import PretrainResult, pretrain


@dataclass(frozen=True)
class PretrainRun:
    """One pretraining run: its validated config and its run folder (``fold``: the fold it leaves out)."""

    config: PretrainConfig
    out: str
    fold: int | None = None


def plan_runs(store: str, config: PretrainConfig, out: str, split: str | None = None, spec: str | None = None,
              split_file: str | None = None, source: str = "the config") -> list[PretrainRun]:
    """The run ``config`` into ``out``; with ``split``, one run per fold ``spec`` names (``all``, ``3``,
    ``1,2``, ``1-5``), each leaving its fold out, into ``<out>/fold-<k>``.

    Every fold is checked against the store's (or ``split_file``'s) folds before any run starts.
    """
    if split is None:
        return [PretrainRun(config, out)]
    if config.data.exclude is not None:
        raise StefaLandError(f"{source}: data.exclude is set and --split/--fold would replace it; drop one of them")
    from ..splits import ALL, holdout_for
    from ..store import open_store

    holdout = holdout_for("", split)
    if not holdout.holds_out_sites:
        raise StefaLandError(f"--split {split}: pretraining leaves a fold's sites out, and the {split} holdout "
                             "holds out no site; pretrain once, without --split")
    return [PretrainRun(_excluding(config, split, fold.id, split_file, source), join(out, fold.folder), fold.id)
            for fold in holdout.plan(open_store(store), spec or ALL, split_file)]


def _excluding(config: PretrainConfig, split: str, fold: int, split_file: str | None, source: str) -> PretrainConfig:
    exclude = {"split": split, "fold": fold, "split_file": split_file}
    return with_overrides(config, {"data": {"exclude": exclude}}, f"{source} with --split {split} --fold {fold}")


def run_all(store: str, runs: list[PretrainRun], resume: bool | None = None, nproc: int = 1,
            quiet: bool = False) -> Iterator[PretrainResult | None]:
    """Each run in turn (:func:`run_one`), its result as soon as it is done."""
    for run in runs:
        yield run_one(store, run, resume, nproc, quiet)


def run_one(store: str, run: PretrainRun, resume: bool | None = None, nproc: int = 1,
            quiet: bool = False) -> PretrainResult | None:
    """One run, here or on ``nproc`` local processes (None then: the workers hold the result).

    The workers read this process's validated config (overrides and the fold's exclusion applied)
    from a file, rather than a command line rebuilt from the options, so they run exactly it.
    """
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        _launch(store, run, resume, nproc, quiet)
        return None
    return pretrain(store, run.config, run.out, resume=resume, quiet=quiet)


def _launch(store: str, run: PretrainRun, resume: bool | None, nproc: int, quiet: bool) -> None:
    """``stefaland pretrain`` for this one run on ``nproc`` processes (torchrun, gloo on CPU, nccl on GPU)."""
    from .distributed import launch

    with tempfile.TemporaryDirectory(prefix="stefaland-pretrain-") as folder:
        path = os.path.join(folder, "config.yaml")
        Path(path).write_text(run.config.to_yaml())
        args = ["pretrain", "--store", store, "--config", path, "--out", run.out]
        args += [] if resume is None else ["--resume" if resume else "--no-resume"]
        args += ["--quiet"] if quiet else []
        status = launch(nproc, args)
    if status != 0:
        raise StefaLandError(f"pretraining on {nproc} processes failed (torchrun exit status {status}); see the log above")
