"""One finetuning run per held-out fold: select sites, train (or resume), predict, write.

Layout of ``<out>/fold-<k>/``: ``config.yaml`` (the exact config, checked on resume),
``checkpoints/`` (``latest.json`` + ``ckpt-XXXXXX.pt``, or ``model.npz`` for scikit-learn: arrays, no pickle),
``metrics.csv`` and ``predictions.nc`` (written last, atomically).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.outputs import Claim
from stefaland.run import config_io, folder
from stefaland.run.device import set_threads
from stefaland.run.folds import fold_assignment, fold_ids
from stefaland.run.manifest import MANIFEST, write_run_manifest
from stefaland.run.metrics_log import write_metrics
from stefaland.run.record import write_run_record
from stefaland.store import open_store

from .config import FinetuneConfig, parse_config
from .data import (
    FoldSites,
    SiteData,
    Variables,
    drop_unobserved,
    load_site_data,
    normalise_to_training,
    resolve_variables,
    select_fold,
    split_validation_sites,
)
from .inference import predict_sklearn, predict_torch, write_fold_predictions
from .labels import fold_label
from .leakage import refuse_leakage
from .models.registry import build_torch_model, check_window, model_spec
from .models.sklearn_baselines import HISTORY, load_baseline, save_baseline
from .record import make_record
from .trainer import Validation, best_epoch, train_model

log = logging.getLogger("stefaland.finetune")

PREDICTIONS_FILE = "predictions.nc"
TEMPORAL = "temporal"  # the split in which every site trains on one period and is tested on another
TEMPORAL_FOLD = "all"  # its one "fold": the report's fold label; the run's folder is <out>/temporal


@dataclass
class FoldResult:
    fold: int
    predictions: str
    n_train_sites: int
    n_test_sites: int
    metrics: list[dict]


def fold_dir(out: str, fold: int) -> str:
    return fileio.join(out, f"fold-{fold}")


def _check_run_folder(directory: str, config: FinetuneConfig) -> None:
    """Resuming with another config would silently mix two experiments; refuse, then (re)write it."""
    folder.refuse_other_config(directory, config, parse_config, what="fold folder")
    folder.write_config(directory, config_io.config_yaml(config))


def _variables_state(variables: Variables) -> dict:
    """The scaling inside every checkpoint, so a run whose run.json is lost can still be rebuilt exactly."""
    return {"variables": {"dynamic": variables.dynamic, "static": variables.static, "target": variables.target,
                          "target_mean": variables.target_mean, "target_std": variables.target_std,
                          **{key: [float(v) for v in getattr(variables, key)]
                             for key in ("dynamic_mean", "dynamic_std", "static_mean", "static_std")},
                          "target_bounds": list(variables.target_bounds)}}


def _train_sklearn(config: FinetuneConfig, directory: str, train_data, variables: Variables, seed: int):
    fitted = load_baseline(directory)  # arrays only: a planted pickle is refused, never loaded
    if fitted is not None:
        log.info("reusing the fitted baseline in %s", directory)
        return fitted
    model = model_spec(config.model.name).build(config.model, variables, seed)
    if train_data.target.ndim == 1:
        model.fit_static(train_data.dynamic, train_data.static, train_data.target)
    else:
        model.fit(train_data.dynamic, train_data.static, train_data.target, np.random.default_rng(seed))
    model = save_baseline(directory, model)  # predict with what was saved, as a later reuse will
    write_metrics(directory, [{"epoch": 0, "train_rows": min(config.model.max_rows, int(np.isfinite(train_data.target).sum()))}])
    return model


def uses_pretrained_weights(config: FinetuneConfig) -> bool:
    """A pretrained encoder whose weights the model loads (the registry says which models do)."""
    return bool(config.model.pretrained) and model_spec(config.model.name).pretrained_encoder


def per_fold_pretrained(config: FinetuneConfig, fold: int) -> FinetuneConfig:
    """``model.pretrained: runs/pretrain-pub-{fold}`` gives each fold the encoder pretrained without it
    (the paper's leak-free PUB/PUR setup, see ``data.exclude`` in the pretraining config)."""
    path = config.model.pretrained
    if not path or "{fold}" not in path:
        return config
    model = config.model.model_copy(update={"pretrained": path.replace("{fold}", str(fold))})
    return config.model_copy(update={"model": model})


def finetune_fold(store: str, config: FinetuneConfig, out: str, split: str, fold: int,
                  split_file: str | None = None, quiet: bool = False) -> FoldResult:
    """Train on every fold of ``split`` but ``fold``, predict ``fold``; resumable."""
    config = per_fold_pretrained(config, fold)
    if uses_pretrained_weights(config):
        refuse_leakage(config.model.pretrained, split, fold, config.model.allow_pretraining_leakage)
    dataset = open_store(store)
    folds = fold_assignment(dataset, split, split_file)
    sites = select_fold(folds, fold)
    label = fold_label(config.task, split, fold, fold_ids(folds))
    return _run(store, dataset, config, fold_dir(out, fold), split, fold, label, sites, split_file, quiet)


def check_temporal_periods(config: FinetuneConfig) -> None:
    """A temporal run scores days it was not fitted on: refuse overlapping periods before writing anything."""
    data = config.data
    if _overlap(data.test_start, data.test_end, data.train_start, data.train_end):
        raise StefaLandError(f"--split temporal: the test period {data.test_start}..{data.test_end} overlaps the "
                             f"training period {data.train_start}..{data.train_end}; make them disjoint")


def finetune_temporal(store: str, config: FinetuneConfig, out: str, split_file: str | None = None,
                      quiet: bool = False) -> FoldResult:
    """Every site (or every site of ``split_file``) trains on the training period and is predicted on
    the test period: the gauged-basin experiment. The periods must not overlap -- that would score
    days the model was fitted on."""
    check_temporal_periods(config)
    dataset = open_store(store)
    if split_file is not None:
        members = fold_assignment(dataset, TEMPORAL, split_file) >= 0
    else:
        members = np.ones(dataset.sizes["site"], dtype=bool)
    rows = np.flatnonzero(members)
    if uses_pretrained_weights(config):
        log.info("temporal split: the pretrained encoder may have seen the test years' inputs (never the target)")
    sites = FoldSites(0, rows, rows)
    return _run(store, dataset, config, fileio.join(out, TEMPORAL), TEMPORAL, TEMPORAL_FOLD, TEMPORAL_FOLD, sites,
                split_file, quiet)


def _validation_data(dataset, config: FinetuneConfig, variables: Variables, fitted: SiteData,
                     held_back: SiteData | None, temporal: bool, history: int) -> Validation | None:
    """What is scored after each epoch, taken from the training side only.

    Validation sites come out of the training sites (``data.valid_fraction``); a validation period
    is scored on them, or on the fitted sites when no site is held back. Nothing here ever touches
    a test site, nor (for ``--split temporal``) a test day.
    """
    data = config.data
    if held_back is None and data.valid_start is None:
        return None
    if data.valid_start is not None:
        start, end = data.valid_start, data.valid_end or data.valid_start
    else:
        start, end = data.train_start, data.train_end
    if held_back is None and _overlap(start, end, data.train_start, data.train_end):
        raise StefaLandError(f"data.valid_start..valid_end ({start}..{end}) overlaps the training period on the "
                             "same sites; use a disjoint period or data.valid_fraction")
    if temporal and _overlap(start, end, data.test_start, data.test_end):
        raise StefaLandError(f"data.valid_start..valid_end ({start}..{end}) overlaps the test period "
                             f"({data.test_start}..{data.test_end})")
    names = (held_back if held_back is not None else fitted).sites
    position = {s: i for i, s in enumerate(np.asarray(dataset["site"].values).astype(str))}
    rows = np.asarray([position[str(s)] for s in names], dtype=np.int64)
    return Validation(load_site_data(dataset, rows, variables, start, end, "valid", history), variables)


def _overlap(start_a: str, end_a: str, start_b: str, end_b: str) -> bool:
    return pd.Timestamp(start_a) <= pd.Timestamp(end_b) and pd.Timestamp(start_b) <= pd.Timestamp(end_a)


def _run(store: str, dataset, config: FinetuneConfig, directory: str, split: str, fold: int | str, label: str,
         sites: FoldSites, split_file: str | None, quiet: bool) -> FoldResult:
    """Train on ``sites.train`` over the training period, predict ``sites.test`` over the test period.

    Order matters: the training arrays are split into fitted and validation sites, the scaling is
    fitted on the fitted sites and training period alone, and only then are the model (whose
    encoder gains and HBV forcings depend on the scaling), the validation and the test data made.
    """
    spec = model_spec(config.model.name)
    set_threads(config.train.threads)
    data = config.data
    variables = resolve_variables(dataset, data)
    _check_run_folder(directory, config)
    log.info("%s fold %s: %d training sites, %d test sites; model %s", split, fold, len(sites.train),
             len(sites.test), config.model.name)
    train_data = drop_unobserved(load_site_data(dataset, sites.train, variables, data.train_start, data.train_end, "train"))
    train_data, held_back = split_validation_sites(train_data, data.valid_fraction, config.train.seed)
    variables = normalise_to_training(variables, train_data)
    # what `predict` needs beside the fold's weights
    record = make_record(store, dataset, config, variables, split, fold, [str(s) for s in train_data.sites], split_file)
    write_run_record(directory, record)
    if spec.kind == "sklearn":
        model = _train_sklearn(config, directory, train_data, variables, config.train.seed)
        metrics: list[dict] = []
        test_data = load_site_data(dataset, sites.test, variables, data.test_start, data.test_end, "test", HISTORY)
        simulated = predict_sklearn(model, test_data)
    else:
        torch.manual_seed(config.train.seed)  # identical initial weights on a fresh start and a resume
        model = build_torch_model(config.model, variables)
        warmup = spec.warmup(config.model)
        check_window(model, warmup + data.seq_len)
        history = warmup + data.overlap()
        validation = _validation_data(dataset, config, variables, train_data, held_back, split == TEMPORAL, history)
        metrics = train_model(model, train_data, config, directory, _variables_state(variables), quiet, validation)
        _refuse_untrained(directory, metrics)
        test_data = load_site_data(dataset, sites.test, variables, data.test_start, data.test_end, "test", history)
        simulated = predict_torch(model, test_data, data.seq_len, data.overlap(), config.train.batch_size, quiet,
                                  warmup=warmup)
        record["best_epoch"] = best_epoch(metrics)
        record["validation"] = None if validation is None else {
            "sites": [str(s) for s in validation.data.sites],
            "period": [str(validation.data.times[validation.data.history].date()), str(validation.data.times[-1].date())]}
        write_run_record(directory, record)
    _unfinished(directory)
    url = write_fold_predictions(fileio.join(directory, PREDICTIONS_FILE), test_data, simulated, variables,
                                 config.task, split, label, config.model.display_label())
    write_run_manifest(directory)  # last: marks the fold finished; `pull` and `report` check files against it
    return FoldResult(fold, url, len(train_data.sites), len(test_data.sites), metrics)


def _refuse_untrained(directory: str, metrics: list[dict]) -> None:
    """Predictions of a model that trained no epoch would look like any fold's; refuse before writing any."""
    if not metrics:
        raise StefaLandError(f"{directory}: the model trained no epoch (train.epochs: 0?); no predictions written")


def _unfinished(directory: str) -> None:
    """Drop the fold's manifest before its predictions are (re)written: until the new manifest comes,
    `report` sees a fold that did not finish rather than a manifest that vouches for other bytes."""
    url = fileio.join(directory, MANIFEST)
    if fileio.exists(url):
        fileio.remove(url, recursive=False)


def resolve_folds(store: str, split: str, fold: str | int, split_file: str | None = None) -> list[int]:
    """``all`` → every fold of the split; otherwise the one fold (checked against the split)."""
    known = fold_ids(fold_assignment(open_store(store), split, split_file))
    if str(fold) == "all":
        return known
    try:
        value = int(fold)
    except ValueError:
        raise StefaLandError(f"--fold must be an integer or 'all' (got {fold!r})") from None
    if value not in known:
        raise StefaLandError(f"fold {value} is not in split {split!r} (folds: {', '.join(map(str, known))})")
    return [value]


def _other_rank() -> bool:
    """True in the extra processes of a multi-GPU ``torchrun`` launch.

    Finetuning a fold is small (a CAMELS epoch takes seconds to minutes on one GPU) and runs in one
    process; folds are parallelised as separate jobs instead. Extra ranks step aside rather than
    write the same files as rank 0.
    """
    rank = int(os.environ.get("RANK", "0") or 0)
    if rank != 0:
        log.warning("finetuning runs in one process; rank %d has nothing to do and exits", rank)
    return rank != 0


RUN_KIND = "finetune"


def _locked(directory: str) -> Claim:
    """The lock of one fold folder (``<out>/fold-<k>.lock``), refreshed every minute while it trains.

    ``finetune`` first adopts ``<out>`` (refusing a folder of other files, a plain file or another
    kind of output, and marking a new one); each fold then locks only its own folder, so the pods
    of an Indexed Job train their folds in parallel while two writers of one fold never both run.
    """
    return folder.lock_part(directory, RUN_KIND)


def finetune(store: str, config: FinetuneConfig, out: str, split: str, fold: str | int = "all",
             split_file: str | None = None, quiet: bool = False) -> list[FoldResult]:
    """Leave-one-fold-out over the requested fold(s); each fold is an independent, resumable run."""
    if _other_rank():
        return []
    if split == TEMPORAL:
        if str(fold) != "all":
            raise StefaLandError("--split temporal has no folds: every site trains on data.train_* and is tested on "
                                 "data.test_*; drop --fold")
        check_temporal_periods(config)
        folder.adopt_run_folder(out, RUN_KIND)
        with _locked(fileio.join(out, TEMPORAL)):
            results = [finetune_temporal(store, config, out, split_file, quiet)]
    else:
        folds = resolve_folds(store, split, fold, split_file)
        folder.adopt_run_folder(out, RUN_KIND)
        results = []
        for k in folds:
            with _locked(fold_dir(out, k)):
                results.append(finetune_fold(store, config, out, split, k, split_file, quiet))
    from stefaland.runcard import write_model_card

    write_model_card(out)
    return results
