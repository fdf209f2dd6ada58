"""Report figures: CDF of a per-site metric per model, a map of it, and the median site's series.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global state), and
returned as PNG bytes so the caller can put them on local disk or object storage alike.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stefaland.metrics import known_metrics
from stefaland.report.folds import JoinedRun

log = logging.getLogger("stefaland.report")


def _bounded(column: str) -> bool:
    """A skill score (:attr:`Metric.bounded`): drawn over [-1, 1], the range that matters. Other
    columns (an error, an RMSE) are drawn over their own range."""
    metric = known_metrics().get(column)
    return metric is not None and metric.bounded


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def cdf_png(sites: pd.DataFrame, metric: str, title: str) -> bytes:
    """Empirical CDF of ``metric`` across sites, one line per model (sites with NaN left out)."""
    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for model, group in sites.groupby("model", sort=False):
        values = np.sort(group[metric].to_numpy(dtype=float))
        values = values[np.isfinite(values)]
        if values.size:
            axes.step(values, np.arange(1, values.size + 1) / values.size, where="post",
                      label=f"{model} (median {np.median(values):.3f}, n={values.size})")
    if _bounded(metric):
        axes.set_xlim(-1, 1)
    axes.set_xlabel(metric)
    axes.set_ylabel("fraction of sites ≤ value")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="upper left")
    return _png(figure)


def map_png(sites: pd.DataFrame, metric: str, title: str) -> bytes | None:
    """Per-site ``metric`` by lat/lon, one panel per model; None (logged) when sites lack coordinates."""
    located = sites.dropna(subset=["lat", "lon"])
    if located.empty:
        log.info("%s: no lat/lon in the predictions files; map skipped", title)
        return None
    models = list(dict.fromkeys(located["model"]))
    columns, rows = min(len(models), 3), (len(models) + 2) // 3
    figure = Figure(figsize=(4.5 * columns + 1, 3.5 * rows), layout="constrained")
    vmin, vmax = (-1, 1) if _bounded(metric) else (float(located[metric].min()), float(located[metric].max()))
    panels = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True).ravel()
    for axes, model in zip(panels, models):
        group = located[located["model"] == model]
        points = axes.scatter(group["lon"], group["lat"], c=group[metric], cmap="RdYlBu", vmin=vmin, vmax=vmax,
                              s=12, edgecolors="none")
        axes.set_title(model, fontsize="small")
    for axes in panels[len(models):]:
        axes.set_visible(False)
    figure.supxlabel("lon")
    figure.supylabel("lat")
    figure.colorbar(points, ax=list(panels), label=metric, shrink=0.8)
    figure.suptitle(title)
    return _png(figure)


def median_site(sites: pd.DataFrame, metric: str) -> str | None:
    """The site whose ``metric`` (averaged over models) is the median: a typical, not a best, case."""
    mean = sites.pivot_table(index="site", columns="model", values=metric, aggfunc="first").mean(axis=1).dropna()
    if mean.empty:
        return None
    ordered = mean.sort_values()
    return str(ordered.index[(len(ordered) - 1) // 2])


def hydrograph_png(runs: list[JoinedRun], site: str, title: str) -> bytes:
    """Observed and every model's simulated series at ``site``."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    axes = figure.add_subplot()
    observed = runs[0].dataset["obs"].sel(site=site)
    axes.plot(observed["time"].values, observed.values, color="black", lw=1.2, label="observed", zorder=3)
    for run in runs:
        series = run.dataset["sim"].sel(site=site)
        axes.plot(series["time"].values, series.values, lw=0.9, label=run.model)
    axes.set_ylabel(runs[0].units)
    axes.set_title(title)
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    return _png(figure)


def scatter_png(runs: list[JoinedRun], title: str) -> bytes:
    """Observed vs predicted across sites, for static targets (one panel per model and property)."""
    columns, rows = min(len(runs), 3), (len(runs) + 2) // 3
    figure = Figure(figsize=(4 * columns, 4 * rows), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes in panels[len(runs):]:
        axes.set_visible(False)
    for axes, run in zip(panels, runs):
        obs, sim = run.dataset["obs"].values, run.dataset["sim"].values
        axes.scatter(obs, sim, s=6, alpha=0.5)
        finite = np.isfinite(obs) & np.isfinite(sim)
        if finite.any():
            low, high = float(min(obs[finite].min(), sim[finite].min())), float(max(obs[finite].max(), sim[finite].max()))
            axes.plot([low, high], [low, high], color="black", lw=0.8)
        axes.set_xlabel(f"observed {run.variable} ({run.units})")
        axes.set_ylabel("predicted")
        axes.set_title(f"{run.model}: {run.variable}", fontsize="small")
    figure.suptitle(title)
    return _png(figure)
