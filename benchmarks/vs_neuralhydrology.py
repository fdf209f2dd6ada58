"""StefaLand LSTM-SL vs neuralhydrology's ``cudalstm``: same basins, same config, same machine, one run.

For each data set (the 19 real CAMELS basins in ``../shared/data`` and a virtual world in CAMELS-US
files) both tools read the *same files*, train an LSTM with the same hidden size, sequence length,
batch size, inputs, optimiser, loss, epochs and batches per epoch, hold out the same test basins
(PUB-style: same period, basins never trained on) and are scored with the same NSE code. Printed per
tool: dataset preparation time, seconds per epoch, batches per second, peak RSS, test median NSE, and
the ratio ours/theirs. Each side runs in its own process under ``/usr/bin/time -v`` (peak RSS).

Needs neuralhydrology in a *separate* interpreter (it is not a StefaLand dependency; see
benchmarks/README.md): ``--nh-python`` (default ``$NH_PYTHON`` or ``/work/venv-nh/bin/python``).
This script installs nothing.

    python benchmarks/vs_neuralhydrology.py                      # defaults: 13 min on 2 shared CPU cores
    python benchmarks/vs_neuralhydrology.py --basins 500 --batches 20 --epochs 2   # full size, ~1 h
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stefaland.metrics import site_metrics  # noqa: E402

from nh_setup import Case, Hyper, real_case, virtual_case, write_nh_config, write_our_specs  # noqa: E402

HERE = Path(__file__).resolve().parent


def timed_process(command: list[str], log: Path) -> dict:
    """Run ``command`` under ``/usr/bin/time -v``; return wall seconds and peak RSS (MiB)."""
    rss_file = log.with_suffix(".time")
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call(["/usr/bin/time", "-v", "-o", str(rss_file), *command], stdout=out,
                               stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed (exit {code}); see {log}:\n" + log.read_text()[-3000:])
    peak_kib = next(int(line.split(":")[1]) for line in rss_file.read_text().splitlines()
                    if "Maximum resident set size" in line)
    return {"wall_s": wall, "peak_rss_mib": peak_kib / 1024}


def median_nse(result_json: Path, basins: list[str], dates: tuple[str, str]) -> tuple[float, int]:
    """Median test NSE over ``basins`` and the test days, from a side's ``.npz`` (obs, sim per basin/day)."""
    arrays = np.load(result_json.with_suffix(".npz"))
    order = {str(b): i for i, b in enumerate(arrays["basins"])}
    days = arrays["dates"].astype("datetime64[D]")
    keep = (days >= np.datetime64(dates[0])) & (days <= np.datetime64(dates[1]))
    rows = [order[b] for b in basins if b in order]
    obs = arrays["obs"][rows][:, keep].astype(np.float64)
    sim = arrays["sim"][rows][:, keep].astype(np.float64)
    nse = site_metrics(obs, sim, ["NSE"], min_valid=30)["NSE"]
    return float(np.nanmedian(nse)), int(np.isfinite(nse).sum())


def run_ours(case: Case, hyper: Hyper, folder: Path) -> dict:
    build_spec, train_spec = write_our_specs(case, hyper, folder)
    python = sys.executable
    side = str(HERE / "nh_stefaland_side.py")
    build_proc = timed_process([python, side, "build", str(build_spec), str(folder / "build.json")],
                               folder / "build.log")
    train_proc = timed_process([python, side, "train", str(train_spec), str(folder / "train.json")],
                               folder / "train.log")
    built, trained = json.loads((folder / "build.json").read_text()), json.loads((folder / "train.json").read_text())
    nse, n = median_nse(folder / "train.json", case.test_basins, case.test)
    return {"prepare_s": built["build_s"] + trained["prepare_s"], "build_s": built["build_s"],
            "load_s": trained["prepare_s"], "epoch_s": trained["epoch_s"], "batches": trained["batches"],
            "evaluate_s": trained["evaluate_s"],
            "peak_rss_mib": max(build_proc["peak_rss_mib"], train_proc["peak_rss_mib"]),
            "wall_s": build_proc["wall_s"] + train_proc["wall_s"], "nse": nse, "n_scored": n}


def run_theirs(case: Case, hyper: Hyper, folder: Path, nh_python: str) -> dict:
    config = write_nh_config(case, hyper, folder)
    proc = timed_process([nh_python, str(HERE / "nh_their_side.py"), str(config), str(folder / "nh.json")],
                         folder / "nh.log")
    result = json.loads((folder / "nh.json").read_text())
    nse, n = median_nse(folder / "nh.json", case.test_basins, case.test)
    return {"prepare_s": result["prepare_s"], "epoch_s": result["epoch_s"], "batches": result["batches"],
            "evaluate_s": result["evaluate_s"], "peak_rss_mib": proc["peak_rss_mib"], "wall_s": proc["wall_s"],
            "nse": nse, "n_scored": n}


