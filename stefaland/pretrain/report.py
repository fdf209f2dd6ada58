"""What a run shows and leaves behind: the progress bar, ``metrics.csv`` and ``loss.png``."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..storage import join, write_bytes_atomic

_stderr = Console(stderr=True)


class TrainingBar:
    """One bar per epoch, its text showing the loss of each variable group."""

    def __init__(self, quiet: bool) -> None:
        self._progress = None if quiet else Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[losses]}"), console=_stderr,
        )
        self._task = None

    def __enter__(self) -> "TrainingBar":
        if self._progress is not None:
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, total: int, completed: int) -> None:
        if self._progress is not None:
            self._task = self._progress.add_task(f"epoch {epoch + 1}/{epochs}", total=total, completed=completed, losses="")

    def update(self, losses: dict[str, float]) -> None:
        if self._progress is not None and self._task is not None:
            if losses:  # steps between log rows keep the last losses on show
                text = " ".join(f"{name} {value:.3f}" for name, value in losses.items())
                self._progress.update(self._task, advance=1, losses=text)
            else:
                self._progress.update(self._task, advance=1)


def write_metrics(out: str, rows: Sequence[dict]) -> None:
    """Rewrite ``metrics.csv`` from the run's rows (resumed runs drop rows past their checkpoint)."""
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(join(out, "metrics.csv"), buffer.getvalue().encode())


def plot_loss(out: str, rows: Sequence[dict]) -> None:
    """``loss.png``: masked reconstruction error against the predict-the-mean baseline."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for kind, style in (("train", "-"), ("eval", "o-")):
        chosen = [r for r in rows if r["kind"] == kind and "recon" in r]
        if chosen:
            steps = [r["step"] for r in chosen]
            axis.plot(steps, [r["recon"] for r in chosen], style, label=f"{kind} masked reconstruction")
            axis.plot(steps, [r["baseline"] for r in chosen], style, alpha=0.4, label=f"{kind} predict-the-mean")
    axis.set_xlabel("step")
    axis.set_ylabel("mean squared error (z-units)")
    axis.set_yscale("log")
    axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    write_bytes_atomic(join(out, "loss.png"), buffer.getvalue())
