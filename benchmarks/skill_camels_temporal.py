"""Skill on the 19 real CAMELS basins, temporal split: StefaLand against neuralhydrology.

Every basin trains on 1994-10-01..2005-09-30 and is scored on 2005-10-01..2013-09-30 (NLDAS
prcp, srad, tmax, vp, dayl — Tmin equals Tmax in these files, so it is left out — and the 26
CAMELS attributes of ``nh_setup.STATICS``). Models:

* **LSTM-SL** (``model.name: lstm``) from a config that names no training choice (``lstm-defaults``),
  or with that setup named in full (``lstm``, ``OURS_TRAIN``), or with early stopping (``lstm-converged``);
* **neuralhydrology** ``cudalstm`` as its CAMELS example trains it (``NH_TRAIN``), in its own
  interpreter (``--nh-python``; it is not a StefaLand dependency, see benchmarks/README.md);
* **StefaLand-resConn** on an encoder pretrained here on the same store (inputs only, all years:
  a temporal split needs no exclusion; pretraining sees the test years' forcings, never streamflow);
* **LSTM-HBV** (``lstm_hbv``, Hargreaves PET from tmax, srad and dayl: ``pet: null``).

Both tools get the same inputs, sequence length (365), batch size, hidden size and number of
optimiser updates (``updates_per_epoch`` x epochs; neuralhydrology's ``max_updates_per_epoch``).
Each run is its own process (``nh_stefaland_side.py`` / ``nh_their_side.py``); ``--jobs`` run at a
time. Every model is scored with ``stefaland.metrics.site_metrics`` against the *same* observations
(the store's test-period streamflow; neuralhydrology's own copy is checked against it).
Results are kept in ``<work>/results.json``: a rerun with the same ``--work`` skips finished runs.

    python benchmarks/skill_camels_temporal.py --work /tmp/skill-camels --quick       # ~12 min on 2 cores
    python benchmarks/skill_camels_temporal.py --work /tmp/skill-camels --converged   # ~3.5 h on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nh_setup import STATICS, Hyper, real_case, write_nh_config  # noqa: E402

HERE = Path(__file__).resolve().parent
DYNAMIC = ["prcp", "srad", "tmax", "vp", "dayl"]  # tmin == tmax in the sample's NLDAS files
NH_DYNAMIC = ["PRCP(mm/day)", "SRAD(W/m2)", "Tmax(C)", "Vp(Pa)", "Dayl(s)"]
STORE_START, TRAIN, TEST = "1993-10-01", ("1994-10-01", "2005-09-30"), ("2005-10-01", "2013-09-30")
SEEDS = [111, 222, 333]

# Ours: Adam with a cosine decay to 0.1 x lr over the planned updates, neuralhydrology's NSE* loss
# (each basin's squared errors / (its std + 0.1)^2), every day of each 365-day window in the loss
# (spin-up 0 scored 0.322 median validation NSE against 0.299 with 180 days out of the loss),
# weight dropout 0.2 (hydroDL), gradient norm clipped at 1. Chosen on the training side only
# (train 1994-10..2002-09, validation 2002-10..2005-09, 300 updates; README). These are now streamflow's
# defaults (loss and optimiser from the target, the rest from TrainConfig): ``lstm`` names them, and
# trains exactly as ``lstm-defaults`` does (tests/test_target_defaults.py).
SPINUP = 0
OURS_TRAIN = {"optimizer": "adam", "lr": 1e-3, "lr_schedule": "cosine", "lr_final": 0.1, "loss": "nse",
              "grad_clip": 1.0, "min_updates": 0}
OURS_DROPOUT = 0.2
# neuralhydrology's CAMELS-US examples (examples/06-Finetuning/531_basins.yml, 01-Introduction):
# cudalstm, NSE loss, Adam from 1e-3 with an epoch-keyed step decay (here 5e-4 after 1/3 and 1e-4
# after 5/6 of the epochs), seq_length 365 with predict_last_n 1, output_dropout 0.4,
# initial_forget_bias 3, gradient norm clipped at 1.
NH_DROPOUT = 0.4


def nh_lr(epochs: int) -> dict[int, float]:
    """{0: 1e-3, 10: 5e-4, 25: 1e-4} for 30 epochs, scaled to ``epochs``."""
    return {0: 1e-3, max(1, round(epochs / 3)): 5e-4, max(2, round(epochs * 5 / 6)): 1e-4}


DEFAULTS = "lstm-defaults"  # LSTM-SL from a config that names no training choice (the results' model key)
# The defaults trained to convergence: the last three training years become a validation period
# (never the test years), every epoch is scored on it, training stops after PATIENCE epochs without
# a better median validation NSE and the best epoch's weights predict. --runs gives the most updates.
CONVERGED = "lstm-converged"
FIT, VALID, PATIENCE = (TRAIN[0], "2002-09-30"), ("2002-10-01", TRAIN[1]), 5


def defaults_config(hyper: Hyper, budget: int, per_epoch: int, seed: int) -> dict:
    """What a new user writes: the periods, the inputs, ``model.name``, ``model.hidden`` and an update
    budget (epochs x updates an epoch, batch size). Loss, optimiser, schedule, dropout, spin-up: the
    package's defaults."""
    return {
        "task": "camels",
        "data": {"dynamic": DYNAMIC, "static": STATICS, "train_start": TRAIN[0], "train_end": TRAIN[1],
                 "test_start": TEST[0], "test_end": TEST[1]},
        "model": {"name": "lstm", "hidden": hyper.hidden},
        "train": {"epochs": budget // per_epoch, "batch_size": hyper.batch_size, "iterations_per_epoch": per_epoch,
                  "seed": seed, "device": "cpu", "threads": 1},
    }


