"""``stefaland pretrain``: masked (CVGM) pretraining of the encoder on a store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from stefaland.errors import StefaLandError

if TYPE_CHECKING:
    from stefaland.pretrain.trainer import PretrainResult


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
    from stefaland.pretrain.runs import plan_runs, run_all

    out = out or _default_out(config_path)
    source = config_path or "the default config"
    config = load_config(config_path)  # validate before spawning anything
    if decoder:  # saved in <out>/config.yaml, so the run stays repeatable
        config = with_overrides(config, {"model": {"decoder": decoder}}, f"{source} with --decoder {decoder}")
    if (split is None) != (fold is None):
        raise StefaLandError("--split and --fold go together (e.g. --split pub --fold all)")
    if split_file and split is None:
        raise StefaLandError("--split-file needs --split and --fold")
    runs = plan_runs(store, config, out, split, fold, split_file, source)
    for result in run_all(store, runs, resume, nproc, quiet):
        if result is not None and int(os.environ.get("RANK", 0)) == 0:
            click.echo(_summary(result))


def _summary(result: PretrainResult) -> str:
    """One line: steps, epochs, the last masked reconstruction against predict-the-mean, the run folder."""
    evals = [row for row in result.metrics if row["kind"] == "eval" and "recon" in row]
    recon = f"; masked reconstruction {evals[-1]['recon']:.4f} vs predict-the-mean {evals[-1]['baseline']:.4f}" if evals else ""
    return f"pretrained {result.global_step} steps ({result.epochs_done} epochs){recon}; run folder {result.out}"
