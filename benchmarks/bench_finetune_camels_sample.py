"""PUR on the real 19-basin CAMELS sample (one basin per HUC-02 region): LSTM-SL and LSTM-HBV1.1.

Builds a store from ``../shared/data`` (NLDAS forcings, which have no PET, so the HBV run uses
Hargreaves' radiation form: ``model.hbv.pet: null``), makes the 7-group PUR split with
``stefaland splits make``, finetunes every fold and prints the ``stefaland report`` table. A check
that the whole chain runs on real CAMELS files; 19 basins are far too few for paper-like skill.

    python benchmarks/bench_finetune_camels_sample.py [--epochs 3] [--models lstm,lstm_hbv]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml
from click.testing import CliRunner

from stefaland_cli.main import cli

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' helper modules
from _camels_sample import link_camels_sample  # noqa: E402

SHARED = Path(os.environ.get("STEFALAND_SHARED_DATA", REPO.parent / "shared" / "data"))


def invoke(args: list[str], env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(cli, args, env=env)
    if result.exit_code != 0:
        raise SystemExit(f"stefaland {' '.join(args[:2])} failed: {result.output}")
    return result.output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--models", default="lstm,lstm_hbv")
    parser.add_argument("--work", default="/tmp/stefaland-bench-camels-sample")
    args = parser.parse_args()
    work = Path(args.work)
    root = link_camels_sample(SHARED, work / "camels_root")
    store, split = work / "camels.zarr", work / "pur.csv"
    invoke(["data", "build", "--catalog", str(REPO / "catalog" / "camels.yaml"), "--out", str(store), "--quiet",
            "--sources", "forcing_nldas,attributes,streamflow", "--shard-size", "4",
            "--start", "2000-10-01", "--end", "2008-09-30"], env={"CAMELS_ROOT": str(root)})
    invoke(["splits", "make", "--task", "camels", "--scheme", "pur", "--sites", str(store), "--basins", "all",
            "--out", str(split)])
    period = {"train_start": "2000-10-01", "train_end": "2008-09-30", "test_start": "2000-10-01",
              "test_end": "2008-09-30"}
    for name in args.models.split(","):
        config = {"task": "camels", "data": {"seq_len": 90, **period},
                  "model": {"name": name, "hidden": 32, "dropout": 0.0, "hbv": {"nmul": 4, "warmup_days": 90, "pet": None}},
                  "train": {"epochs": args.epochs, "batch_size": 16, "optimizer": "adam", "lr": 0.005,
                            "iterations_per_epoch": args.iterations}}
        config_file = work / f"{name}.yaml"
        config_file.write_text(yaml.safe_dump(config))
        started = time.perf_counter()
        invoke(["finetune", "--store", str(store), "--config", str(config_file), "--out", str(work / "runs" / name),
                "--task", "camels", "--split", "pur", "--split-file", str(split), "--fold", "all", "--quiet"])
        print(f"{name}: {time.perf_counter() - started:.0f} s for 7 folds", flush=True)
    print(invoke(["report", "camels", "--split", "pur", "--runs", str(work / "runs"), "--format", "md",
                  "--out", str(work / "report"), "--quiet"]))


if __name__ == "__main__":
    main()
