"""Data and configs shared by both sides of ``vs_neuralhydrology.py``: one ``Case`` per data set.

A case names a CAMELS-US-layout folder both tools read unchanged (neuralhydrology's ``camels_us``
dataset globs ``basin_mean_forcing/<forcing>/**/<id>_*_forcing_leap.txt``, so the virtual world's
``synthetic`` product is read as ``forcings: [synthetic]``), the same inputs under each tool's names,
the same train/test basins (PUB-style: the test basins are never trained on, same period) and the
same hyper-parameters. Everything is written under a scratch folder, never into the repository.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
STATICS = ["elev_mean", "slope_mean", "area_gages2", "frac_forest", "lai_max", "lai_diff", "gvf_max", "gvf_diff",
           "soil_depth_pelletier", "soil_depth_statsgo", "soil_porosity", "soil_conductivity", "max_water_content",
           "sand_frac", "silt_frac", "clay_frac", "carbonate_rocks_frac", "geol_permeability", "p_mean", "pet_mean",
           "aridity", "frac_snow", "high_prec_freq", "high_prec_dur", "low_prec_freq", "low_prec_dur"]
OURS_DYNAMIC = ["prcp", "srad", "tmax", "tmin", "vp", "dayl"]
REAL_TEST = ["01013500", "02046000", "03439000", "08023080"]  # the sample's own test + validation basins


@dataclass
class Hyper:
    """What "same config" means here: both tools get exactly these."""

    hidden: int = 256
    seq_len: int = 365
    batch_size: int = 256
    epochs: int = 2
    batches_per_epoch: int = 4  # NH max_updates_per_epoch == our iterations_per_epoch
    lr: float = 1e-3  # Adam (neuralhydrology has no Adadelta)
    dropout: float = 0.2
    seed: int = 111111


@dataclass
class Case:
    name: str
    root: Path  # CAMELS-US layout both tools read
    catalog: str
    sources: list[str] | None
    env: dict[str, str]
    nh_forcing: str
    nh_dynamic: list[str]  # the OURS_DYNAMIC columns, as neuralhydrology names them
    store_start: str  # one year before train_start: NH's first sequence needs seq_len - 1 days of history
    train: tuple[str, str]
    test: tuple[str, str]
    train_basins: list[str] = field(default_factory=list)
    test_basins: list[str] = field(default_factory=list)


def real_case(work: Path) -> Case:
    """The 19 real CAMELS basins (NLDAS; Tmax == Tmin in these files) with the 671-basin attribute tables."""
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))  # the tests' helper modules
    from _camels_sample import link_camels_sample

    root = link_camels_sample(SHARED, work / "camels_real")
    basins = sorted(p.name[:8] for p in (root / "basin_mean_forcing" / "nldas").glob("*/*_forcing_leap.txt"))
    return Case("camels-real-19", root, str(REPO / "catalog" / "camels.yaml"),
                ["forcing_nldas", "attributes", "streamflow"], {"CAMELS_ROOT": str(root)}, "nldas",
                ["PRCP(mm/day)", "SRAD(W/m2)", "Tmax(C)", "Tmin(C)", "Vp(Pa)", "Dayl(s)"],
                "2000-10-01", ("2001-10-01", "2008-09-30"), ("2007-10-01", "2008-09-30"),
                [b for b in basins if b not in REAL_TEST], [b for b in basins if b in REAL_TEST])


def virtual_case(work: Path, n_sites: int, years: int, seed: int = 0) -> tuple[Case, float]:
    """A virtual world in CAMELS-US files; gauged basins only, PUB fold 1 held out. Returns (case, synth s)."""
    import time

    from stefaland.synth import write_virtual_world

    root = work / f"virtual_{n_sites}x{years}y"
    started = time.perf_counter()
    catalog = write_virtual_world(root, n_sites=n_sites, years=years, seed=seed, quiet=True)
    synth_s = time.perf_counter() - started
    folds = pd.read_csv(root / "camels_attributes_v2.0" / "synthetic_folds.txt", sep=";", dtype={"gauge_id": str})
    gauged = {p.name[:8] for p in (root / "usgs_streamflow").glob("*/*_streamflow_qc.txt")}
    folds = folds[folds["gauge_id"].isin(gauged)]
    last = 1980 + years - 1
    case = Case(f"virtual-{n_sites}", root, str(catalog), None, {}, "synthetic",
                ["prcp(mm/day)", "srad(W/m2)", "tmax(C)", "tmin(C)", "vp(Pa)", "dayl(s)"],
                "1980-01-01", ("1981-01-01", f"{last}-12-31"), (f"{last}-01-01", f"{last}-12-31"),
                sorted(folds.loc[folds["pub_fold"] != 1, "gauge_id"]),
                sorted(folds.loc[folds["pub_fold"] == 1, "gauge_id"]))
    return case, synth_s


def _nh_date(iso: str) -> str:
    year, month, day = iso.split("-")
    return f"{day}/{month}/{year}"


def write_nh_config(case: Case, hyper: Hyper, folder: Path, overrides: dict | None = None) -> Path:
    """neuralhydrology YAML: cudalstm, the same inputs, sequence-to-sequence RMSE loss like ours.

    ``overrides`` replace or add keys (e.g. ``skill_camels_temporal.py``: NSE loss, an epoch-keyed
    learning-rate schedule, ``predict_last_n: 1`` as neuralhydrology's CAMELS example trains).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("\n".join(case.train_basins) + "\n")
    (folder / "test.txt").write_text("\n".join(case.test_basins) + "\n")
    config = {
        "experiment_name": f"bench_{case.name}", "run_dir": str(folder / "runs"),
        "train_basin_file": str(folder / "train.txt"), "validation_basin_file": str(folder / "test.txt"),
        "test_basin_file": str(folder / "test.txt"),
        "train_start_date": _nh_date(case.train[0]), "train_end_date": _nh_date(case.train[1]),
        "validation_start_date": _nh_date(case.test[0]), "validation_end_date": _nh_date(case.test[1]),
        "test_start_date": _nh_date(case.test[0]), "test_end_date": _nh_date(case.test[1]),
        "device": "cpu", "metrics": ["NSE"], "model": "cudalstm", "head": "regression",
        "output_activation": "linear", "hidden_size": hyper.hidden, "initial_forget_bias": 3,
        "output_dropout": hyper.dropout, "optimizer": "Adam", "loss": "RMSE",
        "learning_rate": hyper.lr, "batch_size": hyper.batch_size, "epochs": hyper.epochs,
        "max_updates_per_epoch": hyper.batches_per_epoch, "clip_gradient_norm": 1.0,
        # the loss covers every day of the window, as in LSTM-SL (hydroDL); evaluation keeps the last day
        "predict_last_n": hyper.seq_len, "seq_length": hyper.seq_len,
        "num_workers": 0, "log_interval": 1, "log_tensorboard": False, "log_n_figures": 0,
        "save_weights_every": 1, "dataset": "camels_us", "data_dir": str(case.root),
        "forcings": [case.nh_forcing], "dynamic_inputs": case.nh_dynamic,
        "target_variables": ["QObs(mm/d)"], "clip_targets_to_zero": ["QObs(mm/d)"],
        "static_attributes": STATICS, "seed": hyper.seed,
    }
    config.update(overrides or {})
    path = folder / "nh_config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_our_specs(case: Case, hyper: Hyper, folder: Path) -> tuple[Path, Path]:
    """Our finetune YAML + split file (fold 0 = train, 1 = test) and the two runner specs."""
    from stefaland.splits.splitfile import Split, write_split

    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "task": "camels",
        "data": {"dynamic": OURS_DYNAMIC, "static": STATICS, "target": "streamflow",
                 "train_start": case.train[0], "train_end": case.train[1],
                 "test_start": case.test[0], "test_end": case.test[1], "seq_len": hyper.seq_len},
        "model": {"name": "lstm", "hidden": hyper.hidden, "dropout": hyper.dropout},
        "train": {"epochs": hyper.epochs, "batch_size": hyper.batch_size, "optimizer": "adam", "lr": hyper.lr,
                  "loss": "rmse", "iterations_per_epoch": hyper.batches_per_epoch, "grad_clip": 1.0,
                  "seed": hyper.seed, "device": "cpu"},
    }
    (folder / "finetune.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    folds = pd.Series([0] * len(case.train_basins) + [1] * len(case.test_basins),
                      index=case.train_basins + case.test_basins, dtype="int16")
    write_split(Split(folds, "camels", "bench", None, {0: "train", 1: "test"}), str(folder / "split.csv"), force=True)
    store = folder / "store.zarr"
    build = {"catalog": case.catalog, "store": str(store), "shard_size": 64, "sources": case.sources,
             "start": case.store_start, "end": case.train[1], "env": case.env}
    train = {"store": str(store), "config": str(folder / "finetune.yaml"), "out": str(folder / "run"),
             "fold": 1, "split_file": str(folder / "split.csv")}
    (folder / "build_spec.json").write_text(json.dumps(build, indent=1))
    (folder / "train_spec.json").write_text(json.dumps(train, indent=1))
    return folder / "build_spec.json", folder / "train_spec.json"
