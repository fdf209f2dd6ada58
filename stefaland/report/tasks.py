"""The report's tasks: each task's target, its table's metrics, and its schemes' column groups.

The schemes themselves (their folds and titles) come from the holdout registry
(:mod:`stefaland.splits.registry`), so fold ids mean the same thing to the finetuning jobs (which
write ``fold`` into each predictions file) and to the report, which knows when a fold is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from stefaland.errors import StefaLandError
from stefaland.splits import Holdout, get_holdout, holdouts_of


@dataclass(frozen=True)
class Scheme:
    """One column group of a report: every held-out site of the task is in exactly one of ``folds``."""

    task: str
    split: str
    folds: tuple[str, ...]  # the fold labels predictions files carry
    title: str  # the column-group heading, as in the paper's tables

    @classmethod
    def of(cls, holdout: Holdout) -> Scheme:
        """The column group of a registered holdout scheme."""
        return cls(holdout.task, holdout.name, holdout.labels(), holdout.title)


@dataclass(frozen=True)
class Task:
    """A finetuning task: its target kind and what its report table shows."""

    name: str
    target: str  # default target variable name when a file has no ``variable`` attribute
    static: bool  # one value per site (WoSIS texture) rather than a time series
    table_metrics: tuple[str, ...]
    plot_metric: str  # per-site metric drawn in the CDF and the map

    @property
    def schemes(self) -> dict[str, Scheme]:
        """The task's schemes in table order, as the holdout registry has them now."""
        return {holdout.name: Scheme.of(holdout) for holdout in holdouts_of(self.name)}


STREAMFLOW_METRICS = ("RMSE", "ubRMSE", "Corr", "NSE", "KGE", "FLV", "FHV")
SOIL_MOISTURE_METRICS = ("RMSE", "ubRMSE", "Corr")
SOIL_PROPERTY_METRICS = ("Corr", "R2", "RMSE")

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("camels", "streamflow", False, STREAMFLOW_METRICS, "NSE"),
        Task("global", "streamflow", False, STREAMFLOW_METRICS, "NSE"),
        Task("ismn", "soil_moisture", False, SOIL_MOISTURE_METRICS, "Corr"),
        Task("smap", "soil_moisture", False, SOIL_MOISTURE_METRICS, "Corr"),
        Task("wosis", "clay", True, SOIL_PROPERTY_METRICS, "Corr"),
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
    return [Scheme.of(get_holdout(task, split))]
