"""SMAP soil moisture on hydroDL's own CONUS example: StefaLand LSTM-SL against hydroDL's LSTM.

The data are hydroDL's ``example/data`` (``../shared/data/hydrodl_smap_conusv4f1``: 412 SMAP cells, NLDAS-2
forcings, soil and SMAP ancillary attributes, 2015-04-01..2017-03-31), built into a store with
``catalog/smap_conus.yaml``. Temporal split as hydroDL's example: every cell trains on 2015-04-01..2016-03-31
and is scored on 2016-04-01..2017-03-31. Inputs for both tools: the 4 forcings of the sample (precipitation,
2-m temperature, shortwave down, specific humidity) and the 12 const fields.

* **LSTM-SL** (``model.name: lstm``) from a config naming only the periods, the inputs, ``model.name``,
  ``model.hidden``, the window (hydroDL's ``rho``) and an update budget: loss, optimiser, schedule and
  dropout are the package's defaults for a soil-moisture target.
* **hydroDL** 0.1.5 (PyPI ``hydroDL``, MHPI's package) in its own interpreter (``--hydrodl-python``; not a
  StefaLand dependency, see benchmarks/README.md), run by ``hydrodl_their_side.py`` exactly as its
  ``example/train-lstm.py`` / ``test-lstm.py`` do, on the CPU (``CpuLstmModel``).

Both get hidden 256, windows of 30 days, batches of 100 and the same number of updates: ``epochs`` x
hydroDL's own updates per epoch (its rule: enough batches that every cell-day is drawn with 99 %
probability, 230 here). Both are scored with ``stefaland.metrics.site_metrics`` (RMSE, ubRMSE, Corr per
cell; medians over cells) against the same observations: the store's test-period SMAP (hydroDL's own
copy is checked against it). Results are kept in ``<work>/results.json``: a rerun skips finished runs.

``--spatial`` runs the foundation-effect experiment at small scale instead: 5 random folds of cells
(``stefaland splits make --task smap --scheme random``), train and test on the same two years, the held-out
cells scored; StefaLand-resConn on an encoder pretrained (masked reconstruction) on the inputs of the cells
outside the fold (``pretrain --split random --fold all``: one encoder per fold, never the target, never the
held-out cells), Ablation-resConn (the same architecture, a random frozen encoder) and LSTM-SL, at the same
hidden size and updates. Medians over the held-out cells of all scored folds, mean ± sd over seeds.

    python benchmarks/skill_smap.py --work /tmp/skill-smap --quick   # 230 updates a run: 393 s on one busy core
    python benchmarks/skill_smap.py --work /tmp/skill-smap           # 2,300 updates a run (~1 h on 2 cores)
    python benchmarks/skill_smap.py --work /tmp/skill-smap-spatial --spatial --quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from skill_camels_temporal import run_logged  # noqa: E402  (one process, one thread, its log kept)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "hydrodl_smap_conusv4f1" / "data"  # hydroDL's rootDB
SUBSET = "CONUSv4f1"
# store name -> hydroDL's name (catalog/smap_conus.yaml)
DYNAMIC = {"precipitation": "APCP_FORA", "tmean": "TMP_2_FORA", "swd": "DSWRF_FORA", "specific_humidity": "SPFH_2_FORA"}
STATIC = {"bulk_density": "Bulk", "soil_capacity": "Capa", "clay": "Clay", "ndvi": "NDVI", "sand": "Sand", "silt": "Silt",
          "vegetation_albedo": "flag_albedo", "extraordinary_flag": "flag_extraOrd", "land_cover_class": "flag_landcover",
          "roughness": "flag_roughness", "dense_vegetation": "flag_vegDense", "water_body": "flag_waterbody"}
TRAIN, TEST = ("2015-04-01", "2016-03-31"), ("2016-04-01", "2017-03-31")
SEEDS = [111, 222, 333]
METRICS = ("RMSE", "ubRMSE", "Corr")
OURS, THEIRS = "lstm-defaults", "hydrodl"
NAMES = {OURS: "LSTM-SL (StefaLand), config names no training choice", THEIRS: "hydroDL 0.1.5 LSTM (CpuLstmModel)"}


def hydrodl_updates_per_epoch(cells: int, days: int, batch: int, rho: int) -> int:
    """hydroDL's ``nIterEp`` (model/settings.py): batches for each cell-day to be drawn with 99 % probability."""
    return int(math.ceil(math.log(0.01) / math.log(1 - min(batch, cells) * rho / cells / days)))


