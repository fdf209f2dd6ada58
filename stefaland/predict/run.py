"""``stefaland predict``: a finetuned run (one fold or all of them) applied to a catalog's sites.

Every fold model of the run predicts every requested site; the predictions file holds each fold
as an ensemble member (``sim_fold<k>``), their mean as ``sim`` and their standard deviation as
``spread``, in the predictions-file contract of docs/PREDICTIONS.md (``obs`` is NaN unless
``with_obs`` copies the catalog's observations in). HBV hybrids also get a second file with the
interpretable fluxes and states and the learned parameters per site (:mod:`.hbv`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stefaland import fileio
from stefaland.bounds import clip_to_bounds
from stefaland.errors import StefaLandError
from stefaland.finetune.config import FinetuneConfig, load_config
from stefaland.finetune.data import SiteData, Variables
from stefaland.finetune.record import read_fold_record, record_from_store
from stefaland.run.checkpoint import load_latest
from stefaland.run.layout import FOLD_MARKER, fold_directories, predict_url
from stefaland.run.predictions import predictions_dataset

from .inputs import check_inputs, read_site_list, select_rows, site_data
from .write import check_output, write_dataset

log = logging.getLogger("stefaland.predict")

@dataclass
class FoldModel:
    """One fold's trained model with everything needed to feed it."""

    name: str  # "fold3", or "model" for a single-fold folder
    directory: str
    config: FinetuneConfig
    record: dict
    kind: str  # torch | sklearn
    state: dict | None = None
    estimator: Any = None


@dataclass
class PredictSummary:
    out: str
    n_sites: int
    n_time: int
    members: list[str]
    hbv_out: str | None = None
    sites: list[str] = field(default_factory=list)


def load_fold(name: str, directory: str, training_store: str | None) -> FoldModel:
    config = load_config(fileio.join(directory, FOLD_MARKER))
    from stefaland.finetune.models.registry import model_spec

    kind = model_spec(config.model.name).kind
    state, estimator = None, None
    if kind == "sklearn":
        from stefaland.finetune.models.sklearn_baselines import BASELINE_FILE, load_baseline

        estimator = load_baseline(directory)  # arrays only: a planted pickle is refused, never loaded
        if estimator is None:
            url = fileio.join(directory, "checkpoints", BASELINE_FILE)
            raise StefaLandError(f"{url}: the fitted model is missing (did the fold finish?)")
    else:
        state = load_latest(directory)
        if state is None:
            raise StefaLandError(f"{directory}: holds no checkpoint (checkpoints/latest.json); did the fold train?")
    record = read_fold_record(directory)
    if record is None:
        if training_store is None:
            raise StefaLandError(
                f"{fileio.join(directory, 'run.json')}: the run record is missing (a run from before run.json "
                "was written); pass --training-store with the store it was trained on"
            )
        record = record_from_store(training_store, config, state)
    return FoldModel(name, directory, config, record, kind, state, estimator)


def _same_inputs(folds: list[FoldModel]) -> None:
    first = folds[0].record["variables"]
    for fold in folds[1:]:
        other = fold.record["variables"]
        for key in ("dynamic", "static", "target", "dynamic_units", "static_units", "target_units"):
            if first.get(key) != other.get(key):
                raise StefaLandError(f"{fold.directory}: its {key} differ from {folds[0].directory}; not one run")


def _stand_in_checkpoint(fold: FoldModel, workdir: str) -> str | None:
    """A pretraining checkpoint with the recorded architecture and variables (random weights).

    The fold's checkpoint holds the encoder's trained weights; the pretraining file is only needed
    to *shape* the model. Using the record instead means a run keeps working after the
    pretraining run was moved or deleted.
    """
    section = fold.record.get("pretrained")
    if not section or not section.get("config") or section.get("dynamic_vars") is None:
        return None
    from stefaland.model import ModelConfig, StefaLandEncoder

    config = ModelConfig.model_validate(section["config"])
    encoder = StefaLandEncoder(len(section["dynamic_vars"]), len(section["static_vars"]), config)
    url = f"{workdir}/{fold.name}-encoder.pt"
    torch.save({"model": {f"encoder.{k}": v for k, v in encoder.state_dict().items()},
                "config": {"model": section["config"]},
                "schema": {"dynamic_vars": section["dynamic_vars"], "static_vars": section["static_vars"]}}, url)
    return url


def _torch_model(fold: FoldModel, variables: Variables, workdir: str) -> torch.nn.Module:
    from stefaland.finetune.models.registry import build_torch_model

    section = fold.config.model
    stand_in = _stand_in_checkpoint(fold, workdir) if section.pretrained else None
    if stand_in is not None:
        section = section.model_copy(update={"pretrained": stand_in})
    with contextlib.redirect_stdout(io.StringIO()):  # the loader's tensor summary: about the stand-in, not news
        model = build_torch_model(section, variables)
    assert fold.state is not None  # load_fold reads a torch fold's checkpoint or refuses the fold
    try:
        model.load_state_dict(fold.state["model"])
    except RuntimeError as exc:
        raise StefaLandError(f"{fold.directory}: checkpoint does not fit model {fold.config.model.name!r} "
                             f"({str(exc).splitlines()[0]})") from exc
    return model.eval()


