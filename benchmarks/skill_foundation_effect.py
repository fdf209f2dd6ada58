"""Does pretraining help? The paper's PUB experiment (Table 1) on a mostly ungauged virtual world.

The paper pretrains StefaLand (CVGM masked reconstruction) on every basin it has
forcings and attributes for, then finetunes on the gauged training basins and scores held-out
(PUB) basins: StefaLand-resConn 0.717 > Ablation-resConn 0.661 > LSTM-SL 0.636 median NSE on
CAMELS. Here the same question is asked of a virtual world (``stefaland.synth``, HBV streamflow whose
parameters are smooth functions of the attributes) in which most sites are ungauged:

1. world: ``--sites`` sites, ``--ungauged`` of them without streamflow, ``--years`` of daily data;
2. pretraining, once per scored PUB fold, on every site not in that fold, gauged or not;
3. finetuning on the gauged training sites of the fold, for StefaLand-resConn, StefaLand-noResConn,
   Ablation-resConn (same architecture, random frozen encoder) and LSTM-SL, for every seed;
4. ``stefaland report`` per seed over the scored folds (``--folds``), then mean ± sd over seeds of the
   median held-out NSE (and KGE);
5. evidence (``--probe``, on by default): linear probes (ridge) of what the frozen encoder carries, on
   sites held out of pretraining: (a) the HBV parameters that generate the streamflow, from the raw
   attributes, the pretrained encoder's features and a random-init encoder's features; (b) the soil
   and geology attributes hidden from the encoder's input, recovered from the rest. Plus the
   pretraining reconstruction loss against its mean-predictor baseline.

Pretraining uses one seed per fold (shared by the finetuning seeds); finetuning seeds vary the head's
initialisation, the batches and the Ablation's random encoder. Runs resume: re-running with the
same ``--work`` skips finished pretraining and finetuning folds.

    .venv/bin/python benchmarks/skill_foundation_effect.py --jobs 3   # ~45 min at load 7-15 on 2 shared cores
    .venv/bin/python benchmarks/skill_foundation_effect.py --folds 1 --seeds 1 --sites 200 --updates 100  # smoke
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
MODELS = ("stefaland_resconn", "stefaland_noresconn", "ablation_resconn", "lstm")
LABELS = {"stefaland_resconn": "StefaLand-resConn", "stefaland_noresconn": "StefaLand-noResConn",
          "ablation_resconn": "Ablation-resConn", "lstm": "LSTM-SL"}
PAPER_NSE = {"stefaland_resconn": 0.717, "ablation_resconn": 0.661, "lstm": 0.636}


def pretrain_config(args: argparse.Namespace, fold: int) -> dict:
    """configs/pretrain_tiny.yaml at the benchmark's sizes, leaving ``fold`` out."""
    config = yaml.safe_load((REPO / "configs" / "pretrain_tiny.yaml").read_text())
    config["model"].update(d_model=args.d_model, n_heads=2, n_layers=args.layers, d_ff=2 * args.d_model,
                           embed_hidden=16, head_hidden=16, decoder="lstm")
    config["data"].update(seq_len=args.seq_len, batch_size=32, samples_per_site=args.samples_per_site,
                          exclude={"split": "pub", "fold": fold})
    config["masking"] = {"min_window": 10, "max_window": 40}
    config["optim"] = {"lr": 5.0e-3, "schedule": "cosine"}
    config["train"].update(epochs=args.pretrain_epochs, seed=0, checkpoint_every=10_000, log_every=10,
                           eval_batches=4, device="cpu", num_threads=1)
    return config


