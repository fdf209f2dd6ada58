"""What a pretraining run shows and leaves behind besides ``metrics.csv``: the progress bar and ``loss.png``."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.progress import TextColumn

from ..fileio import join, write_bytes_atomic
from ..progress import ProgressBoard


class TrainingBar(ProgressBoard):
    """One bar per epoch, its text showing the loss of each variable group."""

    def __init__(self, quiet: bool) -> None:
        super().__init__(quiet, TextColumn("{task.fields[losses]}"))
        self._epoch: str | None = None

    def start_epoch(self, epoch: int, epochs: int, total: int, completed: int) -> None:
        self._epoch = f"epoch {epoch + 1}/{epochs}"
        self.add(self._epoch, total, completed, losses="")

    def update(self, losses: dict[str, float]) -> None:
        if self._epoch is None:
            return
        if losses:  # steps between log rows keep the last losses on show
            self.advance(self._epoch, losses=" ".join(f"{name} {value:.3f}" for name, value in losses.items()))
        else:
            self.advance(self._epoch)


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