def converged_config(hyper: Hyper, budget: int, per_epoch: int, seed: int) -> dict:
    """The defaults' config with validation-based early stopping: what a user adds to train to convergence."""
    config = defaults_config(hyper, budget, per_epoch, seed)
    config["data"].update({"train_end": FIT[1], "valid_start": VALID[0], "valid_end": VALID[1]})
    config["train"]["patience"] = PATIENCE
    return config


# ``<model>-adadelta``: that run with Adadelta named, the streamflow default before Adam (same runs otherwise)
ADADELTA = "-adadelta"


def our_config(model: str, hyper: Hyper, budget: int, per_epoch: int, seed: int, pretrained: str | None) -> dict:
    if model.endswith(ADADELTA):
        config = our_config(model.removesuffix(ADADELTA), hyper, budget, per_epoch, seed, pretrained)
        config["train"]["optimizer"] = "adadelta"
        return config
    if model == DEFAULTS:
        return defaults_config(hyper, budget, per_epoch, seed)
    if model == CONVERGED:
        return converged_config(hyper, budget, per_epoch, seed)
    section: dict = {"name": model, "hidden": hyper.hidden, "dropout": OURS_DROPOUT}
    if model == "stefaland_resconn":
        section["pretrained"] = pretrained
    if model == "lstm_hbv":  # CAMELS has no PET: Hargreaves from temperature, radiation and day length
        section["hbv"] = {"pet": None, "temperature": ["tmax"], "precipitation": "prcp", "radiation": "srad",
                          "day_length": "dayl"}
    return {
        "task": "camels",
        "data": {"dynamic": DYNAMIC, "static": STATICS, "target": "streamflow", "train_start": TRAIN[0],
                 "train_end": TRAIN[1], "test_start": TEST[0], "test_end": TEST[1], "seq_len": hyper.seq_len,
                 "spinup_days": SPINUP},
        "model": section,
        "train": {**OURS_TRAIN, "epochs": budget // per_epoch, "batch_size": hyper.batch_size,
                  "iterations_per_epoch": per_epoch, "seed": seed, "device": "cpu", "threads": 1},
    }


def nh_overrides(budget: int, per_epoch: int) -> dict:
    epochs = budget // per_epoch
    return {"loss": "NSE", "optimizer": "Adam", "learning_rate": nh_lr(epochs), "predict_last_n": 1,
            "output_dropout": NH_DROPOUT, "initial_forget_bias": 3, "clip_gradient_norm": 1.0,
            "epochs": epochs, "max_updates_per_epoch": per_epoch, "validate_every": None,
            # not used for training (validate_every None); the last training years, never the test period
            "validation_start_date": "01/10/2003", "validation_end_date": "30/09/2005",
            "log_interval": 50, "save_weights_every": epochs}