def stefaland_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "stefaland_cli.main", *args]


class Reference:
    """The observations every model is scored against: the store's test-period SMAP."""

    def __init__(self, store: Path, period: tuple[str, str] = TEST) -> None:
        from stefaland.store import open_store

        dataset = open_store(str(store))
        target = dataset["target"].sel(tvar="soil_moisture", time=slice(*period)).transpose("site", "time")
        self.sites = [str(s) for s in dataset["site"].values]
        self.dates = target["time"].values.astype("datetime64[D]")
        self.obs = target.values.astype(np.float64)

    def align(self, sites: list[str], dates: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``values`` (sites, dates) on the store's (site, test day) grid; NaN where absent."""
        out = np.full(self.obs.shape, np.nan)
        where = {d: i for i, d in enumerate(np.asarray(dates).astype("datetime64[D]"))}
        cols = np.array([where.get(d, -1) for d in self.dates])
        rows = {s: i for i, s in enumerate(sites)}
        for i, site in enumerate(self.sites):
            if site in rows:
                out[i, cols >= 0] = values[rows[site], cols[cols >= 0]]
        return out

    def score(self, sites: list[str], dates: np.ndarray, sim: np.ndarray, obs: np.ndarray | None = None,
              held_out: list[str] | None = None) -> dict:
        """Per-cell RMSE, ubRMSE and Corr (m3/m3) and their medians over cells (``held_out`` only, if given)."""
        from stefaland.metrics import site_metrics

        aligned = self.align(sites, dates, sim)
        keep = np.isin(self.sites, held_out) if held_out is not None else np.ones(len(self.sites), dtype=bool)
        metrics = site_metrics(self.obs[keep], aligned[keep], list(METRICS))
        result = {f"median_{m}": float(np.nanmedian(metrics[m])) for m in METRICS}
        result.update({m: [float(x) for x in metrics[m]] for m in METRICS})
        result["scored_cells"] = int(np.isfinite(metrics["RMSE"]).sum())
        if obs is not None:
            theirs = self.align(sites, dates, obs)
            both = np.isfinite(theirs) & np.isfinite(self.obs)
            result["obs_max_abs_diff"] = float(np.max(np.abs(theirs[both] - self.obs[both]))) if both.any() else None
            result["obs_only_theirs"] = int((np.isfinite(theirs) & ~np.isfinite(self.obs)).sum())
        return result


def defaults_config(args: argparse.Namespace, seed: int, per_epoch: int) -> dict:
    """What a new user writes: periods, inputs, model name and hidden size, the window and an update budget."""
    return {
        "task": "smap",
        "data": {"target": "soil_moisture", "dynamic": list(DYNAMIC), "static": list(STATIC),
                 "train_start": TRAIN[0], "train_end": TRAIN[1], "test_start": TEST[0], "test_end": TEST[1],
                 "seq_len": args.rho},
        "model": {"name": "lstm", "hidden": args.hidden},
        "train": {"epochs": args.epochs, "iterations_per_epoch": per_epoch, "batch_size": args.batch_size,
                  "seed": seed, "device": "cpu", "threads": 1},
    }


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.work = args, Path(args.work)
        self.store = self.work / "smap.zarr"
        self.results_file = self.work / "results.json"
        self.results = json.loads(self.results_file.read_text()) if self.results_file.exists() else {}
        self.lock = threading.Lock()
        self.per_epoch = hydrodl_updates_per_epoch(412, 366, args.batch_size, args.rho)
        self.reference: Reference | None = None

    def record(self, key: str, value: dict) -> None:
        with self.lock:
            self.results[key] = value
            self.results_file.write_text(json.dumps(self.results, indent=1))
            print(f"[{time.strftime('%H:%M:%S')}] {key}: median RMSE {value['median_RMSE']:.4f}, ubRMSE "
                  f"{value['median_ubRMSE']:.4f}, Corr {value['median_Corr']:.3f} ({value['seconds']:.0f} s)", flush=True)

    def prepare(self) -> None:
        if not (self.work / "store.built").exists():
            run_logged(stefaland_command("data", "build", "--catalog", str(REPO / "catalog" / "smap_conus.yaml"),
                                         "--out", str(self.store), "--quiet"),
                       self.work / "build.log", env={"HYDRODL_ROOT": str(self.args.root)})
            (self.work / "store.built").write_text("ok")
        self.reference = Reference(self.store)

    def key(self, model: str, seed: int) -> str:
        return f"{model}|{self.args.epochs * self.per_epoch}|{seed}"

    def ours(self, seed: int) -> None:
        key = self.key(OURS, seed)
        if key in self.results:
            return
        folder = self.work / "runs" / f"{OURS}-{self.args.epochs}-{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "finetune.yaml").write_text(yaml.safe_dump(defaults_config(self.args, seed, self.per_epoch), sort_keys=False))
        seconds = run_logged(stefaland_command("finetune", "--store", str(self.store), "--config", str(folder / "finetune.yaml"),
                                               "--out", str(folder / "run"), "--task", "smap", "--split", "temporal"),
                             folder / "train.log")
        from stefaland.run.predictions import read_predictions

        predictions = read_predictions(str(folder / "run" / "temporal" / "predictions.nc"))
        sites = [str(s) for s in predictions["site"].values]
        scored = self.reference.score(sites, predictions["time"].values, predictions["sim"].values.astype(np.float64))
        run_json = folder / "run" / "temporal" / "run.json"
        record = json.loads(run_json.read_text()) if run_json.exists() else {}
        self.record(key, {**scored, "seconds": seconds, "updates": self.args.epochs * self.per_epoch,
                          "target_defaults": record.get("target_defaults")})

    def theirs(self, seed: int) -> None:
        key = self.key(THEIRS, seed)
        if key in self.results:
            return
        folder = self.work / "runs" / f"{THEIRS}-{self.args.epochs}-{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        end = lambda day: str(np.datetime64(day) + 1)  # noqa: E731 - hydroDL's tRange end is exclusive
        spec = {"root": str(self.args.root), "subset": SUBSET, "train": [TRAIN[0], end(TRAIN[1])],
                "test": [TEST[0], end(TEST[1])], "dynamic": list(DYNAMIC.values()), "static": list(STATIC.values()),
                "hidden": self.args.hidden, "rho": self.args.rho, "batch_size": self.args.batch_size,
                "epochs": self.args.epochs, "seed": seed, "out": str(folder / "out"), "threads": 1}
        (folder / "spec.json").write_text(json.dumps(spec, indent=1))
        seconds = run_logged([self.args.hydrodl_python, str(HERE / "hydrodl_their_side.py"), str(folder / "spec.json"),
                              str(folder / "result.json")], folder / "hydrodl.log")
        side = json.loads((folder / "result.json").read_text())
        arrays = np.load(folder / "result.npz")
        sites = [f"smap_{int(i) + 1:04d}" for i in arrays["cells"]]  # crd.csv row -> catalog/smap_conus.yaml's id
        scored = self.reference.score(sites, arrays["dates"].astype("datetime64[D]"), arrays["sim"].astype(np.float64),
                                      arrays["obs"].astype(np.float64))
        expected = self.args.epochs * self.per_epoch
        self.record(key, {**scored, "seconds": seconds, "updates": expected, "train_s": side["train_s"],
                          "train_loss": side["train_loss"], "model": side["model"]})


SPATIAL_MODELS = ("stefaland_resconn", "ablation_resconn", "lstm")
SPATIAL_LABELS = {"stefaland_resconn": "StefaLand-resConn", "ablation_resconn": "Ablation-resConn", "lstm": "LSTM-SL"}
WHOLE = ("2015-04-01", "2017-03-31")  # a spatial holdout trains and tests on the same years, other cells
ENCODER = {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "decoder": "lstm"}


def pretrain_config(args: argparse.Namespace) -> dict:
    """A small encoder (configs/pretrain_tiny.yaml's sizes) on 30-day windows of the cells' inputs."""
    return {"model": {**ENCODER, "dropout": 0.0, "embed_hidden": 16, "head_hidden": 16},
            "data": {"seq_len": args.rho, "batch_size": 32, "samples_per_site": args.samples_per_site,
                     "dynamic_vars": list(DYNAMIC), "static_vars": list(STATIC)},
            "masking": {"min_window": 3, "max_window": 10},
            "optim": {"lr": 5.0e-3, "schedule": "cosine"},
            "train": {"epochs": args.pretrain_epochs, "seed": 0, "checkpoint_every": 10_000, "log_every": 20,
                      "eval_batches": 4, "device": "cpu", "num_threads": 1}}


def spatial_config(args: argparse.Namespace, model: str, seed: int, pretrained: str, per_epoch: int) -> dict:
    """The temporal run's config on the whole record, with the encoder of the fold for resConn."""
    config = defaults_config(args, seed, per_epoch)
    config["data"].update(train_start=WHOLE[0], train_end=WHOLE[1], test_start=WHOLE[0], test_end=WHOLE[1])
    config["model"].update(name=model, hidden=args.spatial_hidden, encoder=ENCODER)
    if model == "stefaland_resconn":
        config["model"]["pretrained"] = pretrained + "/fold-{fold}"
    return config


def run_spatial(args: argparse.Namespace, bench: Bench) -> None:
    """Split, per-fold pretraining, then every model and seed over the scored folds; medians of held-out cells."""
    from stefaland.run.predictions import read_predictions

    work, folds = bench.work, args.folds
    split = work / "smap_random.csv"
    if not split.exists():
        run_logged(stefaland_command("splits", "make", "--task", "smap", "--scheme", "random", "--sites", str(bench.store),
                                     "--out", str(split)), work / "split.log")
    pretrained = work / "pretrain"
    (work / "pretrain.yaml").write_text(yaml.safe_dump(pretrain_config(args), sort_keys=False))
    for fold in folds:
        if not (pretrained / f"fold-{fold}" / "checkpoints" / "latest.json").exists():
            seconds = run_logged(stefaland_command("pretrain", "--store", str(bench.store), "--config", str(work / "pretrain.yaml"),
                                                   "--out", str(pretrained), "--split", "random", "--split-file", str(split),
                                                   "--fold", str(fold), "--quiet"), work / f"pretrain-{fold}.log")
            print(f"[{time.strftime('%H:%M:%S')}] pretraining without fold {fold}: {seconds:.0f} s", flush=True)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    for seed in seeds:
        for model in SPATIAL_MODELS:
            key = f"spatial|{model}|{args.epochs * bench.per_epoch}|{seed}|{','.join(map(str, folds))}"
            if key in bench.results:
                continue
            folder = work / "spatial" / f"{model}-{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            config = spatial_config(args, model, seed, str(pretrained), bench.per_epoch)
            (folder / "finetune.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            seconds = run_logged(stefaland_command("finetune", "--store", str(bench.store), "--config", str(folder / "finetune.yaml"),
                                                   "--out", str(folder / "run"), "--task", "smap", "--split", "random",
                                                   "--split-file", str(split), "--fold", ",".join(map(str, folds)), "--quiet"),
                                 folder / "train.log")
            sites, sims = [], []
            for fold in folds:
                predictions = read_predictions(str(folder / "run" / f"fold-{fold}" / "predictions.nc"))
                sites += [str(x) for x in predictions["site"].values]
                sims.append(predictions["sim"].values.astype(np.float64))
            whole = Reference(bench.store, WHOLE)
            scored = whole.score(sites, predictions["time"].values, np.concatenate(sims), held_out=sites)
            bench.record(key, {**scored, "seconds": seconds / len(folds), "updates": args.epochs * bench.per_epoch})


