"""A model card (``MODEL_CARD.md``) next to a finetuned run: what it was trained on, how well it did
on held-out sites, and where it should not be trusted.

Why: a run folder is self-describing for the machine (``config.yaml``, ``run.json``, checkpoints);
a person deciding whether to use its predictions for their basins needs the same facts in prose —
the training data and its provenance, the holdout skill from ``stefaland report``, and the limits.
Everything here is read from the run folder (and, optionally, a report's ``<task>_report.json``);
nothing is typed by hand, so the card cannot drift from the run. Each fold's ``config.yaml`` and
``run.json`` describe it; its ``predictions.nc`` (read with :mod:`stefaland.run.predictions`)
gives the held-out skill on the metrics the registry puts on the card
(:attr:`stefaland.metrics.Metric.on_card`).

``stefaland finetune`` writes the card once its folds are done; a script that calls the library's
``finetune`` calls :func:`write_model_card` itself.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from stefaland import __version__, fileio
from stefaland.errors import StefaLandError
from stefaland.finetune.config import FinetuneConfig, load_config
from stefaland.finetune.record import read_fold_record
from stefaland.metrics import LOW_FRACTION, card_metrics, site_metrics
from stefaland.run.layout import fold_directories, predictions_url
from stefaland.run.predictions import read_predictions

log = logging.getLogger("stefaland.report")

CARD_FILE = "MODEL_CARD.md"


#: FLV is a percentage of the mean of a site's lowest 30 % of flows; where those average below this
#: share of the site's mean flow (ephemeral rivers, a dry virtual world) the percentage runs into the
#: thousands and says nothing about skill, so the card leaves such sites out of FLV's median.
FLV_MIN_LOW_SHARE = 0.01
#: ... and, for streamflow in mm/day, where they average below this (a river nearly dry a third of
#: the time: a model off by 0.1 mm/day there scores FLV in the thousands of percent).
FLV_MIN_LOW_FLOW = 0.01


def _low_flows(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per site (rows): the mean of the lowest 30 % of observed flows, and its share of the mean flow."""
    low, shares = np.full(obs.shape[0], np.nan), np.full(obs.shape[0], np.nan)
    for i, row in enumerate(obs):
        values = np.sort(row[np.isfinite(row)])
        k = int(round(LOW_FRACTION * len(values)))
        mean = values.mean() if len(values) else np.nan
        if k and mean > 0:
            low[i] = values[:k].mean()
            shares[i] = low[i] / mean
    return low, shares


def flv_unscorable(obs: np.ndarray, units: str) -> np.ndarray:
    """Sites (rows) whose low flows are too small for FLV's percentage to mean anything."""
    low, shares = _low_flows(obs)
    tiny = ~(shares >= FLV_MIN_LOW_SHARE)
    if units.replace(" ", "") in ("mm/day", "mm/d", "mmd-1", "mmday-1"):
        tiny |= ~(low >= FLV_MIN_LOW_FLOW)
    return tiny


@dataclass(frozen=True)
class _Fold:
    """What the card reads of one finished fold: its name (``fold3``), config and run record."""

    name: str
    config: FinetuneConfig
    record: dict


def _read_fold(name: str, directory: str) -> _Fold:
    record = read_fold_record(directory)
    if record is None:
        raise StefaLandError(f"{fileio.join(directory, 'run.json')}: the run record is missing (a run from before "
                             "run.json was written); the model card is written from it")
    return _Fold(name, load_config(fileio.join(directory, "config.yaml")), record)


