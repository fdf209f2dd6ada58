"""A model card (``MODEL_CARD.md``) next to a finetuned run: what it was trained on, how well it did
on held-out sites, and where it should not be trusted.

Why: a run folder is self-describing for the machine (``config.yaml``, ``run.json``, checkpoints);
a person deciding whether to use its predictions for their basins needs the same facts in prose —
the training data and its provenance, the holdout skill from ``stefaland report``, and the limits.
Everything here is read from the run folder (and, optionally, a report's ``<task>_report.json``);
nothing is typed by hand, so the card cannot drift from the run.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import numpy as np

from . import __version__, storage
from .errors import StefaLandError

log = logging.getLogger("stefaland.runcard")

CARD_FILE = "MODEL_CARD.md"
CARD_METRICS = ("NSE", "KGE", "Corr", "RMSE", "FHV", "FLV")


def _holdout_from_predictions(folds) -> tuple[dict[str, float], int, int]:
    """Median over held-out sites of each metric, from the folds' own ``predictions.nc``."""
    from .metrics import site_metrics
    from .report.predictions import read_predictions

    obs, sim = [], []
    for _, directory in folds:
        url = storage.join(directory, "predictions.nc")
        if storage.exists(url):
            data = read_predictions(url)
            obs.append(np.atleast_2d(data["obs"].values.T).T)
            sim.append(np.atleast_2d(data["sim"].values.T).T)
    if not obs or obs[0].ndim != 2 or obs[0].shape[1] < 2:
        return {}, 0, 0
    per_site = site_metrics(np.concatenate(obs), np.concatenate(sim), metrics=list(CARD_METRICS))
    scored = int(np.isfinite(per_site["NSE"]).sum())
    return {m: float(np.nanmedian(v)) if np.isfinite(v).any() else float("nan") for m, v in per_site.items()}, \
        scored, int(len(per_site["NSE"]) - scored)


def _holdout_from_report(url: str, model: str) -> list[dict]:
    document = json.loads(storage.read_bytes(url))
    rows = [r for r in document.get("summary", []) if r.get("model") == model]
    if not rows:
        raise StefaLandError(f"{url}: the report has no rows for model {model!r}")
    return rows


def model_card(run: str, report: str | None = None) -> str:
    """The card's markdown for the run folder ``run`` (one fold or ``fold-<k>/`` folders)."""
    from .finetune.models.registry import MODELS
    from .predict.run import fold_directories, load_fold

    folds = fold_directories(run)
    loaded = [load_fold(name, directory, None) for name, directory in folds]
    first = loaded[0]
    record, config = first.record, first.config
    v = record["variables"]
    provenance = record.get("store_provenance") or {}
    spec = MODELS.get(config.model.name)
    lines = [
        f"# Model card: {config.model.name} ({config.task})", "",
        f"{spec.description if spec else config.model.name}. Written {datetime.now(timezone.utc):%Y-%m-%d} "
        f"by StefaLand {__version__} (trained with {record.get('stefaland_version', 'unknown')}).", "",
        "## Training data", "",
        f"* Store: `{record.get('store')}` — dataset `{provenance.get('dataset', 'unknown')}`, catalog "
        f"`{provenance.get('catalog', 'unknown')}` (sha256 `{str(provenance.get('catalog_sha256', ''))[:12]}`), "
        f"built {provenance.get('built_at', 'unknown')}.",
        f"* Period: {record.get('train_period', ['?', '?'])[0]} .. {record.get('train_period', ['?', '?'])[1]} "
        "(clipped to the store's days).",
        f"* Holdout scheme: `{record.get('split')}`, {len(folds)} fold model(s): "
        + ", ".join(f"{f.name} ({len(f.record.get('train_sites') or [])} training sites)" for f in loaded) + ".",
        f"* Target: `{v['target']}` [{v.get('target_units', '')}]" + (" (one value per site)" if v.get("static_target") else "") + ".",
        f"* Dynamic inputs: " + ", ".join(f"`{n}` [{u}]" for n, u in zip(v["dynamic"], v.get("dynamic_units") or [""] * len(v["dynamic"]))) + ".",
        f"* Static inputs: " + ", ".join(f"`{n}` [{u}]" for n, u in zip(v["static"], v.get("static_units") or [""] * len(v["static"]))) + ".",
        "* Inputs are z-scored with the training store's statistics, recorded in each fold's `run.json`; "
        "`stefaland predict` uses those, never the new sites' own.", "",
        "## Held-out results", "",
    ]
    if report is not None:
        rows = _holdout_from_report(report, config.model.name)
        lines += [f"From `{report}` (medians over held-out sites):", "", "| split | metric | median | sites scored | skipped |",
                  "| --- | --- | ---: | ---: | ---: |"]
        lines += [f"| {r.get('split')} | {r.get('metric')} | {float(r.get('value', float('nan'))):.3f} | "
                  f"{r.get('n_scored', '')} | {r.get('n_skipped', '')} |" for r in rows]
    else:
        medians, scored, skipped = _holdout_from_predictions(folds)
        if medians:
            lines += [f"Medians over the sites held out of each fold ({scored} scored, {skipped} skipped; "
                      "run `stefaland report` for the full table):", "",
                      "| " + " | ".join(medians) + " |", "|" + " ---: |" * len(medians),
                      "| " + " | ".join(f"{x:.3f}" for x in medians.values()) + " |"]
        else:
            lines.append("No held-out predictions found in the run folder.")
    lines += [
        "", "## Limits", "",
        "* Valid only for inputs built like the training store: the same variables in the same canonical units "
        "(checked by `stefaland predict`, which refuses a mismatch).",
        f"* Trained on {provenance.get('dataset', 'this dataset')}'s sites; sites whose attributes or climate fall "
        "outside that range are extrapolation, and holdout skill does not transfer to them.",
        "* Held-out skill is a median: a quarter or more of held-out sites do worse than the figures above.",
        "* Predictions use windows of the training sequence length with a warm-up; the first days of a period are "
        "warmed up on a copy of its own first days when no earlier forcings are given.",
    ]
    if "hbv" in config.model.name:
        lines.append("* HBV fluxes and states (ET, recharge, snow, soil water) are model internals constrained only "
                     "through streamflow; they are plausible, not observed.")
    if v.get("static_target"):
        lines.append("* A static target is predicted as the mean of the daily outputs over the period.")
    return "\n".join(lines) + "\n"


def write_model_card(run: str, report: str | None = None) -> str:
    """Write ``MODEL_CARD.md`` into the run folder (atomically) and return its URL."""
    url = storage.join(str(run).rstrip("/"), CARD_FILE)
    storage.write_bytes_atomic(url, model_card(run, report).encode())
    log.info("wrote %s", url)
    return url