def report(case: Case, ours: dict, theirs: dict) -> None:
    def per_epoch(side: dict) -> float:
        return float(np.mean(side["epoch_s"]))

    def rate(side: dict) -> float:
        return sum(side["batches"]) / sum(side["epoch_s"])

    rows = [("dataset preparation (s)", ours["prepare_s"], theirs["prepare_s"]),
            ("seconds per epoch", per_epoch(ours), per_epoch(theirs)),
            ("batches per second", rate(ours), rate(theirs)),
            ("peak RSS (MiB)", ours["peak_rss_mib"], theirs["peak_rss_mib"]),
            ("test median NSE", ours["nse"], theirs["nse"]),
            ("test prediction (s)", ours["evaluate_s"], theirs["evaluate_s"])]
    print(f"\n## {case.name}: {len(case.train_basins)} train / {len(case.test_basins)} held-out basins, "
          f"train {case.train[0]}..{case.train[1]}, test {case.test[0]}..{case.test[1]}")
    print(f"| {'measure':<26} | {'StefaLand LSTM-SL':>17} | {'neuralhydrology':>15} | {'ours/theirs':>11} |")
    print(f"| {'-' * 26} | {'-' * 17} | {'-' * 15} | {'-' * 11} |")
    for name, mine, other in rows:
        # NSE can be negative, so its column is the difference (ours - theirs), not a ratio
        ratio = mine - other if "NSE" in name else (mine / other if other else float("nan"))
        label = "diff " if "NSE" in name else ""
        print(f"| {name:<26} | {mine:>17.3f} | {other:>15.3f} | {label + format(ratio, '.3f'):>11} |")
    print(f"(ours: build_store {ours['build_s']:.1f} s + load/normalise {ours['load_s']:.1f} s; batches per epoch "
          f"{ours['batches']} vs {theirs['batches']}; NSE scored on {ours['n_scored']} / {theirs['n_scored']} basins; "
          f"epoch speed-up theirs/ours = {per_epoch(theirs) / per_epoch(ours):.2f}x)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--basins", type=int, default=100, help="virtual-world basins (full size: 500)")
    parser.add_argument("--years", type=int, default=4, help="virtual-world years (the last one is the test year)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4,
                        help="batches per epoch, both tools (NH max_updates_per_epoch)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--seq", type=int, default=365)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--datasets", default="real,virtual")
    parser.add_argument("--nh-python", default=os.environ.get("NH_PYTHON", "/work/venv-nh/bin/python"))
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temp dir, removed at the end)")
    args = parser.parse_args()
    if not Path(args.nh_python).exists():
        raise SystemExit(f"{args.nh_python}: no neuralhydrology interpreter; pip install neuralhydrology in a "
                         "separate venv and pass --nh-python (see benchmarks/README.md)")
    hyper = Hyper(args.hidden, args.seq, args.batch_size, args.epochs, args.batches)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="stefaland-vs-nh-"))
    import torch

    nh_version = subprocess.run([args.nh_python, "-c", "import importlib.metadata as m, torch; "
                                 "print(m.version('neuralhydrology'), torch.__version__, torch.get_num_threads())"],
                                capture_output=True, text=True).stdout.strip()
    print(f"# vs neuralhydrology: {hyper}")
    print(f"# ours: torch {torch.__version__}, {torch.get_num_threads()} threads; neuralhydrology/torch/threads: "
          f"{nh_version}; {os.cpu_count()} CPUs; scratch {work}", flush=True)
    started = time.perf_counter()
    for name in args.datasets.split(","):
        if name == "real":
            case = real_case(work)
        else:
            case, synth_s = virtual_case(work, args.basins, args.years)
            print(f"# virtual world: {args.basins} basins x {args.years} years written in {synth_s:.1f} s "
                  f"({len(case.train_basins) + len(case.test_basins)} gauged)", flush=True)
        ours = run_ours(case, hyper, work / case.name / "stefaland")
        theirs = run_theirs(case, hyper, work / case.name / "neuralhydrology", args.nh_python)
        report(case, ours, theirs)
    print(f"\n# total {time.perf_counter() - started:.0f} s; configs under {work}/<case>/{{stefaland,neuralhydrology}}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