PRETRAIN = {  # a small encoder: minutes on one CPU core
    "model": {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "dropout": 0.0, "embed_hidden": 16,
              "head_hidden": 16, "decoder": "bilstm", "max_len": 400},
    "data": {"seq_len": 365, "batch_size": 16, "samples_per_site": 32, "dynamic_vars": DYNAMIC,
             "static_vars": STATICS, "start": STORE_START, "end": TEST[1]},
    "masking": {"min_window": 10, "max_window": 40},
    "optim": {"lr": 2e-3, "schedule": "cosine"},
    "train": {"epochs": 6, "seed": 0, "log_every": 20, "eval_batches": 2, "device": "cpu", "num_threads": 1},
}


def run_logged(command: list[str], log: Path, env: dict | None = None) -> float:
    """Run one process (one thread) with its output in ``log``; its wall time, or an error with the log's tail."""
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT,
                               env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if code != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed (exit {code}); see {log}:\n" + log.read_text()[-2000:])
    return time.perf_counter() - started


def load_side(npz: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    arrays = np.load(npz)
    return ([str(b) for b in arrays["basins"]], arrays["dates"].astype("datetime64[D]"),
            arrays["obs"].astype(np.float64), arrays["sim"].astype(np.float64))


class Reference:
    """The observations every model is scored against: the store's test-period streamflow."""

    def __init__(self, store: Path) -> None:
        from stefaland.store import open_store

        dataset = open_store(str(store))
        q = dataset["target"].sel(tvar="streamflow", time=slice(*TEST)).transpose("site", "time")
        self.basins = [str(s) for s in dataset["site"].values]
        self.dates = q["time"].values.astype("datetime64[D]")
        self.obs = q.values.astype(np.float64)

    def align(self, basins: list[str], dates: np.ndarray, values: np.ndarray) -> np.ndarray:
        out = np.full(self.obs.shape, np.nan)
        where = {d: i for i, d in enumerate(dates)}
        cols = np.array([where.get(d, -1) for d in self.dates])
        rows = {b: i for i, b in enumerate(basins)}
        for i, basin in enumerate(self.basins):
            if basin in rows:
                out[i, cols >= 0] = values[rows[basin], cols[cols >= 0]]
        return out

    def score(self, npz: Path, neuralhydrology: bool = False) -> dict:
        """NSE and KGE per basin against the store's observations.

        neuralhydrology converts ft3/s to mm/day with the forcing file's header area, we with
        ``area_gages2`` (05057200: a factor 2.09; others within 4 %), so its observations and
        simulations are on another scale per basin. Its simulation is brought to ours with the exact
        per-basin factor (obs ratio, constant to 1e-7), which leaves its NSE and KGE unchanged, and
        clipped at zero as its tester does for ``clip_targets_to_zero``.
        """
        from stefaland.metrics import site_metrics

        basins, dates, obs, sim = load_side(npz)
        aligned_sim, aligned_obs = self.align(basins, dates, sim), self.align(basins, dates, obs)
        factors = np.ones(len(self.basins))
        if neuralhydrology:
            with np.errstate(all="ignore"):
                ratio = np.where(aligned_obs > 0.01, self.obs / aligned_obs, np.nan)
            factors = np.nanmedian(ratio, axis=1)
            aligned_sim = np.clip(aligned_sim * factors[:, None], 0.0, None)
            aligned_obs = aligned_obs * factors[:, None]
        both = np.isfinite(aligned_obs) & np.isfinite(self.obs)
        metrics = site_metrics(self.obs, aligned_sim, ["NSE", "KGE"], min_valid=30)
        return {"nse": [float(x) for x in metrics["NSE"]], "kge": [float(x) for x in metrics["KGE"]],
                "median_nse": float(np.nanmedian(metrics["NSE"])), "median_kge": float(np.nanmedian(metrics["KGE"])),
                "obs_max_abs_diff": float(np.max(np.abs(aligned_obs[both] - self.obs[both]))) if both.any() else None,
                "negative_days": float(np.mean(aligned_sim[np.isfinite(aligned_sim)] < 0)),
                "unit_factors": [float(f) for f in factors]}


    def median_nse(self, aligned_sim: np.ndarray) -> float:
        """Median NSE of a simulation already on the reference's basins and dates (``align``)."""
        from stefaland.metrics import site_metrics

        return float(np.nanmedian(site_metrics(self.obs, aligned_sim, ["NSE"], min_valid=30)["NSE"]))

    def curve(self, folder: Path, side: dict) -> list[dict]:
        """Test median NSE after each epoch, against the training wall time spent to reach it."""
        arrays = np.load(folder / "curve.npz")
        basins, dates = [str(b) for b in arrays["basins"]], arrays["dates"].astype("datetime64[D]")
        elapsed = side["prepare_s"] + np.cumsum(side["epoch_s"])
        return [{"epoch": i + 1, "seconds": float(elapsed[i]),
                 "median_nse": self.median_nse(self.align(basins, dates, arrays["sim"][i].astype(np.float64)))}
                for i in range(len(arrays["sim"]))]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.work = args, Path(args.work)
        self.hyper = Hyper(hidden=args.hidden, seq_len=365, batch_size=args.batch_size, epochs=1,
                           batches_per_epoch=args.updates_per_epoch, lr=1e-3, dropout=NH_DROPOUT)
        self.results_file = self.work / "results.json"
        self.results = json.loads(self.results_file.read_text()) if self.results_file.exists() else {}
        self.lock = threading.Lock()
        self.case = None
        self.store = self.work / "store.zarr"

    def record(self, key: str, value: dict) -> None:
        """Add one run to results.json, merged with what other drivers on the same ``--work`` recorded
        meanwhile (a run takes up to an hour: neuralhydrology and ours are often separate drivers)."""
        from stefaland.fileio import write_bytes_atomic

        with self.lock:
            on_disk = json.loads(self.results_file.read_text()) if self.results_file.exists() else {}
            self.results = {**on_disk, **self.results, key: value}
            write_bytes_atomic(str(self.results_file), json.dumps(self.results, indent=1).encode())
            print(f"[{time.strftime('%H:%M:%S')}] {key}: median NSE {value['median_nse']:.3f}, KGE "
                  f"{value['median_kge']:.3f} ({value['seconds']:.0f} s)", flush=True)

    def prepare(self) -> None:
        case = real_case(self.work)
        every = sorted(case.train_basins + case.test_basins)  # temporal split: every basin trains and is tested
        self.case = dataclasses.replace(case, nh_dynamic=NH_DYNAMIC, train=TRAIN, test=TEST, store_start=STORE_START,
                                        train_basins=every, test_basins=list(every))
        if not (self.work / "store.built").exists():
            spec = {"catalog": case.catalog, "store": str(self.store), "shard_size": 64, "sources": case.sources,
                    "start": STORE_START, "end": TEST[1], "env": case.env}
            (self.work / "build_spec.json").write_text(json.dumps(spec))
            run_logged([sys.executable, str(HERE / "nh_stefaland_side.py"), "build", str(self.work / "build_spec.json"),
                        str(self.work / "build.json")], self.work / "build.log")
            (self.work / "store.built").write_text("ok")
        self.reference = Reference(self.store)

    def ours(self, model: str, budget: int, seed: int) -> None:
        key = f"{model}|{budget}|{seed}"
        if key in self.results:
            return
        folder = self.run_folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        pretrained = str(self.work / "pretrain") if model == "stefaland_resconn" else None
        if pretrained:
            self.wait_for_pretraining()
            if "PretrainResult(" not in ((self.work / "pretrain.log").read_text()
                                         if (self.work / "pretrain.log").exists() else ""):
                self.pretrain()
        config = our_config(model, self.hyper, budget, self.args.updates_per_epoch, seed, pretrained)
        (folder / "finetune.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        spec = {"store": str(self.store), "config": str(folder / "finetune.yaml"), "out": str(folder / "run"),
                "split": "temporal", "curve": self.args.skill_curve}
        (folder / "spec.json").write_text(json.dumps(spec))
        seconds = run_logged([sys.executable, str(HERE / "nh_stefaland_side.py"), "train", str(folder / "spec.json"),
                              str(folder / "train.json")], folder / "train.log")
        side = json.loads((folder / "train.json").read_text())
        metrics = list(csv_rows(folder / "run" / "temporal" / "metrics.csv"))
        curve = {"curve": self.reference.curve(folder, side)} if (folder / "curve.npz").exists() else {}
        self.record(key, {**self.reference.score(folder / "train.npz"), "seconds": seconds,
                          "train_s": sum(side["epoch_s"]), "updates": sum(side["batches"]),
                          "train_loss": [float(r["train_loss"]) for r in metrics], **curve})

    def run_folder(self, key: str) -> Path:
        """``<work>/runs/<model>-<budget>-<seed>`` of one of our results' keys (``collect`` reads it back)."""
        return self.work / "runs" / key.replace("|", "-")

    def theirs(self, budget: int, seed: int) -> None:
        key = f"neuralhydrology|{budget}|{seed}"
        if key in self.results:
            return
        folder = self.work / "runs" / f"nh-{budget}-{seed}"
        hyper = Hyper(**{**self.hyper.__dict__, "seed": seed})
        config = write_nh_config(self.case, hyper, folder, nh_overrides(budget, self.args.updates_per_epoch))
        seconds = run_logged([self.args.nh_python, str(HERE / "nh_their_side.py"), str(config),
                              str(folder / "nh.json")], folder / "nh.log")
        side = json.loads((folder / "nh.json").read_text())
        self.record(key, {**self.reference.score(folder / "nh.npz", neuralhydrology=True), "seconds": seconds,
                          "train_s": sum(side["epoch_s"]), "updates": sum(side["batches"])})

    def collect(self) -> None:
        """Score finished runs under ``<work>/runs`` that results.json lacks (a run that outlived an
        interrupted driver, or a run folder copied in from another ``--work`` on the same store)."""
        for folder in sorted((self.work / "runs").glob("*")):
            model, budget, seed = folder.name.rsplit("-", 2)
            nh = model == "nh"
            key = f"{'neuralhydrology' if nh else model}|{budget}|{seed}"
            side_file = folder / ("nh.json" if nh else "train.json")
            if key in self.results or not side_file.exists():
                continue
            side = json.loads(side_file.read_text())
            seconds = (side["train_total_s"] + side["evaluate_s"] if nh else
                       side["prepare_s"] + sum(side["epoch_s"]) + side["checkpoint_s"] + side["evaluate_s"])
            extra = {} if nh else {"train_loss": [float(r["train_loss"]) for r in
                                                  csv_rows(folder / "run" / "temporal" / "metrics.csv")]}
            self.record(key, {**self.reference.score(side_file.with_suffix(".npz"), nh), "seconds": seconds,
                              "train_s": sum(side["epoch_s"]), "updates": sum(side["batches"]), **extra})

    def wait_for_pretraining(self) -> None:
        """Another driver's pretraining of this store is still running: use its encoder when done."""
        log = self.work / "pretrain.log"
        while log.exists() and "PretrainResult(" not in log.read_text() and time.time() - log.stat().st_mtime < 1800:
            time.sleep(20)

    def pretrain(self) -> None:
        out = self.work / "pretrain"
        (self.work / "pretrain.yaml").write_text(yaml.safe_dump(PRETRAIN, sort_keys=False))
        code = ("import sys; from stefaland.pretrain import load_config, pretrain; "
                "r = pretrain(sys.argv[1], load_config(sys.argv[2]), sys.argv[3], quiet=True); print(r)")
        seconds = run_logged([sys.executable, "-c", code, str(self.store), str(self.work / "pretrain.yaml"), str(out)],
                             self.work / "pretrain.log")
        print(f"[{time.strftime('%H:%M:%S')}] pretrained the encoder in {seconds:.0f} s ({out})", flush=True)


def csv_rows(path: Path):
    import csv

    with path.open() as handle:
        yield from csv.DictReader(handle)


def seeds_of(item: str) -> tuple[int, list[int]]:
    """``300:3`` = budget 300, the first three SEEDS; ``300:222+333`` = those seeds."""
    budget, seeds = int(item.split(":")[0]), item.split(":")[1]
    return budget, [int(x) for x in seeds.split("+")] if "+" in seeds or int(seeds) > 9 else SEEDS[:int(seeds)]


def plan(args: argparse.Namespace) -> list[tuple]:
    """Longest first, so the two workers finish together; (kind, model, budget, seed)."""
    jobs = []
    for item in filter(None, args.runs.split(",")):
        budget, seeds = seeds_of(item)
        jobs += [("ours", model, budget, seed) for seed in seeds for model in filter(None, args.ours.split(","))]
    if args.nh:
        for item in filter(None, (args.nh_runs or args.runs).split(",")):
            budget, seeds = seeds_of(item)
            jobs += [("theirs", "neuralhydrology", budget, seed) for seed in seeds]
    for model in args.extras.split(","):
        if model:
            jobs.append(("ours", model, args.extras_budget, SEEDS[0]))
    cost = {"lstm_hbv": 2.5, "stefaland_resconn": 1.5, "neuralhydrology": 0.9}
    return sorted(jobs, key=lambda j: -j[2] * cost.get(j[1], 1.0))


# Presets: what a fresh clone runs unattended (timings on 2 shared cores, one thread a run, two at a time).
PRESETS = {
    # the defaults against neuralhydrology at 600 updates of 256 (12 epochs of 50), one seed: about 12 minutes
    "quick": {"runs": "600:1", "ours": DEFAULTS, "extras": "", "batch_size": 256, "updates_per_epoch": 50},
    # each tool's own recipe to its end: neuralhydrology's 30 epochs (8,640 updates) against ours at 4,032,
    # three seeds each, with our test score after every epoch (time to skill): about 3.5 hours
    "converged": {"runs": "4032:3", "nh_runs": "8640:3", "ours": DEFAULTS, "extras": "",
                  "batch_size": 256, "updates_per_epoch": 288, "skill_curve": True},
}


def table(bench: Bench, args: argparse.Namespace) -> str:
    def spread(values: list[float]) -> str:
        mean = float(np.mean(values))
        return f"{mean:.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{mean:.3f}"

    names = {DEFAULTS: "LSTM-SL (StefaLand), config names no training choice", "lstm": "LSTM-SL (StefaLand), the defaults named in full",
             CONVERGED: "LSTM-SL (StefaLand), defaults + early stopping on 2002-10..2005-09",
             DEFAULTS + ADADELTA: "LSTM-SL (StefaLand), defaults with Adadelta named (the default before Adam)",
             CONVERGED + ADADELTA: "LSTM-SL (StefaLand), defaults with Adadelta named + early stopping",
             "neuralhydrology": "neuralhydrology cudalstm",
             "stefaland_resconn": "StefaLand-resConn", "lstm_hbv": "LSTM-HBV (StefaLand)"}
    groups: dict[tuple[str, int], list[dict]] = {}
    for key, value in bench.results.items():
        model, budget, _seed = key.split("|")
        groups.setdefault((model, int(budget)), []).append(value)
    lines = ["| model | updates | updates run | seeds | median test NSE (mean ± sd over seeds) | median test KGE | "
             "s per run | negative days |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    order = list(names)
    for (model, budget), values in sorted(groups.items(), key=lambda g: (g[0][1], order.index(g[0][0]))):
        lines.append(f"| {names[model]} | {budget} | {np.mean([v['updates'] for v in values]):.0f} | {len(values)} | "
                     f"{spread([v['median_nse'] for v in values])} | "
                     f"{spread([v['median_kge'] for v in values])} | {np.mean([v['seconds'] for v in values]):.0f} | "
                     f"{np.mean([v['negative_days'] for v in values]):.1%} |")
    diffs = [v["obs_max_abs_diff"] for k, v in bench.results.items() if k.startswith("neuralhydrology")
             and v["obs_max_abs_diff"] is not None]
    lines.append("")
    lines.append(f"(scored against the store's streamflow for every model; neuralhydrology's observations, brought to "
                 f"the same area, differ from it by at most {max(diffs) if diffs else float('nan'):.2e} mm/day)")
    for budget in sorted({b for _m, b in groups}):
        for ours_model in (DEFAULTS, CONVERGED, "lstm", DEFAULTS + ADADELTA, CONVERGED + ADADELTA):
            ours_, theirs_ = groups.get((ours_model, budget)), groups.get(("neuralhydrology", budget))
            if ours_ and theirs_:
                gap = np.mean([v["median_nse"] for v in ours_]) - np.mean([v["median_nse"] for v in theirs_])
                lines.append(f"{budget} updates: {names[ours_model]} − neuralhydrology median NSE = {gap:+.3f} "
                             f"({'goal met' if gap >= 0 else 'SHORT of the goal'})")
    lines += converged_gaps(groups, names)
    lines += seed_averages(bench)
    lines += ["", *time_to_skill(groups, names, args.skill_target), "", per_basin(bench, groups)]
    return "\n".join(lines)


def seed_averages(bench: Bench) -> list[str]:
    """Median NSE of the mean of each group's seeds' simulations (ours, 2+ seeds): does averaging help?"""
    keys: dict[tuple[str, str], list[str]] = {}
    for key in bench.results:
        model, budget, _seed = key.split("|")
        if model != "neuralhydrology" and (bench.run_folder(key) / "train.npz").exists():
            keys.setdefault((model, budget), []).append(key)
    lines = []
    for (model, budget), group in sorted(keys.items()):
        if len(group) > 1:
            runs = [load_side(bench.run_folder(key) / "train.npz") for key in group]
            mean = np.mean([bench.reference.align(b, d, sim) for b, d, _obs, sim in runs], axis=0)
            single = np.mean([bench.results[key]["median_nse"] for key in group])
            lines.append(f"{model} {budget}: the mean of {len(group)} seeds' simulations scores median NSE "
                         f"{bench.reference.median_nse(mean):.3f} (the runs alone {single:.3f})")
    return lines


def largest_peer_budget(groups: dict) -> tuple[int, list[dict]] | None:
    """neuralhydrology's largest budget here and its runs: its recipe run to its end."""
    budgets = sorted(b for m, b in groups if m == "neuralhydrology")
    return (budgets[-1], groups[("neuralhydrology", budgets[-1])]) if budgets else None


def converged_gaps(groups: dict, names: dict) -> list[str]:
    """Each tool at its own largest budget here (its recipe run to its end): issue 22's +0.05 goal."""
    peer = largest_peer_budget(groups)
    if peer is None:
        return []
    their_budget, theirs = peer[0], np.mean([v["median_nse"] for v in peer[1]])
    lines = []
    for model in (DEFAULTS, "lstm"):
        budgets = sorted(b for m, b in groups if m == model)
        if budgets and budgets[-1] != their_budget:
            gap = np.mean([v["median_nse"] for v in groups[(model, budgets[-1])]]) - theirs
            lines.append(f"each at its largest budget: {names[model]} at {budgets[-1]} − neuralhydrology at "
                         f"{their_budget} median NSE = {gap:+.3f} ({'+0.05 goal met' if gap >= 0.05 else 'short of +0.05'})")
    return lines


def time_to_skill(groups: dict, names: dict, extra_targets: list[float]) -> list[str]:
    """Wall time until a run of ours first scores a neuralhydrology run's final median NSE on the test
    years (runs with ``--skill-curve``), against that run's whole wall time. ``extra_targets``: finals
    of peer runs kept elsewhere (``--skill-target``), compared with the mean wall time of those here."""
    peer = largest_peer_budget(groups)
    curves = {key: values for key, values in groups.items() if all("curve" in v for v in values)}
    if peer is None or not curves:
        return []
    their_budget, theirs = peer
    their_s = float(np.mean([v["seconds"] for v in theirs]))
    targets = [v["median_nse"] for v in theirs] + list(extra_targets)
    lines = [f"Time to skill against neuralhydrology at {their_budget} updates ({their_s:.0f} s a run): the first "
             "epoch of ours at or above its final median NSE, wall s, and that over neuralhydrology's.",
             "| model | updates | run | " + " | ".join(f"≥ {t:.3f}" for t in targets) + " | best |",
             "| --- | ---: | ---: |" + " ---: |" * (len(targets) + 1)]
    for (model, budget), values in sorted(curves.items()):
        for run, value in enumerate(values, 1):
            cells = []
            for target in targets:
                reached = next((point for point in value["curve"] if point["median_nse"] >= target), None)
                cells.append(f"epoch {reached['epoch']}, {reached['seconds']:.0f} s, {reached['seconds'] / their_s:.2f}"
                             if reached else "not reached")
            best = max(value["curve"], key=lambda point: point["median_nse"])
            lines.append(f"| {names[model]} | {budget} | {run} | " + " | ".join(cells)
                         + f" | {best['median_nse']:.3f} (epoch {best['epoch']}) |")
    return lines


def per_basin(bench: Bench, groups: dict) -> str:
    """Test NSE per basin (mean over seeds) of every model and budget: where the medians come from."""
    columns = sorted(groups, key=lambda g: (g[1], g[0]))
    header = "| basin | " + " | ".join(f"{m} {b}" for m, b in columns) + " |"
    lines = [header, "| --- |" + " ---: |" * len(columns)]
    for i, basin in enumerate(bench.reference.basins if hasattr(bench, "reference") else []):
        cells = [np.nanmean([v["nse"][i] for v in groups[c]]) for c in columns]
        lines.append(f"| {basin} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/skill-camels-temporal", help="scratch folder (kept; reruns resume)")
    parser.add_argument("--runs", default="300:3,1500:1",
                        help="budget:seeds for LSTM-SL and neuralhydrology (seeds: a count, or a+b explicit seeds)")
    parser.add_argument("--ours", default=DEFAULTS,
                        help=f"our runs at every --runs budget: {DEFAULTS} (a config naming only periods, inputs, "
                             f"model, hidden size and budget), lstm (the recipe named in full), {CONVERGED} (the "
                             f"defaults with early stopping; the budget is the most updates); a name ending in "
                             f"{ADADELTA} names Adadelta, the streamflow default before Adam")
    parser.add_argument("--nh-runs", default=None, help="budget:seeds for neuralhydrology (default: --runs)")
    parser.add_argument("--no-nh", dest="nh", action="store_false", help="run only ours (neuralhydrology's figures "
                        "then come from an earlier --work with the same store)")
    parser.add_argument("--extras", default="stefaland_resconn,lstm_hbv")
    parser.add_argument("--extras-budget", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--updates-per-epoch", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (each one CPU thread)")
    parser.add_argument("--nh-python", default=os.environ.get("NH_PYTHON", "/work/venv-nh/bin/python"))
    parser.add_argument("--skill-curve", action="store_true",
                        help="also score our runs on the test years after every epoch (time-to-skill)")
    parser.add_argument("--skill-target", type=float, action="append", default=[],
                        help="also time our runs to this median NSE (a peer run's final kept elsewhere; repeatable)")
    parser.add_argument("--table-only", action="store_true", help="print the table of <work>/results.json")
    parser.add_argument("--smoke", action="store_true",
                        help="plumbing check: one test year, a one-epoch encoder (figures meaningless)")
    parser.add_argument("--quick", dest="preset", action="store_const", const="quick",
                        help="preset: " + json.dumps(PRESETS["quick"]))
    parser.add_argument("--converged", dest="preset", action="store_const", const="converged",
                        help="preset: " + json.dumps(PRESETS["converged"]))
    args = parser.parse_args()
    if args.preset:  # a preset fills what the command line left at its default
        parser.set_defaults(**PRESETS[args.preset])
        args = parser.parse_args()
    if args.smoke:
        global TEST
        TEST = (TEST[0], "2006-09-30")
        PRETRAIN["train"]["epochs"], PRETRAIN["data"]["samples_per_site"] = 1, 2
    Path(args.work).mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    if args.table_only:
        bench.reference = Reference(bench.store)
        bench.collect()
    else:
        if args.nh and not Path(args.nh_python).exists():
            raise SystemExit(f"{args.nh_python}: no neuralhydrology interpreter (see benchmarks/README.md)")
        started = time.perf_counter()
        bench.prepare()
        jobs = plan(args)
        print(f"# {len(jobs)} runs, {args.jobs} at a time; hidden {args.hidden}, batch {args.batch_size}, seq 365, "
              f"{args.updates_per_epoch} updates an epoch; scratch {args.work}", flush=True)

        def run(job: tuple) -> None:
            kind, model, budget, seed = job
            try:
                bench.theirs(budget, seed) if kind == "theirs" else bench.ours(model, budget, seed)
            except Exception as exc:  # one failed run must not lose the others' figures
                print(f"[{time.strftime('%H:%M:%S')}] {model}|{budget}|{seed} FAILED: {exc}", flush=True)

        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(run, jobs))
        bench.collect()
        print(f"# total {time.perf_counter() - started:.0f} s", flush=True)
    print(table(bench, args))


if __name__ == "__main__":
    main()
