"""``stefaland pretrain``: masked (CVGM) pretraining of the encoder on a store."""

from __future__ import annotations

import os
from pathlib import Path

import click

from stefaland.errors import StefaLandError


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
@click.option("--quiet", is_flag=True, help="No progress bar.")
def pretrain(store: str, config_path: str | None, out: str | None, resume: bool | None, nproc: int,
             decoder: str | None, quiet: bool) -> None:
    """Pretrain the StefaLand encoder by masked reconstruction of forcings and attributes."""
    from stefaland.pretrain import load_config
    from stefaland.pretrain import pretrain as run_pretraining
    from stefaland.pretrain.distributed import launch

    out = out or _default_out(config_path)
    config = load_config(config_path)  # validate before spawning anything
    if decoder:
        config.model.decoder = decoder  # saved in <out>/config.yaml, so the run stays repeatable
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        args = ["pretrain", "--store", store, "--out", out]
        args += ["--config", config_path] if config_path else []
        args += [] if resume is None else ["--resume" if resume else "--no-resume"]
        args += ["--decoder", decoder] if decoder else []
        args += ["--quiet"] if quiet else []
        status = launch(nproc, args)
        if status != 0:
            raise StefaLandError(f"pretraining on {nproc} processes failed (torchrun exit status {status}); see the log above")
        return
    result = run_pretraining(store, config, out, resume=resume, quiet=quiet)
    if int(os.environ.get("RANK", 0)) == 0:
        evals = [row for row in result.metrics if row["kind"] == "eval" and "recon" in row]
        summary = f"; masked reconstruction {evals[-1]['recon']:.4f} vs predict-the-mean {evals[-1]['baseline']:.4f}" if evals else ""
        click.echo(f"pretrained {result.global_step} steps ({result.epochs_done} epochs){summary}; run folder {out}")
