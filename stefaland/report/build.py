"""``stefaland report``: from a folder of predictions files to tables, per-site CSV, JSON and plots."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import xarray as xr

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.metrics import DEFAULT_MIN_VALID, keep_freed_memory_for_scoring
from stefaland.outputs import claim_output
from stefaland.progress import progress
from stefaland.report.folds import JoinedRun, group_by_run, join_folds
from stefaland.report.tables import markdown_table, score_run
from stefaland.report.tasks import Scheme, Task, get_task, schemes_for
from stefaland.run.predictions import REQUIRED_ATTRS, find_prediction_files, open_if_predictions
from stefaland.run.predictions_verify import UNVERIFIED, VERIFIED_MANIFEST, verify_against_manifest
from stefaland.splits import get_holdout

log = logging.getLogger("stefaland.report")

FORMATS = ("md", "csv", "json", "png")

#: ``stefaland predict`` writes ``fold = "predict"`` (every fold model applied, their mean as
#: ``sim``); the report scores such files under their own column group ``predict``.
PREDICT_FOLD = "predict"
PREDICT_SPLIT = "predict"
#: ``--out`` is claimed as this kind of StefaLand output (stefaland.outputs): a folder holding
#: anything else (a user's own camels_table.md) is refused, a previous report replaced only with force.
REPORT_KIND = "report"


@dataclass
class Report:
    """What a report computed and where it was written."""

    task: str
    table: str
    summary: pd.DataFrame
    sites: pd.DataFrame
    outputs: list[str] = field(default_factory=list)
    verification: dict[str, str] = field(default_factory=dict)  # source -> how it was verified


def make_report(task: str, split: str, runs: str, out: str, models: Sequence[str] | None = None,
                formats: Sequence[str] = FORMATS, min_valid: int = DEFAULT_MIN_VALID, quiet: bool = False,
                folds: str | Sequence[str] | None = None, force: bool = False) -> Report:
    """Score every model's joined folds on the task's schemes and write the requested outputs.

    ``split`` names one scheme or ``all``; with ``all`` a scheme nobody has predictions for is left
    out with a note, while a scheme named explicitly must have files. ``folds`` scores a subset of
    one scheme's folds (folds run as separate jobs, a quick demo): a fold spec (``1,2``, ``1-5``,
    :func:`stefaland.splits.parse_fold_spec`) or a list of fold ids; the table's heading says so,
    since a median over some folds is not the scheme's median. ``out`` is a folder StefaLand claims
    as a report (:mod:`stefaland.outputs`); an earlier report there is replaced only with ``force``.
    Every file is verified before it is scored (:mod:`stefaland.run.predictions_verify`).
    """
    spec = get_task(task)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise StefaLandError(f"unknown report format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    schemes = [] if split == PREDICT_SPLIT else schemes_for(task, split)
    kept: set[str] | None = None  # the fold labels scored, when not every fold is
    if folds is not None:
        fold_spec = folds if isinstance(folds, str) else ",".join(map(str, folds))
        schemes = [_only_folds(scheme, fold_spec, split) for scheme in schemes]
        kept = {label for scheme in schemes for label in scheme.folds}
    splits = {s.split for s in schemes}
    datasets = []
    for dataset in _read_predictions(runs, quiet):
        if dataset.attrs["task"] != task or (models is not None and dataset.attrs["model"] not in models):
            continue
        if dataset.attrs["fold"] == PREDICT_FOLD:
            if split in ("all", PREDICT_SPLIT) or dataset.attrs["split"] in splits:
                datasets.append(_as_predict_scheme(dataset))
        elif dataset.attrs["split"] in splits and (kept is None or dataset.attrs["fold"] in kept):
            datasets.append(dataset)
    splits_found = {d.attrs["split"] for d in datasets}
    if PREDICT_SPLIT in splits_found or split == PREDICT_SPLIT:
        schemes.append(predict_scheme(task))
    if models is not None:
        absent = [m for m in models if m not in {d.attrs["model"] for d in datasets}]
        if absent:
            raise StefaLandError(f"{runs}: no {task} predictions for model(s) {', '.join(absent)} "
                                 f"(splits {', '.join(sorted(splits))})")
    joined: dict[str, list[JoinedRun]] = {}
    for scheme in schemes:
        groups = group_by_run(datasets, scheme, spec)
        if not groups:
            if split != "all" and not (scheme.split == split and PREDICT_SPLIT in splits_found):
                raise StefaLandError(f"{runs}: no predictions files for {task}/{scheme.split}")
            log.info("%s/%s: no predictions files; scheme left out", task, scheme.split)
            continue
        joined[scheme.split] = [join_folds(m, v, folds, scheme, spec) for (m, v), folds in groups.items()]
    if not joined:
        raise StefaLandError(f"{runs}: no predictions files for task {task}")
    for runs_of_scheme in joined.values():
        for run in runs_of_scheme:
            run.dataset.load()
            if not np.isfinite(run.dataset["obs"].values).any():
                log.warning("%s: obs holds no values (predict without --with-obs?); its %d sites are listed but none "
                            "can be scored", ", ".join(run.sources), run.dataset.sizes["site"])
    _check_units(joined)
    _check_same_sites(joined)
    verification = {s: how for rs in joined.values() for r in rs for s, how in r.verification.items()}
    _warn_unverified(verification)

    keep_freed_memory_for_scoring()
    site_frames, records = [], []
    all_runs = [r for rs in joined.values() for r in rs]
    for run in progress(all_runs, "scoring", quiet=quiet):
        sites, summary = score_run(run, spec, min_valid)
        site_frames.append(sites)
        records.extend(summary)
    sites = pd.concat(site_frames, ignore_index=True)
    summary = pd.DataFrame.from_records(records)
    order = list(models) if models is not None else list(dict.fromkeys(r.model for r in all_runs))
    used = [s for s in schemes if s.split in joined]
    table = markdown_table(summary, spec, used, order)
    report = Report(task, table, summary, sites, verification=verification)
    if formats:
        with claim_output(out, REPORT_KIND, force=force) as claim:
            if claim.existed:
                claim.clear()  # a report of ours (force): replaced whole, no stale plot left beside the new
            claim.mark()
            _write_outputs(report, spec, used, joined, out, formats, min_valid)
    return report


def _read_predictions(runs: str, quiet: bool) -> list[xr.Dataset]:
    """Every predictions file under ``runs``, verified (manifest, else data digest) and validated.

    Other StefaLand outputs (a store, embeddings) and datasets with no obs/sim at all are passed
    over with a log line; when nothing is left, the error says what was looked for and what was seen.
    """
    found = find_prediction_files(runs)
    datasets = []
    for url in progress(found.files, "reading predictions", quiet=quiet):
        in_manifest = verify_against_manifest(url)
        dataset = open_if_predictions(url)
        if dataset is None:
            found.skipped.append((url, "no obs/sim variables"))
            log.info("%s: skipped, no obs/sim variables (not a predictions file)", url)
            continue
        if in_manifest:
            dataset.attrs["verified"] = VERIFIED_MANIFEST
        datasets.append(dataset)
    if not datasets:
        seen = "; ".join(f"{url} ({why})" for url, why in found.skipped[:3])
        more = f" and {len(found.skipped) - 3} more" if len(found.skipped) > 3 else ""
        raise StefaLandError(f"{runs}: no predictions files found (*.nc or *.zarr holding obs and sim, with attributes "
                             f"{', '.join(REQUIRED_ATTRS)}; docs/PREDICTIONS.md)"
                             + (f"; skipped {seen}{more}" if seen else ""))
    return datasets


def _warn_unverified(verification: dict[str, str]) -> None:
    """One warning for the files scored without any checksum to vouch for them (the decision is in
    stefaland.run.predictions_verify: scored, and said so, since other tools write predictions files too)."""
    unverified = [source for source, how in verification.items() if how == UNVERIFIED]
    if unverified:
        log.warning("%d predictions file(s) carry no checksum (no manifest.json beside them, no data sha256) and are "
                    "scored unverified: %s", len(unverified), ", ".join(unverified[:3]) + (" …" if len(unverified) > 3 else ""))


def _only_folds(scheme: Scheme, spec: str, split: str) -> Scheme:
    """``scheme`` restricted to the folds ``spec`` names, titled so nobody mistakes it for the whole scheme."""
    if split == "all":
        raise StefaLandError("--folds needs one --split (the folds of which scheme?)")
    holdout = get_holdout(scheme.task, scheme.split)
    wanted = {holdout.label(k, holdout.fold_ids) for k in holdout.select(spec, holdout.fold_ids, "--folds")}
    kept = tuple(f for f in scheme.folds if f in wanted)
    if kept == scheme.folds:
        return scheme
    return replace(scheme, folds=kept, title=f"{scheme.title}; folds {', '.join(kept)} of {len(scheme.folds)} only")


def predict_scheme(task: str) -> Scheme:
    """The column group of ``stefaland predict`` files: one file per model, on the sites it was
    asked for. Not a holdout scheme (its sites need not tile anything), so it is reported beside
    the schemes, never merged into one."""
    return Scheme(task, PREDICT_SPLIT, (PREDICT_FOLD,), "sites predicted by `stefaland predict` (fold-ensemble mean)")


def _as_predict_scheme(dataset: xr.Dataset) -> xr.Dataset:
    dataset.attrs["holdout_split"] = dataset.attrs["split"]  # the scheme its fold models were trained on
    dataset.attrs["split"] = PREDICT_SPLIT
    return dataset


def _check_units(joined: dict[str, list[JoinedRun]]) -> None:
    """Models compared in one table must share units, or the RMSE columns mean nothing."""
    seen: dict[str, JoinedRun] = {}
    for runs in joined.values():
        for run in runs:
            first = seen.setdefault(run.variable, run)
            if run.units != first.units:
                raise StefaLandError(f"{run.variable}: model {run.model!r} ({run.scheme.split}) is in {run.units!r} but "
                                     f"model {first.model!r} ({first.scheme.split}) is in {first.units!r}")


def _check_same_sites(joined: dict[str, list[JoinedRun]]) -> None:
    for split, runs in joined.items():
        reference = set(runs[0].dataset["site"].values)
        for run in runs[1:]:
            other = set(run.dataset["site"].values)
            if other != reference:
                log.warning("%s: model %r scores %d sites, model %r %d (%d in common); medians are over different "
                            "sites", split, run.model, len(other), runs[0].model, len(reference), len(other & reference))


def _write_outputs(report: Report, spec: Task, schemes: list[Scheme], joined: dict[str, list[JoinedRun]], out: str,
                   formats: Sequence[str], min_valid: int) -> None:
    def put(name: str, data: bytes) -> None:
        url = fileio.join(out, name)
        fileio.write_bytes_atomic(url, data)
        report.outputs.append(url)
        log.info("wrote %s", url)

    task = spec.name
    if "md" in formats:
        put(f"{task}_table.md", report.table.encode())
    if "csv" in formats:
        put(f"{task}_sites.csv", report.sites.to_csv(index=False).encode())
        put(f"{task}_summary.csv", report.summary.to_csv(index=False).encode())
    if "json" in formats:
        document = {
            "task": task, "min_valid": min_valid,
            "schemes": [{"split": s.split, "title": s.title, "folds": list(s.folds)} for s in schemes],
            "runs": [{"model": r.model, "variable": r.variable, "split": r.scheme.split, "units": r.units,
                      "n_sites": int(r.dataset.sizes["site"]), "sources": r.sources, "verified": r.verification}
                     for rs in joined.values() for r in rs],
            "summary": _records(report.summary),
            "sites": _records(report.sites),
        }
        put(f"{task}_report.json", json.dumps(document, indent=1).encode())
    if "png" in formats:
        for scheme in schemes:
            _write_plots(put, spec, scheme, joined[scheme.split], report.sites)


def _write_plots(put, spec: Task, scheme: Scheme, runs: list[JoinedRun], sites: pd.DataFrame) -> None:
    from stefaland.report import plots  # matplotlib only when plots are asked for

    prefix = f"{spec.name}_{scheme.split}"
    scheme_sites = sites[sites["split"] == scheme.split]
    if spec.static:
        put(f"{prefix}_scatter.png", plots.scatter_png(runs, f"{spec.name} {scheme.split}: observed vs predicted"))
        error = scheme_sites.assign(abs_error=scheme_sites["error"].abs())
        image = plots.map_png(error, "abs_error", f"{spec.name} {scheme.split}: |predicted − observed|")
        if image is not None:
            put(f"{prefix}_error_map.png", image)
        return
    metric = spec.plot_metric
    put(f"{prefix}_{metric.lower()}_cdf.png", plots.cdf_png(scheme_sites, metric, f"{spec.name} {scheme.split}: {metric}"))
    image = plots.map_png(scheme_sites, metric, f"{spec.name} {scheme.split}: per-site {metric}")
    if image is not None:
        put(f"{prefix}_{metric.lower()}_map.png", image)
    site = plots.median_site(scheme_sites, metric)
    if site is None:
        log.info("%s: no site could be scored; hydrograph skipped", prefix)
        return
    having = [r for r in runs if site in set(r.dataset["site"].values)]
    put(f"{prefix}_median_site.png",
        plots.hydrograph_png(having, site, f"{spec.name} {scheme.split}: median-{metric} site {site}"))


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts: NaN becomes null, numpy scalars become Python numbers."""
    rows = json.loads(frame.to_json(orient="records", double_precision=15))
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]
