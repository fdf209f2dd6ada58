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
    if spec.get("curve"):
        record_skill_curve(result_file.with_name("curve.npz"))
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


def record_skill_curve(curve_file: Path) -> None:
    """Predict the test period with every epoch's weights, for time-to-skill (skill_camels_temporal.py).

    The weights are copied when the trainer checkpoints an epoch; the test predictions are made after
    training, with the run's own test data and scaling, so the epochs' timings are untouched. The
    weights that make the run's predictions are unchanged: the last epoch's are loaded back last.
    """
    import copy

    from stefaland.finetune import run as finetune_run
    from stefaland.finetune import trainer

    states: list[dict] = []
    simulated: list[np.ndarray] = []
    original_save, original_predict = trainer.save_checkpoint, finetune_run.predict_torch
    original_write = finetune_run.write_fold_predictions

    def save_and_keep(fold_dir, epoch, state, **kwargs):
        states.append(copy.deepcopy(state["model"]))
        return original_save(fold_dir, epoch, state, **kwargs)

    def predict_every_epoch(model, *args, **kwargs):
        final = copy.deepcopy(model.state_dict())
        for state in states:
            model.load_state_dict(state)
            simulated.append(original_predict(model, *args, **kwargs))
        model.load_state_dict(final)
        return original_predict(model, *args, **kwargs)

    def write_with_curve(url, data, sim, variables, *args, **kwargs):
        physical = [variables.physical_simulation(z) for z in simulated]
        np.savez(curve_file, basins=np.asarray(data.sites).astype(str), sim=np.stack(physical).astype(np.float32),
                 dates=np.asarray(data.times[data.history:]).astype("datetime64[D]").astype(str))
        return original_write(url, data, sim, variables, *args, **kwargs)

    trainer.save_checkpoint, finetune_run.predict_torch = save_and_keep, predict_every_epoch
    finetune_run.write_fold_predictions = write_with_curve


def main(mode: str, spec_file: str, result_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    result = build(spec) if mode == "build" else train(spec, Path(result_file))
    Path(result_file).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:4])