def finetune_config(args: argparse.Namespace, model: str, seed: int, pretrained: str) -> dict:
    iterations = 100
    return {
        "task": "camels",
        "data": {"seq_len": args.seq_len, "spinup_days": args.seq_len // 4,
                 "train_start": "1900-01-01", "train_end": "2100-01-01",
                 "test_start": "1900-01-01", "test_end": "2100-01-01"},
        "model": {"name": model, "hidden": args.hidden, "dropout": 0.0, "pretrained": pretrained,
                  "encoder": {"d_model": args.d_model, "n_heads": 2, "n_layers": args.layers,
                              "d_ff": 2 * args.d_model, "decoder": "lstm"}},
        "train": {"epochs": max(1, args.updates // iterations), "iterations_per_epoch": min(iterations, args.updates),
                  "min_updates": 0, "batch_size": 32, "optimizer": "adam", "lr": 5e-3, "loss": "nse",
                  "lr_schedule": "cosine", "seed": seed, "threads": 1, "device": "cpu"},
    }


def _pretrain_fold(task: tuple) -> tuple[int, float]:
    store, config, out, fold = task
    import torch

    torch.set_num_threads(1)
    from stefaland.pretrain import parse_config, pretrain

    started = time.perf_counter()
    pretrain(store, parse_config(yaml.safe_dump(config), "skill_foundation_effect"), out, quiet=True)
    return fold, time.perf_counter() - started


def _finetune_folds(task: tuple) -> tuple[str, int, float]:
    """Every scored fold of one (model, seed), in turn: a run folder is written by one process at a time."""
    store, config, out, folds, model, seed = task
    import torch

    torch.set_num_threads(1)
    from stefaland.finetune import config_from_dict, finetune

    started = time.perf_counter()
    for fold in folds:  # a fold folder without a checkpoint is an interrupted run: it starts again
        partial = Path(out) / f"fold-{fold}"
        if partial.is_dir() and not (partial / "checkpoints" / "latest.json").exists():
            shutil.rmtree(partial)
            (Path(out) / f"fold-{fold}.lock").unlink(missing_ok=True)
    for fold in folds:
        finetune(store, config_from_dict(config), out, "pub", fold, quiet=True)
    return model, seed, (time.perf_counter() - started) / len(folds)


def run_pool(function, tasks: list, jobs: int, label: str) -> list:
    results = []
    context = multiprocessing.get_context("spawn")
    with context.Pool(jobs) as pool:
        for result in pool.imap_unordered(function, tasks):
            print(f"  {label}: {result[:-1]} in {result[-1]:.0f} s", flush=True)
            results.append(result)
    return results


def world(args: argparse.Namespace, work: Path) -> str:
    from stefaland.assemble import build_store
    from stefaland.synth import write_virtual_world

    catalog = write_virtual_world(work / "world", n_sites=args.sites, years=args.years, seed=args.world_seed,
                                  quiet=True, ungauged_fraction=args.ungauged)
    store = work / "world.zarr"
    if not store.exists():
        build_store(str(catalog), str(store), shard_size=32, quiet=True)
    return str(store)


def describe_world(store: str, folds: list[int]) -> dict:
    from stefaland.store import open_store

    dataset = open_store(store)
    gauged = np.isfinite(dataset["target"].values[..., 0]).any(axis=1)
    fold = np.asarray(dataset["fold_pub"].values)
    info = {"sites": int(gauged.size), "gauged": int(gauged.sum()), "days": int(dataset.sizes["time"]),
            "dynamic": [str(v) for v in dataset["dvar"].values], "n_static": int(dataset.sizes["svar"])}
    for k in folds:
        info[f"fold {k}"] = {"held_out": int((fold == k).sum()), "held_out_gauged": int((gauged & (fold == k)).sum()),
                             "pretrain_sites": int((fold != k).sum()),
                             "finetune_sites": int((gauged & (fold != k)).sum())}
    return info


def skill_table(work: Path, seeds: list[int], folds: list[int], models: list[str]) -> pd.DataFrame:
    from stefaland.report import make_report

    rows = []
    for seed in seeds:
        report = make_report("camels", "pub", str(work / "runs" / f"seed-{seed}"), str(work / "report" / f"seed-{seed}"),
                             formats=["md", "csv"], quiet=True, folds=[str(f) for f in folds], force=True)
        summary = report.summary
        for model in models:
            for metric in ("NSE", "KGE"):  # the report names a model by its label (or, before, its name)
                row = summary[summary["model"].isin([model, LABELS[model]]) & (summary["metric"] == metric)]
                rows.append({"seed": seed, "model": model, "metric": metric, "median": float(row["median"].iloc[0]),
                             "n_scored": int(row["n_scored"].iloc[0])})
    return pd.DataFrame(rows)


def print_skill(table: pd.DataFrame, models: list[str]) -> dict:
    out = {}
    print("\n| model | median held-out NSE, mean ± sd over seeds | per seed | median KGE, mean ± sd | paper (CAMELS PUB) |")
    print("| --- | ---: | --- | ---: | ---: |")
    for model in models:
        nse = table[(table.model == model) & (table.metric == "NSE")]["median"].to_numpy()
        kge = table[(table.model == model) & (table.metric == "KGE")]["median"].to_numpy()
        sd = lambda x: float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")  # noqa: E731
        out[model] = {"nse_mean": float(nse.mean()), "nse_sd": sd(nse), "nse": nse.tolist(),
                      "kge_mean": float(kge.mean()), "kge_sd": sd(kge)}
        paper = f"{PAPER_NSE[model]:.3f}" if model in PAPER_NSE else "—"
        print(f"| {LABELS[model]} | {nse.mean():.3f} ± {sd(nse):.3f} | {', '.join(f'{v:.3f}' for v in nse)} | "
              f"{kge.mean():.3f} ± {sd(kge):.3f} | {paper} |")
    wanted = [m for m in ("stefaland_resconn", "ablation_resconn", "lstm") if m in out]
    if len(wanted) == 3:
        means = [out[m]["nse_mean"] for m in wanted]
        shows = means[0] > means[1] > means[2]
        print(f"\npaper's ordering resConn > Ablation > LSTM-SL: {'shows' if shows else 'does NOT show'} "
              f"({' vs '.join(f'{v:.3f}' for v in means)})")
        out["ordering_shows"] = bool(shows)
    return out


# ---------------------------------------------------------------------------------------------
# Evidence: what the frozen encoder carries


def _r2(truth: np.ndarray, prediction: np.ndarray) -> float:
    return float(1.0 - np.sum((truth - prediction) ** 2) / np.sum((truth - truth.mean()) ** 2))


def probe(store: str, work: Path, folds: list[int], window: int) -> dict:
    """Ridge probes fitted on a fold's pretraining sites, scored on its held-out sites."""
    import torch
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    from stefaland.embed import embed_arrays, load_frozen_encoder
    from stefaland.model import StefaLandEncoder
    from stefaland.store import open_store
    from stefaland.synth.hydrology import parameters_from_attributes

    torch.set_num_threads(1)
    dataset = open_store(store)
    static_names = [str(v) for v in dataset["svar"].values]
    static_raw = np.asarray(dataset["static"].values, np.float64)  # (site, svar), physical units
    dynamic_raw = np.asarray(dataset["dynamic"].values[:, :window], np.float64)  # first ``window`` days
    attributes = pd.DataFrame(static_raw, columns=static_names)
    params = parameters_from_attributes(attributes)
    # the HBV parameters that vary between sites (log for the rate constants), the truth behind the flow
    hbv = {name: (np.log(v) if name.startswith("K") or name == "PERC" else v) for name, v in params.items()
           if np.std(v) > 1e-9}
    hidden = [n for n, g in zip(static_names, dataset["svar_group"].values) if str(g) in ("soil", "geology")]
    fold_of = np.asarray(dataset["fold_pub"].values)
    results: dict = {"hbv_parameters": list(hbv), "hidden_attributes": hidden, "folds": {}}
    ridge = lambda: RidgeCV(alphas=np.logspace(-3, 3, 13))  # noqa: E731

    def features(encoder, static_z, dynamic_z):
        static_token, time_tokens = embed_arrays(encoder, dynamic_z, static_z, window)
        # resConn's decoder sees the per-day tokens; the static token is the attribute summary
        return {"static token": static_token, "mean day token": time_tokens.mean(axis=1)}

    for fold in folds:
        encoder, checkpoint = load_frozen_encoder(str(work / "pretrain" / f"fold-{fold}"))
        d_idx = [list(dataset["dvar"].values).index(n) for n in checkpoint.dynamic_vars]
        s_idx = [static_names.index(n) for n in checkpoint.static_vars]
        static_z = (static_raw[:, s_idx] - checkpoint.static_mean) / checkpoint.static_std
        dynamic_z = (dynamic_raw[..., d_idx] - checkpoint.dynamic_mean) / checkpoint.dynamic_std
        torch.manual_seed(0)
        random_encoder = StefaLandEncoder(len(d_idx), len(s_idx), checkpoint.config).eval()
        train, test = fold_of != fold, fold_of == fold
        # (a) HBV parameters from what the decoder could be given
        sources = {"raw attributes (z-scored)": static_z}
        for tag, enc in (("pretrained", encoder), ("random-init", random_encoder)):
            for kind, value in features(enc, static_z, dynamic_z).items():
                sources[f"{tag} {kind}"] = value
        table_a = {}
        for source, x in sources.items():
            scaler = StandardScaler().fit(x[train])
            scores = []
            for y in hbv.values():
                model = ridge().fit(scaler.transform(x[train]), y[train])
                scores.append(_r2(y[test], model.predict(scaler.transform(x[test]))))
            table_a[source] = {"mean_r2": float(np.mean(scores)), "per_parameter": dict(zip(hbv, scores))}
        # (b) the soil and geology attributes hidden from the input, recovered from the rest
        hidden_idx = [checkpoint.static_vars.index(n) for n in hidden if n in checkpoint.static_vars]
        visible = [i for i in range(len(s_idx)) if i not in hidden_idx]
        masked = static_z.copy()
        masked[:, hidden_idx] = np.nan  # the encoder's mask vectors stand in
        table_b = {"visible attributes (z-scored)": static_z[:, visible]}
        for tag, enc in (("pretrained", encoder), ("random-init", random_encoder)):
            table_b[f"{tag} static token"] = features(enc, masked, dynamic_z)["static token"]
        scores_b = {}
        for source, x in table_b.items():
            scaler = StandardScaler().fit(x[train])
            r2 = []
            for i in hidden_idx:
                y = static_z[:, i]
                model = ridge().fit(scaler.transform(x[train]), y[train])
                r2.append(_r2(y[test], model.predict(scaler.transform(x[test]))))
            scores_b[source] = {"mean_r2": float(np.mean(r2)), "per_attribute": dict(zip(hidden, r2))}
        results["folds"][fold] = {"hbv_from": table_a, "hidden_from": scores_b}
    return results


def pretraining_losses(work: Path, folds: list[int]) -> dict:
    """Last evaluation of each pretraining run: masked reconstruction vs the mean predictor (1.0 = no skill)."""
    out = {}
    for fold in folds:
        metrics = pd.read_csv(work / "pretrain" / f"fold-{fold}" / "metrics.csv")
        evals = metrics[metrics["kind"] == "eval"] if (metrics["kind"] == "eval").any() else metrics
        first, last = evals.iloc[0], evals.iloc[-1]
        out[fold] = {"steps": int(metrics["step"].max()), "first_recon_dynamic": float(first["recon_dynamic"]),
                     "first_recon_static": float(first["recon_static"]),
                     "recon_dynamic": float(last["recon_dynamic"]), "baseline_dynamic": float(last["baseline_dynamic"]),
                     "recon_static": float(last["recon_static"]), "baseline_static": float(last["baseline_static"])}
    return out


def print_probe(results: dict, losses: dict) -> None:
    print("\npretraining (last eval; masked-cell loss, the mean predictor is ~1):")
    for fold, v in losses.items():
        print(f"  fold {fold}: {v['steps']} steps; dynamic {v['first_recon_dynamic']:.3f} -> {v['recon_dynamic']:.3f} "
              f"(baseline {v['baseline_dynamic']:.3f}), static {v['first_recon_static']:.3f} -> {v['recon_static']:.3f} "
              f"(baseline {v['baseline_static']:.3f})")
    folds = list(results["folds"])
    print("\n(a) ridge probe of the HBV parameters of held-out sites, mean R² over "
          f"{len(results['hbv_parameters'])} parameters ({', '.join(results['hbv_parameters'])}):")
    for source in results["folds"][folds[0]]["hbv_from"]:
        values = [results["folds"][f]["hbv_from"][source]["mean_r2"] for f in folds]
        print(f"  {source:>34}: {np.mean(values):.3f}  (folds: {', '.join(f'{v:.3f}' for v in values)})")
    print(f"\n(b) hidden soil + geology attributes ({', '.join(results['hidden_attributes'])}) of held-out sites, "
          "mean R²:")
    for source in results["folds"][folds[0]]["hidden_from"]:
        values = [results["folds"][f]["hidden_from"][source]["mean_r2"] for f in folds]
        print(f"  {source:>34}: {np.mean(values):.3f}  (folds: {', '.join(f'{v:.3f}' for v in values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=600)
    parser.add_argument("--ungauged", type=float, default=0.75, help="share of sites without streamflow")
    parser.add_argument("--years", type=int, default=5)
    parser.add_argument("--world-seed", type=int, default=7)
    parser.add_argument("--folds", default="1,2,3", help="PUB folds scored (each pretrained without itself)")
    parser.add_argument("--seeds", default="1,2,3", help="finetuning seeds")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=120)
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--samples-per-site", type=float, default=4.0)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--updates", type=int, default=800, help="finetuning optimiser updates per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one torch thread each")
    parser.add_argument("--no-probe", dest="probe", action="store_false")
    parser.add_argument("--work", default="/tmp/stefaland-foundation-effect")
    args = parser.parse_args()
    folds = [int(f) for f in args.folds.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    models = args.models.split(",")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    store = world(args, work)
    info = describe_world(store, folds)
    print(f"world: {json.dumps(info)}  ({time.perf_counter() - started:.0f} s)", flush=True)

    print("pretraining (CVGM), one encoder per fold without that fold:", flush=True)
    tasks = [(store, pretrain_config(args, k), str(work / "pretrain" / f"fold-{k}"), k) for k in folds]
    run_pool(_pretrain_fold, tasks, args.jobs, "pretrained fold")
    pretrained = str(work / "pretrain" / "fold-{fold}")

    print("finetuning:", flush=True)
    tasks = [(store, finetune_config(args, m, s, pretrained), str(work / "runs" / f"seed-{s}" / m), folds, m, s)
             for s in seeds for m in models]
    seconds = run_pool(_finetune_folds, tasks, args.jobs, "finetuned (model, seed); s per fold")
    per_model = {m: float(np.mean([r[-1] for r in seconds if r[0] == m])) for m in models}

    table = skill_table(work, seeds, folds, models)
    table.to_csv(work / "skill.csv", index=False)
    summary = {"args": vars(args), "world": info, "seconds_per_fold_run": per_model}
    summary["skill"] = print_skill(table, models)
    print("seconds per finetuning run (model, one fold): " + ", ".join(f"{m} {s:.0f}" for m, s in per_model.items()))
    if args.probe:
        losses = pretraining_losses(work, folds)
        results = probe(store, work, folds, window=min(365, info["days"]))
        print_probe(results, losses)
        summary.update(pretraining=losses, probe=results)
    (work / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; summary in {work / 'summary.json'}")


if __name__ == "__main__":
    main()
