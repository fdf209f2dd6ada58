"""The holdout schemes of every task, their folds, and which metrics each task's table shows.

One table, so that ``report`` knows when a fold is missing and so that fold ids mean the same thing
to the finetuning jobs (which write ``fold`` into each predictions file) and to the report.
Numbered folds are 1-based, as MHPI publish them (CAMELS ``PUB_ID`` 1..10, PUR regions 1..7).
"""

from __future__ import annotations

from dataclasses import dataclass

from stefaland.errors import StefaLandError


@dataclass(frozen=True)
class Scheme:
    """One holdout scheme: every site of the task is held out in exactly one of ``folds``."""

    task: str
    split: str
    folds: tuple[str, ...]
    title: str  # the column-group heading, as in the paper's tables


@dataclass(frozen=True)
class Task:
    """A finetuning task: its target kind, its schemes, and what its report table shows."""

    name: str
    target: str  # default target variable name when a file has no ``variable`` attribute
    static: bool  # one value per site (WoSIS texture) rather than a time series
    table_metrics: tuple[str, ...]
    plot_metric: str  # per-site metric drawn in the CDF and the map
    schemes: dict[str, Scheme]


def _numbered(n: int) -> tuple[str, ...]:
    return tuple(str(k) for k in range(1, n + 1))


def _task(name: str, target: str, static: bool, table_metrics: tuple[str, ...], plot_metric: str,
          schemes: list[tuple[str, tuple[str, ...], str]]) -> Task:
    return Task(name, target, static, table_metrics, plot_metric,
                {split: Scheme(name, split, folds, title) for split, folds, title in schemes})


# `finetune --split temporal`: every gauged site, scored on a test period it was not trained on; one "fold"
TEMPORAL_SCHEME = ("temporal", ("all",), "Temporal holdout (gauged sites, unseen test period)")

STREAMFLOW_METRICS = ("RMSE", "ubRMSE", "Corr", "NSE", "KGE", "FLV", "FHV")
SOIL_MOISTURE_METRICS = ("RMSE", "ubRMSE", "Corr")
SOIL_PROPERTY_METRICS = ("Corr", "R2", "RMSE")

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        _task("camels", "streamflow", False, STREAMFLOW_METRICS, "NSE", [
            ("pub", _numbered(10), "Random holdout (ungauged basins, PUB)"),
            ("pur", _numbered(7), "Regional holdout (ungauged regions, PUR)"),
            TEMPORAL_SCHEME,
        ]),
        _task("global", "streamflow", False, STREAMFLOW_METRICS, "NSE", [
            ("random", _numbered(3), "Random holdout (ungauged basins)"),
            ("continents", _numbered(3), "Regional holdout (ungauged continents: 1 north_america, 2 south_america, 3 europe)"),
            TEMPORAL_SCHEME,
        ]),
        _task("ismn", "soil_moisture", False, SOIL_MOISTURE_METRICS, "Corr", [
            ("random", _numbered(5), "Random location holdout (random sites)"),
            ("europe", _numbered(1), "Regional holdout (Europe)"),
            TEMPORAL_SCHEME,
        ]),
        _task("wosis", "clay", True, SOIL_PROPERTY_METRICS, "Corr", [
            ("random", _numbered(5), "Random holdout (soil profiles)"),
        ]),
    )
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise StefaLandError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def schemes_for(task: str, split: str) -> list[Scheme]:
    """The schemes named by ``split`` (``all`` = every scheme of the task, in table order)."""
    spec = get_task(task)
    if split == "all":
        return list(spec.schemes.values())
    if split not in spec.schemes:
        raise StefaLandError(f"task {task!r} has no split {split!r}; known: {', '.join(spec.schemes)}, all")
    return [spec.schemes[split]]