def spatial_table(results: dict) -> str:
    groups: dict[str, list[dict]] = {}
    for key, value in results.items():
        if key.startswith("spatial|"):
            groups.setdefault(key.split("|")[1], []).append(value)
    lines = ["| model | seeds | held-out cells | median RMSE (m3/m3) | median ubRMSE (m3/m3) | median Corr | s per fold |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for model in SPATIAL_MODELS:
        values = groups.get(model)
        if values:
            lines.append(f"| {SPATIAL_LABELS[model]} | {len(values)} | {values[0]['scored_cells']} | "
                         f"{spread([v['median_RMSE'] for v in values], 4)} | {spread([v['median_ubRMSE'] for v in values], 4)} | "
                         f"{spread([v['median_Corr'] for v in values], 3)} | {np.mean([v['seconds'] for v in values]):.0f} |")
    return "\n".join(lines)


def spread(values: list[float], digits: int) -> str:
    mean = float(np.mean(values))
    return f"{mean:.{digits}f} ± {np.std(values, ddof=1):.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def table(results: dict) -> str:
    """Medians over cells, mean ± sd over seeds, per model and budget; the gap in RMSE per budget."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for key, value in results.items():
        if key.startswith("spatial|"):
            continue
        model, budget, _seed = key.split("|")
        groups.setdefault((model, int(budget)), []).append(value)
    lines = ["| model | updates | seeds | median RMSE (m3/m3) | median ubRMSE (m3/m3) | median Corr | s per run |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    order = list(NAMES)
    for (model, budget), values in sorted(groups.items(), key=lambda g: (g[0][1], order.index(g[0][0]))):
        lines.append(f"| {NAMES[model]} | {budget} | {len(values)} | {spread([v['median_RMSE'] for v in values], 4)} | "
                     f"{spread([v['median_ubRMSE'] for v in values], 4)} | {spread([v['median_Corr'] for v in values], 3)} | "
                     f"{np.mean([v['seconds'] for v in values]):.0f} |")
    diffs = [v["obs_max_abs_diff"] for k, v in results.items() if k.startswith(THEIRS) and v.get("obs_max_abs_diff") is not None]
    lines += ["", f"(every model scored against the store's SMAP; hydroDL's own test observations differ from it by at most "
                  f"{max(diffs) if diffs else float('nan'):.2e} m3/m3)"]
    for budget in sorted({b for _m, b in groups}):
        ours_, theirs_ = groups.get((OURS, budget)), groups.get((THEIRS, budget))
        if ours_ and theirs_:
            gap = np.mean([v["median_RMSE"] for v in ours_]) - np.mean([v["median_RMSE"] for v in theirs_])
            lines.append(f"{budget} updates: LSTM-SL − hydroDL median RMSE = {gap:+.4f} m3/m3 "
                         f"({'goal met: ours ≤ hydroDL' if gap <= 0 else 'SHORT of the goal'})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True, help="scratch folder (store, runs, results.json)")
    parser.add_argument("--root", default=os.environ.get("HYDRODL_ROOT", str(DEFAULT_ROOT)),
                        help="hydroDL's rootDB (the folder holding CONUSv4f1/, Statistics/, Subset/)")
    parser.add_argument("--quick", action="store_true", help="one hydroDL epoch (230 updates) a run: ≤ 15 min on one core")
    parser.add_argument("--epochs", type=int, default=10, help="hydroDL epochs a run (updates = epochs x 230); "
                        "hydroDL's example trains 100")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--rho", type=int, default=30, help="window length (hydroDL's rho; our data.seq_len)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each one CPU thread)")
    parser.add_argument("--hydrodl-python", default=os.environ.get("HYDRODL_PYTHON", "/work/venv-hydrodl/bin/python"))
    parser.add_argument("--no-hydrodl", dest="hydrodl", action="store_false", help="run only ours")
    parser.add_argument("--table-only", action="store_true", help="print the table of <work>/results.json")
    parser.add_argument("--spatial", action="store_true", help="the 5-fold spatial foundation-effect experiment instead")
    parser.add_argument("--folds", default="1,2,3,4,5", help="--spatial: the random folds scored")
    parser.add_argument("--spatial-hidden", type=int, default=64, help="--spatial: hidden size of every model")
    parser.add_argument("--pretrain-epochs", type=int, default=4, help="--spatial: pretraining epochs per fold")
    parser.add_argument("--samples-per-site", type=int, default=16, help="--spatial: pretraining windows per cell an epoch")
    args = parser.parse_args()
    args.folds = [int(f) for f in str(args.folds).split(",") if f]
    if args.quick:
        args.epochs = 1
        if args.spatial:
            args.folds, args.seeds, args.pretrain_epochs = args.folds[:2], args.seeds.split(",")[0], 2
    Path(args.work).mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    if args.spatial:
        started = time.perf_counter()
        if not args.table_only:
            bench.prepare()
            run_spatial(args, bench)
        print(f"# total {time.perf_counter() - started:.0f} s", flush=True)
        print(spatial_table(bench.results))
        return
    if not args.table_only:
        if args.hydrodl and not Path(args.hydrodl_python).exists():
            raise SystemExit(f"{args.hydrodl_python}: no hydroDL interpreter (see benchmarks/README.md)")
        started = time.perf_counter()
        bench.prepare()
        seeds = [int(s) for s in args.seeds.split(",") if s]
        jobs = [(kind, seed) for seed in seeds for kind in ([OURS, THEIRS] if args.hydrodl else [OURS])]
        print(f"# {len(jobs)} runs, {args.jobs} at a time: {args.epochs} x {bench.per_epoch} updates of "
              f"{args.batch_size} windows of {args.rho} days, hidden {args.hidden}; scratch {args.work}", flush=True)

        def run(job: tuple[str, int]) -> None:
            kind, seed = job
            try:
                bench.theirs(seed) if kind == THEIRS else bench.ours(seed)
            except Exception as exc:  # one failed run must not lose the others' figures
                print(f"[{time.strftime('%H:%M:%S')}] {kind}|{seed} FAILED: {exc}", flush=True)

        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(run, jobs))
        print(f"# total {time.perf_counter() - started:.0f} s", flush=True)
    print(table(bench.results))


if __name__ == "__main__":
    main()