def predict_member(fold: FoldModel, data: SiteData, variables: Variables, workdir: str, quiet: bool,
                   hbv_sink: dict | None = None) -> np.ndarray:
    """One fold's prediction for ``data`` in the target's units: (n, T), or (n,) for a static target."""
    from stefaland.finetune.inference import predict_sklearn, predict_torch
    from stefaland.finetune.models.hbv_hybrid import HBVHybrid
    from stefaland.finetune.models.registry import model_spec

    target_mean, target_std = float(fold.record["variables"]["target_mean"]), float(fold.record["variables"]["target_std"])
    fold_vars = Variables(**{**variables.__dict__, "target_mean": target_mean, "target_std": target_std})
    if fold.kind == "sklearn":
        simulated = predict_sklearn(fold.estimator, data)
    else:
        model = _torch_model(fold, fold_vars, workdir)
        cfg = fold.config
        simulated = predict_torch(model, data, cfg.data.seq_len, cfg.data.overlap(), cfg.train.batch_size, quiet,
                                  warmup=model_spec(cfg.model.name).warmup(cfg.model))
        if hbv_sink is not None and isinstance(model, HBVHybrid):
            from .hbv_outputs import hbv_outputs

            hbv_sink[fold.name] = hbv_outputs(model, data, cfg.data.seq_len, cfg.data.overlap(), cfg.train.batch_size)
    return fold_vars.physical(simulated)


def _fold_inputs(dataset, fold: FoldModel, rows: np.ndarray, catalog: str, with_obs: bool) -> tuple[Variables, SiteData]:
    """A fold's inputs scaled with its own training statistics (every fold has other training sites)."""
    variables = check_inputs(dataset, fold.record, str(catalog))
    return variables, site_data(dataset, rows, variables, with_obs)


@contextlib.contextmanager
def _quiet_build(quiet: bool):
    """The temporary store is an implementation detail: its build's progress lines are noise here."""
    logger = logging.getLogger("stefaland.assemble")
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def predict_run(run: str, catalog: str, out: str | None = None, sites: str | None = None,
                start: str | None = None, end: str | None = None, training_store: str | None = None,
                with_obs: bool = False, shard_size: int = 64, quiet: bool = False,
                force: bool = False, sources: list[str] | None = None) -> PredictSummary:
    """Predict the sites of ``catalog`` (all, or the ids listed in the file ``sites``) with every fold of ``run``.

    ``sources``: the catalog's sources to build the inputs from (as ``data build --sources``), for a
    catalog whose default sources are not the ones the run was trained on (e.g. NLDAS-only data)."""
    from stefaland.assemble import build_store
    from stefaland.store import open_store

    folds = [load_fold(name, directory, training_store) for name, directory in fold_directories(run)]
    _same_inputs(folds)
    wanted = None if sites in (None, "all") else read_site_list(sites)
    out = out or predict_url(run)
    check_output(out, force)  # refuse a foreign or existing --out before any work (stefaland.outputs)
    workdir = tempfile.mkdtemp(prefix="stefaland-predict-")
    try:
        store = f"{workdir}/inputs.zarr"
        with _quiet_build(quiet):
            build_store(str(catalog), store, shard_size=shard_size, sources=sources, start=start, end=end,
                        quiet=quiet)
        dataset = open_store(store)
        variables = check_inputs(dataset, folds[0].record, str(catalog))
        rows = select_rows(dataset, wanted, sites or "all")
        data = site_data(dataset, rows, variables, with_obs)
        is_hbv = any(f.kind == "torch" and "hbv" in f.config.model.name for f in folds)
        hbv: dict | None = {} if is_hbv else None
        members = {}
        for f in folds:  # each fold was scaled with its own training sites' statistics
            fold_vars, fold_data = (variables, data) if f is folds[0] else _fold_inputs(dataset, f, rows, catalog, with_obs)
            members[f.name] = clip_to_bounds(predict_member(f, fold_data, fold_vars, workdir, quiet, hbv),
                                             fold_vars.target_bounds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    stack = np.stack(list(members.values()))  # (member, n, T) or (member, n)
    record = folds[0].record
    v = record["variables"]
    times = None if variables.static_target else data.times
    dataset_out = predictions_dataset(
        data.target, stack.mean(axis=0), list(data.sites), times, record["task"], record.get("split") or "none",
        "predict", folds[0].config.model.display_label(), v.get("target_units", ""), data.lat, data.lon, v["target"],
        members if len(members) > 1 else None,
    )
    if len(members) > 1:
        dims = dataset_out["sim"].dims
        dataset_out["spread"] = (dims, stack.std(axis=0).astype(np.float32),
                                 {"units": v.get("target_units", ""), "long_name": "standard deviation of the fold models"})
    dataset_out.attrs.update({"run": str(run), "catalog": str(catalog), "members": ",".join(members),
                              "obs": "catalog observations" if with_obs else "none (NaN): prediction only"})
    write_dataset(dataset_out, out, force)
    hbv_out = None
    if hbv:
        from .hbv_outputs import hbv_dataset

        hbv_out = re.sub(r"(\.nc4?|\.zarr)$", "", out) + "_hbv" + (".zarr" if out.endswith(".zarr") else ".nc")
        write_dataset(hbv_dataset(hbv, data, record), hbv_out, force)
    return PredictSummary(out, len(data.sites), len(data.times), list(members), hbv_out, list(data.sites))
