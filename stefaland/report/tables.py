"""Score joined runs and lay the results out as the paper does: per-site CSV, summary, markdown.

The table shows medians over held-out sites (paper Appendix E.3); the per-site CSV is the evidence
behind every cell, so a reader can recompute any median from it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from stefaland.metrics import get_metric, known_metrics, pooled_metric_names, pooled_metrics, site_metrics, summarise
from stefaland.report.folds import JoinedRun
from stefaland.report.tasks import Scheme, Task


def score_run(run: JoinedRun, task: Task, min_valid: int) -> tuple[pd.DataFrame, list[dict]]:
    """Per-site rows and summary records (one per metric) for one model on one scheme."""
    ds = run.dataset
    obs, sim = ds["obs"].values, ds["sim"].values
    sites = pd.DataFrame({
        "task": task.name, "split": run.scheme.split, "model": run.model, "variable": run.variable,
        "site": ds["site"].values.astype(str), "fold": ds["fold"].values.astype(str),
        "lat": ds["lat"].values if "lat" in ds.coords else np.nan,
        "lon": ds["lon"].values if "lon" in ds.coords else np.nan,
    })
    base = {"task": task.name, "split": run.scheme.split, "model": run.model, "variable": run.variable,
            "units": run.units}
    if task.static:
        sites["n_valid"] = (np.isfinite(obs) & np.isfinite(sim)).astype(int)
        sites["obs"], sites["sim"], sites["error"] = obs, sim, sim - obs
        pooled = pooled_metrics(obs, sim, metrics=pooled_metric_names())
        n = pooled.pop("n")
        pooled = {m: (v if math.isfinite(v) else math.nan) for m, v in pooled.items()}
        records = [{**base, "metric": m, "value": v, "aggregate": "pooled", "median": math.nan, "mean": math.nan,
                    "std": math.nan, "n_scored": n, "n_skipped": int(obs.size - n)} for m, v in pooled.items()]
        return sites, records
    sites["n_valid"] = (np.isfinite(obs) & np.isfinite(sim)).sum(axis=1)
    per_site = site_metrics(obs, sim, metrics=list(known_metrics()), min_valid=min_valid)
    per_site = {name: np.where(np.isfinite(values), values, np.nan) for name, values in per_site.items()}
    for name, values in per_site.items():
        sites[name] = values  # NaN = skipped: an empty CSV cell, a JSON null, counted in n_skipped
    records = [{**base, "metric": m, "value": s["median"], "aggregate": "median", **s}
               for m, s in summarise(per_site).items()]
    return sites, records


def markdown_table(summary: pd.DataFrame, task: Task, schemes: list[Scheme], models: list[str]) -> str:
    """Rows = models (× property when several), column groups = schemes, as in the paper's tables."""
    metrics = list(task.table_metrics)
    variables = list(dict.fromkeys(summary["variable"])) if len(summary) else [task.target]
    show_variable = task.static or len(variables) > 1
    header = ["Model"] + (["Property"] if show_variable else [])
    for scheme in schemes:
        header += [f"{scheme.split} {get_metric(m).heading} {get_metric(m).arrow}" for m in metrics]
    lines = [f"### {task.name}: " + "; ".join(f"{s.split} = {s.title}" for s in schemes), "",
             "| " + " | ".join(header) + " |",
             "| " + " | ".join(["---"] * (1 + show_variable) + ["---:"] * (len(header) - 1 - show_variable)) + " |"]
    values = summary.set_index(["model", "variable", "split", "metric"])["value"] if len(summary) else None
    for model in models:
        for variable in variables:
            row = [escape_markdown(model)] + ([escape_markdown(variable)] if show_variable else [])
            present = False
            for scheme in schemes:
                for metric in metrics:
                    key = (model, variable, scheme.split, metric)
                    if values is not None and key in values.index:
                        row.append(_format(metric, float(values[key])))
                        present = True
                    else:
                        row.append("—")
            if present:
                lines.append("| " + " | ".join(row) + " |")
    lines += ["", _footnote(summary, task, schemes)]
    return "\n".join(lines) + "\n"


def _footnote(summary: pd.DataFrame, task: Task, schemes: list[Scheme]) -> str:
    """Sites scored / skipped per (scheme, model), taken from the same summary rows as the CSV.

    Metrics differ in where they are defined (NSE needs varying observations, FLV non-zero low
    flows), so a metric whose counts differ from the first column's is listed with its own.
    """
    what = "pooled over held-out sites" if task.static else "medians over held-out sites"
    parts = []
    shown = summary[summary["metric"].isin(task.table_metrics)] if len(summary) else summary
    for scheme in schemes:
        rows = shown[shown["split"] == scheme.split]
        for (model, variable), group in rows.groupby(["model", "variable"], sort=False):
            counts = {r["metric"]: (int(r["n_scored"]), int(r["n_skipped"])) for _, r in group.iterrows()}
            first = counts.get(task.table_metrics[0], next(iter(counts.values())))
            label = f"{scheme.split}/{escape_markdown(str(model))}"
            if len(set(shown["variable"])) > 1:
                label += f" ({escape_markdown(str(variable))})"
            text = f"{label}: {first[0]} scored, {first[1]} skipped"
            others: dict[tuple[int, int], list[str]] = {}
            for metric in task.table_metrics:
                if metric in counts and counts[metric] != first:
                    others.setdefault(counts[metric], []).append(get_metric(metric).heading)
            if others:
                text += " (" + "; ".join(f"{', '.join(m)}: {s} scored, {k} skipped" for (s, k), m in others.items()) + ")"
            parts.append(text)
    units = ", ".join(escape_markdown(u) for u in sorted(set(summary["units"]))) if len(summary) else "?"
    return f"Values are {what} (units: {units}; FLV/FHV in %). " + "; ".join(parts) + "."


_MARKDOWN_SPECIAL = "\\`*_[]<>|#"


def escape_markdown(text: str) -> str:
    """A string safe inside a Markdown table cell: one line, no column breaks (``|``), no emphasis,
    links, code or HTML. Model names and units come from predictions files anyone can write."""
    flat = " ".join(str(text).split())
    return "".join(f"\\{c}" if c in _MARKDOWN_SPECIAL else c for c in flat)


def _format(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return "—"  # no site could be scored: never a number (the footnote says how many were skipped)
    return f"{value:.{get_metric(metric).decimals}f}"