def _holdout_from_predictions(folds: list[tuple[str, str]]) -> tuple[dict[str, float], int, int, int]:
    """Median over held-out sites of each card metric, from the folds' own ``predictions.nc``.

    Also the sites scored and skipped on the first card metric (the card's headline), and the sites
    left out of FLV's median (see :data:`FLV_MIN_LOW_SHARE`).
    """
    obs, sim, units = [], [], ""
    for _, directory in folds:
        url = predictions_url(directory)
        if fileio.exists(url):
            data = read_predictions(url)
            units = str(data.attrs.get("units", units))
            obs.append(np.atleast_2d(data["obs"].values.T).T)
            sim.append(np.atleast_2d(data["sim"].values.T).T)
    if not obs or obs[0].ndim != 2 or obs[0].shape[1] < 2:
        return {}, 0, 0, 0
    observed = np.concatenate(obs)
    names = [metric.name for metric in card_metrics()]
    per_site = site_metrics(observed, np.concatenate(sim), metrics=names)
    headline = per_site[names[0]]
    scored = int(np.isfinite(headline).sum())
    if "FLV" in per_site:
        tiny = flv_unscorable(observed, units) & np.isfinite(per_site["FLV"])
        per_site["FLV"] = np.where(tiny, np.nan, per_site["FLV"])
        left_out = int(tiny.sum())
    else:
        left_out = 0
    return {m: float(np.nanmedian(v)) if np.isfinite(v).any() else float("nan") for m, v in per_site.items()}, \
        scored, int(len(headline) - scored), left_out


def _pretrained_lines(loaded: list[_Fold]) -> list[str]:
    """Which pretraining checkpoint each fold's encoder came from (run.json's ``pretrained.url``)."""
    urls = {f.name: ((f.record.get("pretrained") or {}).get("url") or f.config.model.pretrained) for f in loaded}
    used = {name: url for name, url in urls.items() if url}
    random = [f.name for f in loaded if not urls[f.name] and f.config.model.allow_random_init]
    if random:  # a foreign encoder built without its published weights (model.allow_random_init)
        frozen = "frozen" if loaded[0].config.model.freeze_encoder else "trained with the heads"
        return [f"* Encoder: random initialisation ({frozen}; model.allow_random_init, no published weights loaded): "
                "not the published model's skill."]
    if not used:
        return ["* Pretrained encoder: none (every weight trained on this task)."]
    if len(set(used.values())) == 1 and len(used) == len(urls):
        return [f"* Pretrained encoder: `{next(iter(used.values()))}`."]
    return ["* Pretrained encoder, per fold: " + ", ".join(f"{name} `{url}`" for name, url in used.items()) + "."]


def _holdout_from_report(url: str, model: str) -> list[dict]:
    document = json.loads(fileio.read_bytes(url))
    rows = [r for r in document.get("summary", []) if r.get("model") == model]
    if not rows:
        raise StefaLandError(f"{url}: the report has no rows for model {model!r}")
    return rows


