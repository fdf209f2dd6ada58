"""PUB on a virtual world for several finetuning models: skill against climatology and time per fold.

Builds a virtual world and its store, optionally pretrains a small StefaLand encoder on it (for
the stefaland_* models), then runs leave-one-fold-out PUB for each model and prints the mean
held-out RMSE next to a day-of-year climatology of the training sites, plus the seconds per
fold. Finally ``stefaland report`` reads every predictions file. Longer than a test by design.

As in the paper, the encoder is pretrained once per fold with that fold's sites left out
(``data.exclude``), so the held-out basins are unseen by the encoder too.

    python benchmarks/bench_finetune.py --sites 60 --years 4 --epochs 5 \
        --models lstm,linear,random_forest,ablation_resconn,stefaland_resconn,lstm_hbv [--device cuda]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
import yaml

from stefaland.assemble import build_store
from stefaland.finetune import config_from_dict, finetune
from stefaland.store import open_store
from stefaland.synth import write_virtual_world

REPO = Path(__file__).resolve().parents[1]


def pretrain_encoders(store: str, work: Path, d_model: int, split: str) -> str:
    """One encoder per fold of ``split``, each pretrained without that fold; returns the ``{fold}`` path."""
    from stefaland.pretrain import parse_config, pretrain

    config = yaml.safe_load((REPO / "configs" / "pretrain_tiny.yaml").read_text())
    config["model"].update(d_model=d_model, decoder="lstm")
    folds = sorted(int(f) for f in np.unique(open_store(store)[f"fold_{split}"].values) if f >= 0)
    for fold in folds:
        config["data"]["exclude"] = {"split": split, "fold": fold}
        pretrain(store, parse_config(yaml.safe_dump(config), "bench"), str(work / f"pretrain-{fold}"), quiet=True)
    return str(work / "pretrain-{fold}")


def climatology_rmse(store: str, run: Path, split: str) -> tuple[float, float]:
    dataset = open_store(store)
    folds = np.asarray(dataset[f"fold_{split}"].values)
    target = dataset["target"].values[..., 0]
    doy = dataset["time"].dt.dayofyear.values
    errors, baseline = [], []
    for fold in sorted(set(folds[folds >= 0])):
        predictions = xr.open_dataset(run / f"fold-{fold}" / "predictions.nc")
        obs, sim = predictions["obs"].values, predictions["sim"].values
        train = target[folds != fold]
        climatology = np.array([np.nanmean(train[:, doy == d]) for d in doy])
        ok = np.isfinite(obs)
        errors.append(np.sqrt(np.mean((obs - sim)[ok] ** 2)))
        baseline.append(np.sqrt(np.mean((obs - np.broadcast_to(climatology, obs.shape))[ok] ** 2)))
    return float(np.mean(errors)), float(np.mean(baseline))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=60)
    parser.add_argument("--years", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--seq-len", type=int, default=120)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--models", default="lstm,linear,random_forest,ablation_resconn,stefaland_resconn")
    parser.add_argument("--split", default="pub")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", default="/tmp/stefaland-bench-finetune")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    catalog = write_virtual_world(work / "world", n_sites=args.sites, years=args.years, seed=7, quiet=True)
    store = str(work / "world.zarr")
    if not (work / "world.zarr").exists():
        build_store(str(catalog), store, shard_size=16, quiet=True)
    models = args.models.split(",")
    d_model = 32
    pretrained = None
    if any(m.startswith("stefaland_") and m != "stefaland_transformer" for m in models):
        pretrained = pretrain_encoders(store, work, d_model, args.split)
    rows = []
    for name in models:
        config = config_from_dict({
            "data": {"seq_len": args.seq_len, "train_start": "1900-01-01", "train_end": "2100-01-01",
                     "test_start": "1900-01-01", "test_end": "2100-01-01"},
            "model": {"name": name, "hidden": args.hidden, "dropout": 0.0, "pretrained": pretrained,
                      "encoder": {"d_model": d_model, "n_heads": 2, "n_layers": 1, "d_ff": 64, "decoder": "lstm"},
                      "hbv": {"nmul": 4, "warmup_days": 90}, "n_estimators": 50},
            "train": {"epochs": args.epochs, "batch_size": 32, "optimizer": "adam", "lr": 0.005,
                      "iterations_per_epoch": args.iterations, "device": args.device},
        })
        run = work / "runs" / name
        started = time.perf_counter()
        results = finetune(store, config, str(run), args.split, "all", quiet=True)
        seconds = (time.perf_counter() - started) / len(results)
        rmse, clim = climatology_rmse(store, run, args.split)
        rows.append((name, rmse, clim, seconds))
        print(f"{name:>24}: held-out RMSE {rmse:.3f} (climatology {clim:.3f}, ratio {rmse / clim:.2f}); "
              f"{seconds:.1f} s per fold", flush=True)
    from click.testing import CliRunner

    from stefaland_cli.main import cli

    report = CliRunner().invoke(cli, ["report", "camels", "--split", args.split, "--runs", str(work / "runs"),
                                      "--format", "md", "--out", str(work / "report"), "--quiet"])
    print(report.output)


if __name__ == "__main__":
    main()
