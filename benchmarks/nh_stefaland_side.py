"""Our side of ``vs_neuralhydrology.py``: build the store, or finetune LSTM-SL on one holdout fold.

Run as its own process (like neuralhydrology's side) so each tool's peak RSS is measured alone:

    python nh_stefaland_side.py build SPEC.json RESULT.json   # stefaland.assemble.build_store, timed
    python nh_stefaland_side.py train SPEC.json RESULT.json   # stefaland.finetune.finetune_fold, timed
                                                             # (finetune(..., "temporal") when SPEC has "split": "temporal")

Preparation = ``build_store`` + everything ``finetune_fold`` does before the first epoch (open the
store, read and z-score the training sites, build the model); epochs are timed by the trainer
itself (``metrics.csv`` ``seconds``), which is what the NH side measures around ``_train_epoch``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def build(spec: dict) -> dict:
    from stefaland.assemble import build_store

    for key, value in spec.get("env", {}).items():
        os.environ[key] = value
    started = time.perf_counter()
    summary = build_store(spec["catalog"], spec["store"], shard_size=spec["shard_size"], sources=spec["sources"],
                          start=spec["start"], end=spec["end"], quiet=True, force=True)
    return {"build_s": time.perf_counter() - started, "n_sites": summary.n_sites, "n_time": summary.n_time,
            "dynamic": summary.dynamic, "static": summary.static}


def train(spec: dict, result_file: Path) -> dict:
    import xarray as xr

    from stefaland.finetune import run as finetune_run
    from stefaland.finetune.config import load_config

    marks: dict[str, float] = {}
    original_train, original_predict = finetune_run.train_model, finetune_run.predict_torch

    def timed_train(*args, **kwargs):
        marks["train_start"] = time.perf_counter()
        metrics = original_train(*args, **kwargs)
        marks["train_end"] = time.perf_counter()
        return metrics

    def timed_predict(*args, **kwargs):
        marks["predict_start"] = time.perf_counter()
        return original_predict(*args, **kwargs)

    finetune_run.train_model, finetune_run.predict_torch = timed_train, timed_predict
    config = load_config(spec["config"])
    started = time.perf_counter()
    if spec.get("split") == "temporal":  # skill_camels_temporal.py: every site, train and test periods
        result = finetune_run.finetune(spec["store"], config, spec["out"], "temporal", quiet=True)[0]
    else:
        result = finetune_run.finetune_fold(spec["store"], config, spec["out"], "bench", spec["fold"],
                                            split_file=spec["split_file"], quiet=True)
    finished = time.perf_counter()
    predictions = xr.open_dataset(result.predictions)
    np.savez(result_file.with_suffix(".npz"), basins=predictions["site"].values.astype(str),
             obs=predictions["obs"].values, sim=predictions["sim"].values,
             dates=predictions["time"].values.astype("datetime64[D]").astype(str))
    return {
        "prepare_s": marks["train_start"] - started,
        "epoch_s": [float(row["seconds"]) for row in result.metrics],
        "batches": [int(row["batches"]) for row in result.metrics],
        "checkpoint_s": (marks["train_end"] - marks["train_start"]) - sum(float(r["seconds"]) for r in result.metrics),
        "evaluate_s": finished - marks["predict_start"],
        "n_train_sites": result.n_train_sites, "n_test_sites": result.n_test_sites,
    }


def main(mode: str, spec_file: str, result_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    result = build(spec) if mode == "build" else train(spec, Path(result_file))
    Path(result_file).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:4])
