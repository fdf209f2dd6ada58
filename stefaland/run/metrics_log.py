"""``metrics.csv``: the rows a run has logged, rewritten whole after every checkpoint.

Rewritten rather than appended so that a run resumed from a checkpoint drops the rows logged
after it (the checkpoint holds the rows up to its own step).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from ..fileio import join, write_bytes_atomic

METRICS_FILE = "metrics.csv"


def write_metrics(directory: str, rows: Sequence[dict[str, Any]]) -> None:
    """``<directory>/metrics.csv`` from ``rows``: the union of their keys as columns, in first-seen order.

    No rows, no file: a run that has logged nothing yet leaves the previous file (if any) alone.
    """
    if not rows:
        return
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(join(directory, METRICS_FILE), buffer.getvalue().encode())