def model_card(run: str, report: str | None = None) -> str:
    """The card's markdown for the run folder ``run`` (one fold or ``fold-<k>/`` folders)."""
    from stefaland.finetune.models.registry import known_models  # the registry pulls in torch and every model

    folds = fold_directories(run)
    # Only finished folds describe the model: another process may be training a fold of the same
    # run folder right now (folds run as parallel jobs), or a killed run left one behind.
    finished = [(name, d) for name, d in folds if fileio.exists(predictions_url(d))]
    pending = [name for name, d in folds if (name, d) not in finished]
    if not finished:
        raise StefaLandError(f"{run}: no fold has finished (no predictions.nc); nothing to describe yet")
    loaded = [_read_fold(name, directory) for name, directory in finished]
    first = loaded[0]
    record, config = first.record, first.config
    v = record["variables"]
    provenance = record.get("store_provenance") or {}
    spec = known_models().get(config.model.name)
    label = config.model.display_label()
    lines = [
        f"# Model card: {label} ({config.task})", "",
        f"Model `{config.model.name}`: {spec.description if spec else config.model.name}. Written {datetime.now(timezone.utc):%Y-%m-%d} "
        f"by StefaLand {__version__} (trained with {record.get('stefaland_version', 'unknown')}).", "",
        "## Training data", "",
        f"* Store: `{record.get('store')}` — dataset `{provenance.get('dataset', 'unknown')}`, catalog "
        f"`{provenance.get('catalog', 'unknown')}` (sha256 `{str(provenance.get('catalog_sha256', ''))[:12]}`), "
        f"built {provenance.get('built_at', 'unknown')}.",
        f"* Period: {record.get('train_period', ['?', '?'])[0]} .. {record.get('train_period', ['?', '?'])[1]} "
        "(clipped to the store's days).",
        f"* Holdout scheme: `{record.get('split')}`, {len(folds)} fold model(s): "
        + ", ".join(f"{f.name} ({len(f.record.get('train_sites') or [])} training sites)" for f in loaded) + ".",
        *_pretrained_lines(loaded),
        f"* Target: `{v['target']}` [{v.get('target_units', '')}]" + (" (one value per site)" if v.get("static_target") else "") + ".",
        "* Dynamic inputs: "
        + ", ".join(f"`{n}` [{u}]" for n, u in zip(v["dynamic"], v.get("dynamic_units") or [""] * len(v["dynamic"]))) + ".",
        "* Static inputs: "
        + ", ".join(f"`{n}` [{u}]" for n, u in zip(v["static"], v.get("static_units") or [""] * len(v["static"]))) + ".",
        "* Inputs are z-scored with the training store's statistics, recorded in each fold's `run.json`; "
        "`stefaland predict` uses those, never the new sites' own.", "",
        "## Held-out results", "",
    ]
    if report is not None:
        rows = _holdout_from_report(report, label)
        lines += [f"From `{report}` (medians over held-out sites):", "", "| split | metric | median | sites scored | skipped |",
                  "| --- | --- | ---: | ---: | ---: |"]
        lines += [f"| {r.get('split')} | {r.get('metric')} | {float(r.get('value', float('nan'))):.3f} | "
                  f"{r.get('n_scored', '')} | {r.get('n_skipped', '')} |" for r in rows]
    else:
        medians, scored, skipped, flv_left_out = _holdout_from_predictions(folds)
        if medians:
            lines += [f"Medians over the sites held out of each fold ({scored} scored, {skipped} skipped; "
                      "run `stefaland report` for the full table):", "",
                      "| " + " | ".join(medians) + " |", "|" + " ---: |" * len(medians),
                      "| " + " | ".join(f"{x:.3f}" for x in medians.values()) + " |"]
            if flv_left_out:
                lines += ["", f"FLV leaves out {flv_left_out} site(s) whose lowest 30 % of flows average below "
                          f"{FLV_MIN_LOW_SHARE:.0%} of their mean flow (or below {FLV_MIN_LOW_FLOW} mm/day): a "
                          "percentage of almost nothing says nothing about skill."]
        else:
            lines.append("No held-out predictions found in the run folder.")
    lines += [
        "", "## Limits", "",
        "* Valid only for inputs built like the training store: the same variables in the same canonical units "
        "(checked by `stefaland predict`, which refuses a mismatch).",
        f"* Trained on {provenance.get('dataset', 'this dataset')}'s sites; sites whose attributes or climate fall "
        "outside that range are extrapolation, and holdout skill does not transfer to them.",
        "* Held-out skill is a median: half of the held-out sites do worse than the figures above.",
        "* Predictions use windows of the training sequence length with a warm-up; the first days of a period are "
        "warmed up on a copy of its own first days when no earlier forcings are given.",
    ]
    if "hbv" in config.model.name:
        lines.append("* HBV fluxes and states (ET, recharge, snow, soil water) are model internals constrained only "
                     "through streamflow; they are plausible, not observed.")
    if v.get("static_target"):
        lines.append("* A static target is predicted as the mean of the daily outputs over the period.")
    if pending:
        lines.append(f"* Not described here (no predictions yet: training elsewhere, or interrupted): {', '.join(pending)}.")
    return "\n".join(lines) + "\n"


def write_model_card(run: str, report: str | None = None) -> str:
    """Write ``MODEL_CARD.md`` into the run folder (atomically) and return its URL."""
    url = fileio.join(str(run).rstrip("/"), CARD_FILE)
    fileio.write_bytes_atomic(url, model_card(run, report).encode())
    log.info("wrote %s", url)
    return url
