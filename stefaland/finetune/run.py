"""One finetuning run per fold of a holdout plan: train (or resume), predict, write.

The holdout (:mod:`stefaland.splits.plan`) says, fold by fold, which sites train and are tested over
which periods, the fold's label and its folder (:mod:`stefaland.run.layout`: ``<out>/fold-<k>/``, or
``<out>/temporal/``). Each fold folder holds ``config.yaml`` (the exact config, checked on resume),
``checkpoints/`` (``latest.json`` + ``ckpt-XXXXXX.pt``, or ``model.npz`` for scikit-learn: arrays, no pickle),
``metrics.csv`` and ``predictions.nc`` (written last, atomically).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.outputs import Claim
from stefaland.run import config_io, folder, layout
from stefaland.run.device import set_threads
from stefaland.run.manifest import MANIFEST, write_run_manifest
from stefaland.run.metrics_log import write_metrics
from stefaland.run.record import write_run_record
from stefaland.splits import ALL, Fold, Holdout, holdout_for
from stefaland.splits.plan import Period, overlap
from stefaland.store import open_store

from .config import FinetuneConfig, parse_config
from .data import (
    SiteData,
    Variables,
    drop_unobserved,
    load_site_data,
    normalise_to_training,
    resolve_variables,
    split_validation_sites,
)
from .inference import predict_sklearn, predict_torch, write_fold_predictions
from .leakage import refuse_leakage
from .models.registry import build_torch_model, check_window, model_spec
from .models.sklearn_baselines import HISTORY, SklearnBaseline, load_baseline, save_baseline
from .record import make_record
from .trainer import Validation, best_epoch, train_model

log = logging.getLogger("stefaland.finetune")


@dataclass
class FoldResult:
    """What one fold left: its predictions file, how many sites it trained on and tested, its metrics."""

    fold: int
    predictions: str
    n_train_sites: int
    n_test_sites: int
    metrics: list[dict]
    name: str  # the fold as commands name it (:attr:`stefaland.splits.Fold.name`)


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
    if not isinstance(model, SklearnBaseline):
        raise StefaLandError(f"model {config.model.name!r} is registered as a scikit-learn baseline, but its factory "
                             f"built a {type(model).__name__}")
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


def _periods(config: FinetuneConfig) -> tuple[Period, Period]:
    data = config.data
    return (data.train_start, data.train_end), (data.test_start, data.test_end)


def finetune_fold(store: str, config: FinetuneConfig, out: str, split: str, fold: int,
                  split_file: str | None = None, quiet: bool = False) -> FoldResult:
    """Fold ``fold`` of the holdout ``split`` of the config's task: train, predict its test sites; resumable.

    For a spatial holdout every fold of ``split`` but ``fold`` trains; the temporal holdout's one
    fold (id 1) trains and tests every site on the two periods.
    """
    holdout = holdout_for(config.task, split)
    dataset = open_store(store)
    planned = holdout.fold(holdout.assignment(dataset, split_file), fold, *_periods(config))
    return _finetune_planned(store, dataset, config, holdout, planned, out, split_file, quiet)


def _finetune_planned(store: str, dataset, config: FinetuneConfig, holdout: Holdout, fold: Fold, out: str,
                      split_file: str | None, quiet: bool) -> FoldResult:
    """One planned fold, after the pretrained encoder is checked for leakage where sites are held out."""
    if holdout.holds_out_sites:
        config = per_fold_pretrained(config, fold.id)
        pretrained = config.model.pretrained
        if pretrained and uses_pretrained_weights(config):
            refuse_leakage(pretrained, holdout.name, fold.id, config.model.allow_pretraining_leakage)
    elif uses_pretrained_weights(config):
        log.info("%s split: the pretrained encoder may have seen the test years' inputs (never the target)",
                 holdout.name)
    return _run(store, dataset, config, fileio.join(out, fold.folder), holdout, fold, split_file, quiet)


def _validation_data(dataset, config: FinetuneConfig, variables: Variables, fitted: SiteData,
                     held_back: SiteData | None, train: Period, test: Period | None, history: int) -> Validation | None:
    """What is scored after each epoch, taken from the training side only.

    Validation sites come out of the training sites (``data.valid_fraction``); a validation period
    is scored on them, or on the fitted sites when no site is held back. Nothing here ever touches
    a test site, nor a test day when the test sites are trained on too (``test``, the temporal
    holdout's test period; None when the test sites are held out).
    """
    data = config.data
    if held_back is None and data.valid_start is None:
        return None
    if data.valid_start is not None:
        start, end = data.valid_start, data.valid_end or data.valid_start
    else:
        start, end = train
    if held_back is None and overlap((start, end), train):
        raise StefaLandError(f"data.valid_start..valid_end ({start}..{end}) overlaps the training period on the "
                             "same sites; use a disjoint period or data.valid_fraction")
    if test is not None and overlap((start, end), test):
        raise StefaLandError(f"data.valid_start..valid_end ({start}..{end}) overlaps the test period "
                             f"({test[0]}..{test[1]})")
    names = (held_back if held_back is not None else fitted).sites
    position = {s: i for i, s in enumerate(np.asarray(dataset["site"].values).astype(str))}
    rows = np.asarray([position[str(s)] for s in names], dtype=np.int64)
    return Validation(load_site_data(dataset, rows, variables, start, end, "valid", history), variables)


def _run(store: str, dataset, config: FinetuneConfig, directory: str, holdout: Holdout, fold: Fold,
         split_file: str | None, quiet: bool) -> FoldResult:
    """Train on the fold's training sites over its training period, predict its test sites over its test period.

    Order matters: the training arrays are split into fitted and validation sites, the scaling is
    fitted on the fitted sites and training period alone, and only then are the model (whose
    encoder gains and HBV forcings depend on the scaling), the validation and the test data made.
    """
    spec = model_spec(config.model.name)
    set_threads(config.train.threads)
    data = config.data
    train, test = fold.train_period, fold.test_period
    assert train is not None and test is not None  # finetune plans every fold with the config's periods
    variables = resolve_variables(dataset, data)
    _check_run_folder(directory, config)
    log.info("%s fold %s: %d training sites, %d test sites; model %s", holdout.name, fold.name, len(fold.train_sites),
             len(fold.test_sites), config.model.name)
    train_data = drop_unobserved(load_site_data(dataset, fold.train_sites, variables, *train, "train"))
    train_data, held_back = split_validation_sites(train_data, data.valid_fraction, config.train.seed)
    variables = normalise_to_training(variables, train_data)
    # what `predict` needs beside the fold's weights
    record = make_record(store, dataset, config, variables, holdout.name, fold.name,
                         [str(s) for s in train_data.sites], split_file)
    write_run_record(directory, record)
    if spec.kind == "sklearn":
        model = _train_sklearn(config, directory, train_data, variables, config.train.seed)
        metrics: list[dict] = []
        test_data = load_site_data(dataset, fold.test_sites, variables, *test, "test", HISTORY)
        simulated = predict_sklearn(model, test_data)
    else:
        torch.manual_seed(config.train.seed)  # identical initial weights on a fresh start and a resume
        model = build_torch_model(config.model, variables)
        warmup = spec.warmup(config.model)
        check_window(model, warmup + data.seq_len)
        history = warmup + data.overlap()
        validation = _validation_data(dataset, config, variables, train_data, held_back, train,
                                      None if holdout.holds_out_sites else test, history)
        metrics = train_model(model, train_data, config, directory, _variables_state(variables), quiet, validation)
        _refuse_untrained(directory, metrics)
        test_data = load_site_data(dataset, fold.test_sites, variables, *test, "test", history)
        simulated = predict_torch(model, test_data, data.seq_len, data.overlap(), config.train.batch_size, quiet,
                                  warmup=warmup)
        record["best_epoch"] = best_epoch(metrics)
        record["validation"] = None if validation is None else {
            "sites": [str(s) for s in validation.data.sites],
            "period": [str(validation.data.times[validation.data.history].date()), str(validation.data.times[-1].date())]}
        write_run_record(directory, record)
    _unfinished(directory)
    url = write_fold_predictions(layout.predictions_url(directory), test_data, simulated, variables,
                                 config.task, holdout.name, fold.label, config.model.display_label())
    write_run_manifest(directory)  # last: marks the fold finished; `pull` and `report` check files against it
    return FoldResult(fold.id, url, len(train_data.sites), len(test_data.sites), metrics, fold.name)


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


def finetune(store: str, config: FinetuneConfig, out: str, split: str, fold: str | int = ALL,
             split_file: str | None = None, quiet: bool = False) -> list[FoldResult]:
    """Every fold ``fold`` names (``all``, ``3``, ``1,2``, ``1-5``) of the holdout ``split`` of the config's
    task; each fold is an independent, resumable run in its own folder of ``out``.

    The folds and periods are checked (:meth:`stefaland.splits.Holdout.plan`) before ``out`` is touched.
    """
    if _other_rank():
        return []
    holdout = holdout_for(config.task, split)
    dataset = open_store(store)
    folds = holdout.plan(dataset, fold, split_file, *_periods(config))
    folder.adopt_run_folder(out, RUN_KIND)
    results = []
    for planned in folds:
        with _locked(fileio.join(out, planned.folder)):
            results.append(_finetune_planned(store, dataset, config, holdout, planned, out, split_file, quiet))
    return results
