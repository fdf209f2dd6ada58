"""``run.json`` of a finetuned fold: everything ``stefaland predict`` needs besides the weights.

Why a record: a finetuned model is only usable on new sites if their inputs are built exactly as
the training inputs were — the same variables, in the same units, z-scored with the *training*
statistics. The store a run was trained on may be gone (or on someone else's bucket), so the run
folder says it all: variables, units, normalisation statistics, target scaling, split and fold,
training sites, store provenance, package version.

The finetune writer makes it with :func:`make_record` and writes it with
:func:`stefaland.run.record.write_run_record` once per fold (``<out>/fold-<k>/run.json``);
``predict`` reads it with :func:`read_fold_record`, and for a run written before that existed,
:func:`record_from_store` rebuilds it from the training store.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import xarray as xr

from stefaland import __version__
from stefaland.bounds import bounds_to_json
from stefaland.run.record import read_run_record

RECORD_VERSION = 1
FOLD_RECORD_KEYS = ("variables", "task", "model")  # what every fold record holds, whatever its version


def _units(dataset: xr.Dataset, prefix: str, index: np.ndarray) -> list[str]:
    name = f"{prefix}_units"
    if name not in dataset.coords:
        return [""] * len(index)
    values = np.asarray(dataset[name].values)
    return [str(values[i] or "") for i in index]


def make_record(store: str, dataset: xr.Dataset, config: Any, variables: Any, split: str | None,
                fold: int | str | None, train_sites: list[str] | None = None,
                split_file: str | None = None) -> dict:
    """The record of one fold: ``config`` a FinetuneConfig, ``variables`` its resolved ``Variables``
    (after the target was re-scaled to the training sites)."""
    return {
        "record_version": RECORD_VERSION,
        "stefaland_version": __version__,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": config.task, "model": config.model.name, "label": config.model.display_label(),
        "split": split, "fold": None if fold is None else str(fold), "split_file": split_file,
        "store": str(store), "store_provenance": dict(dataset.attrs.get("provenance", {}) or {}),
        "train_period": [config.data.train_start, config.data.train_end],
        "loss": config.loss(),
        "optimizer": config.optimizer(),
        "target_defaults": config.target_defaults(),  # what the config left unset and the target decided
        "train_sites": [str(s) for s in (train_sites or [])],
        "pretrained": pretrained_section(config),
        "variables": {
            "dynamic": list(variables.dynamic),
            "dynamic_units": _units(dataset, "dvar", variables.dynamic_index),
            "dynamic_mean": [float(v) for v in variables.dynamic_mean],
            "dynamic_std": [float(v) for v in variables.dynamic_std],
            "static": list(variables.static),
            "static_units": _units(dataset, "svar", variables.static_index),
            "static_mean": [float(v) for v in variables.static_mean],
            "static_std": [float(v) for v in variables.static_std],
            "target": variables.target, "target_units": variables.target_units,
            "target_mean": float(variables.target_mean), "target_std": float(variables.target_std),
            "static_target": bool(variables.static_target),
            "target_bounds": bounds_to_json(variables.target_bounds),
            "hide": list(config.data.hide),
        },
    }


def pretrained_section(config: Any) -> dict | None:
    """What rebuilding a model around a pretrained encoder needs, so ``predict`` never needs the
    pretraining checkpoint itself (its weights are in the fold's own checkpoint anyway)."""
    if not getattr(config.model, "pretrained", None):
        return None
    from stefaland.run.pretrained import read_checkpoint

    checkpoint = read_checkpoint(config.model.pretrained)
    return {"url": checkpoint.url, "config": checkpoint.config.model_dump(mode="json") if checkpoint.config else None,
            "dynamic_vars": checkpoint.dynamic_vars, "static_vars": checkpoint.static_vars}


def read_fold_record(directory: str) -> dict | None:
    """The record of the fold folder ``directory`` (None when it has none); one line when it is corrupt."""
    return read_run_record(directory, FOLD_RECORD_KEYS)


def record_from_store(store: str, config: Any, state: dict | None, split: str | None = None,
                      fold: int | str | None = None) -> dict:
    """Rebuild a fold's record from its training store (for runs whose run.json is missing).

    The scaling is the one saved in the fold's checkpoint (``state['variables']``), since finetuning
    fits it on the training sites and period; runs older than that saved only the target's.
    """
    from dataclasses import replace

    from stefaland.store import open_store

    from .data import resolve_variables

    dataset = open_store(store)
    variables = resolve_variables(dataset, config.data)
    saved = (state or {}).get("variables") or {}
    if "target_mean" in saved:
        variables = replace(variables, target_mean=float(saved["target_mean"]), target_std=float(saved["target_std"]))
    if "dynamic_mean" in saved:  # runs since the scaling is fitted on the training sites and period
        variables = replace(variables, dynamic_mean=np.asarray(saved["dynamic_mean"], np.float64),
                            dynamic_std=np.asarray(saved["dynamic_std"], np.float64),
                            static_mean=np.asarray(saved["static_mean"], np.float64),
                            static_std=np.asarray(saved["static_std"], np.float64),
                            target_bounds=tuple(saved.get("target_bounds", variables.target_bounds)))
    return make_record(store, dataset, config, variables, split, fold)
