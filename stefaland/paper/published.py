"""The paper's published numbers (``published.yaml``): one data file, each value with its source.

Why a data file: the render puts the paper's value beside ours, the plan's GPU-hour estimate uses
the paper's Table C8, and a test checks every number against the paper's text, so the numbers are
written once, where a reader can audit them, and nowhere in code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

PUBLISHED = Path(__file__).with_name("published.yaml")


@dataclass(frozen=True)
class PublishedTable:
    """One of the paper's tables: its column groups, metrics and rows in the paper's order."""

    key: str
    title: str
    caption: str
    groups: dict[str, str]  # group -> the paper's column-group heading
    metrics: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]  # {row, text, values: {group: [value per metric]}}

    def row_names(self) -> list[str]:
        return [str(row["row"]) for row in self.rows]

    def value(self, row: str, group: str, metric: str) -> float | None:
        """The paper's value at (row, group, metric); None where the paper prints none."""
        for entry in self.rows:
            if entry["row"] == row:
                values = entry["values"].get(group)
                if values is None or metric not in self.metrics:
                    return None
                return float(values[self.metrics.index(metric)])
        return None


@cache
def published() -> dict[str, Any]:
    """The parsed data file."""
    return yaml.safe_load(PUBLISHED.read_text())


def published_table(key: str) -> PublishedTable:
    """The paper's table ``key`` (``1``, ``2``, ``3``, ``4``, ``F1``)."""
    entry = published()["tables"][key]
    return PublishedTable(key, entry["title"], entry["caption"], dict(entry["groups"]), tuple(entry["metrics"]),
                          tuple(entry["rows"]))


def table_keys() -> list[str]:
    """The tables the file holds, in the paper's order."""
    return [str(key) for key in published()["tables"]]


def compute_rates() -> dict[str, tuple[float, int]]:
    """Table C8: ``{model or 'pretrain': (seconds per epoch, GPUs)}`` on the paper's V100s."""
    return {str(row["row"]): (float(row["seconds_per_epoch"]), int(row["gpus"]))
            for row in published()["compute"]["rows"]}
