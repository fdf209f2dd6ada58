"""Run neuralhydrology's ``nh-run train`` + ``nh-run evaluate`` code path with timers (NH venv only).

Run by ``benchmarks/vs_neuralhydrology.py`` with the *neuralhydrology* interpreter, never imported by
StefaLand (neuralhydrology is not one of our dependencies). It calls exactly the functions the
``nh-run`` entry point calls (``start_run`` for ``train``, ``eval_run`` for ``evaluate``); the only
additions are wrapping ``BaseTrainer.initialize_training`` and ``BaseTrainer._train_epoch`` with
``perf_counter`` so preparation and epoch times come from the same clock as ours, instead of from
second-resolution log lines, and evaluating one output per day (see ``_evaluate_every_day``).
Test-period observations and simulations are written to an ``.npz`` so the caller scores both tools
with the same NSE code.

    python nh_their_side.py CONFIG.yml RESULT.json
"""

from __future__ import annotations

import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np
from neuralhydrology.nh_run import eval_run, start_run
from neuralhydrology.training.basetrainer import BaseTrainer

TIMES: dict = {"prepare_s": None, "epoch_s": [], "batches": [], "run_dir": None}


def _timed_initialize(original):
    def wrapper(self):
        started = time.perf_counter()
        original(self)
        TIMES["prepare_s"] = time.perf_counter() - started
        TIMES["run_dir"] = str(self.cfg.run_dir)
    return wrapper


def _timed_epoch(original):
    def wrapper(self, epoch):
        limit = self._max_updates_per_epoch
        TIMES["batches"].append(min(limit, len(self.loader)) if limit is not None else len(self.loader))
        started = time.perf_counter()
        original(self, epoch)
        TIMES["epoch_s"].append(time.perf_counter() - started)
    return wrapper


def _test_arrays(run_dir: Path, target: str) -> dict[str, np.ndarray]:
    """Daily obs/sim (basin, day) from ``test/model_epochNNN/test_results.p``."""
    result_file = sorted(run_dir.glob("test/model_epoch*/test_results.p"))[-1]
    with result_file.open("rb") as handle:
        results = pickle.load(handle)
    basins = sorted(results)
    frames = [results[b]["1D"]["xr"] for b in basins]
    obs = np.stack([f[f"{target}_obs"].values.reshape(len(f["date"]), -1)[:, -1] for f in frames])
    sim = np.stack([f[f"{target}_sim"].values.reshape(len(f["date"]), -1)[:, -1] for f in frames])
    return {"basins": np.asarray(basins), "obs": obs, "sim": sim,
            "dates": np.asarray(frames[0]["date"].values).astype("datetime64[D]").astype(str)}


def _evaluate_every_day(run_dir: Path) -> None:
    """Evaluate NH's standard way: one prediction per day, each with its own seq_length-day history.

    Training used ``predict_last_n = seq_length`` (a loss on every day, like LSTM-SL); evaluated
    with that setting, neuralhydrology's tester strides by whole sequences and scores cold-started
    outputs. ``predict_last_n`` only selects outputs (cudalstm always emits every step), so setting
    it to 1 in the run's ``config.yml`` before ``nh-run evaluate`` changes the scoring, not the model.
    """
    config = run_dir / "config.yml"
    lines = [("predict_last_n: 1" if line.startswith("predict_last_n:") else line)
             for line in config.read_text().splitlines()]
    config.write_text("\n".join(lines) + "\n")


def main(config_file: str, result_file: str) -> None:
    BaseTrainer.initialize_training = _timed_initialize(BaseTrainer.initialize_training)
    BaseTrainer._train_epoch = _timed_epoch(BaseTrainer._train_epoch)
    started = time.perf_counter()
    start_run(config_file=Path(config_file))  # == `nh-run train --config-file CONFIG`
    TIMES["train_total_s"] = time.perf_counter() - started
    run_dir = Path(TIMES["run_dir"])
    _evaluate_every_day(run_dir)
    started = time.perf_counter()
    eval_run(run_dir=run_dir, period="test")  # == `nh-run evaluate --run-dir RUN_DIR`
    TIMES["evaluate_s"] = time.perf_counter() - started
    arrays = _test_arrays(run_dir, "QObs(mm/d)")
    np.savez(Path(result_file).with_suffix(".npz"), **arrays)
    Path(result_file).write_text(json.dumps(TIMES, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
