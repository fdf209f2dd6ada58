"""``stefaland pretrain``: masked (CVGM) pretraining of the encoder on a store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from stefaland.errors import StefaLandError

if TYPE_CHECKING:
    from stefaland.pretrain.config import PretrainConfig


def _default_out(config: str | None) -> str:
    return os.path.join("runs", f"pretrain-{Path(config).stem if config else 'default'}")


@click.command("pretrain")
@click.option("--store", required=True, help="Store built by 'stefaland data build' (path or s3:// URL).")
@click.option("--config", "config_path", type=str, default=None,
              help="Run config YAML (see configs/pretrain_default.yaml); defaults when omitted.")
@click.option("--out", type=str, default=None,
              help="Run folder (path or s3:// URL) for config, checkpoints, metrics; default runs/pretrain-<config name>.")
@click.option("--resume/--no-resume", default=None,
              help="Continue from the run folder's latest checkpoint (default: when there is one).")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local processes (torchrun + DistributedDataParallel; gloo on CPU, nccl on GPU).")
@click.option("--decoder", type=click.Choice(["lstm", "bilstm"]), default=None,
              help="Override model.decoder: bilstm (the paper) or lstm (the released weights).")
@click.option("--split", default=None,
              help="With --fold: leave that fold of this holdout scheme (store coordinate fold_<split>, or "
                   "--split-file) out of pretraining, as data.exclude does; each fold's run is <out>/fold-<k>.")
@click.option("--fold", default=None,
              help="With --split: 'all' (every fold of the split, one run each), one fold id, or a list "
                   "like 1,3,5 / 1-10. Finetuning reads them with model.pretrained: <out>/fold-{fold}.")
@click.option("--split-file", default=None, help="With --split: a split file instead of the store's fold_<split>.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def pretrain(store: str, config_path: str | None, out: str | None, resume: bool | None, nproc: int,
             decoder: str | None, split: str | None, fold: str | None, split_file: str | None,
             quiet: bool) -> None:
    """Pretrain the StefaLand encoder by masked reconstruction of forcings and attributes.

    ``--split pub --fold all`` pretrains once per fold of the split, each run without that fold's
    sites (the paper's leak-free PUB/PUR setup), into <out>/fold-<k>."""
    from stefaland.pretrain import load_config
    from stefaland.pretrain.config import with_overrides

    out = out or _default_out(config_path)
    source = config_path or "the default config"
    config = load_config(config_path)  # validate before spawning anything
    if decoder:  # saved in <out>/config.yaml, so the run stays repeatable
        config = with_overrides(config, {"model": {"decoder": decoder}}, f"{source} with --decoder {decoder}")
    if (split is None) != (fold is None):
        raise StefaLandError("--split and --fold go together (e.g. --split pub --fold all)")
    if split_file and split is None:
        raise StefaLandError("--split-file needs --split and --fold")
    if split is None:
        _pretrain_one(store, config, out, resume, nproc, quiet)
        return
    if config.data.exclude is not None:
        raise StefaLandError(f"{config_path}: data.exclude is set and --split/--fold would replace it; "
                             "drop one of them")
    from stefaland import fileio

    for k in _folds(store, split, fold, split_file):
        exclude = {"split": split, "fold": k, "split_file": split_file}
        fold_config = with_overrides(config, {"data": {"exclude": exclude}}, f"{source} with --split {split} --fold {k}")
        _pretrain_one(store, fold_config, fileio.join(out, f"fold-{k}"), resume, nproc, quiet)


def _folds(store: str, split: str, fold: str, split_file: str | None) -> list[int]:
    """The fold ids of ``--fold`` (all / 3 / 1,3,5 / 1-10), each checked against the split."""
    from stefaland.run.folds import fold_assignment, fold_ids
    from stefaland.store import open_store

    known = fold_ids(fold_assignment(open_store(store), split, split_file))
    if not known:
        raise StefaLandError(f"{store}: split '{split}' assigns no site to any fold")
    if fold.strip() == "all":
        return known
    wanted: list[int] = []
    try:
        for part in fold.split(","):
            first, dash, last = part.strip().partition("-")
            wanted += list(range(int(first), int(last) + 1)) if dash else [int(first)]
    except ValueError:
        raise StefaLandError(f"--fold {fold!r}: expected 'all', a fold id, a list like 1,3,5 or a range like 1-10") from None
    wanted = sorted(set(wanted))
    unknown = [k for k in wanted if k not in known]
    if unknown:
        raise StefaLandError(f"--fold {fold}: fold {unknown[0]} is not in split {split!r} "
                             f"(folds: {', '.join(map(str, known))})")
    return wanted


def _pretrain_one(store: str, config: PretrainConfig, out: str, resume: bool | None, nproc: int, quiet: bool) -> None:
    """One pretraining run of ``config`` into ``out``: here, or on ``nproc`` local processes.

    The workers read the parent's validated config (overrides and the fold's exclusion applied) from
    a file, rather than a command line rebuilt from this one's options, so they run exactly it.
    """
    from stefaland.pretrain import pretrain as run_pretraining

    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        _launch(store, config, out, resume, nproc, quiet)
        return
    result = run_pretraining(store, config, out, resume=resume, quiet=quiet)
    if int(os.environ.get("RANK", 0)) == 0:
        evals = [row for row in result.metrics if row["kind"] == "eval" and "recon" in row]
        summary = f"; masked reconstruction {evals[-1]['recon']:.4f} vs predict-the-mean {evals[-1]['baseline']:.4f}" if evals else ""
        click.echo(f"pretrained {result.global_step} steps ({result.epochs_done} epochs){summary}; run folder {out}")


def _launch(store: str, config: PretrainConfig, out: str, resume: bool | None, nproc: int, quiet: bool) -> None:
    """``stefaland pretrain`` for this one run on ``nproc`` processes (torchrun, gloo on CPU, nccl on GPU)."""
    import tempfile

    from stefaland.pretrain.distributed import launch

    with tempfile.TemporaryDirectory(prefix="stefaland-pretrain-") as folder:
        path = os.path.join(folder, "config.yaml")
        Path(path).write_text(config.to_yaml())
        args = ["pretrain", "--store", store, "--config", path, "--out", out]
        args += [] if resume is None else ["--resume" if resume else "--no-resume"]
        args += ["--quiet"] if quiet else []
        status = launch(nproc, args)
    if status != 0:
        raise StefaLandError(f"pretraining on {nproc} processes failed (torchrun exit status {status}); see the log above")
