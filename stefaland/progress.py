"""Progress bars that scripts can silence.

Every long loop goes through :func:`progress` so ``--quiet`` is honoured everywhere and the
look is consistent; bars go to stderr so stdout stays parseable.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

_stderr = Console(stderr=True)


def progress(
    items: Iterable[T], description: str, total: int | None = None, quiet: bool = False
) -> Iterator[T]:
    """Yield ``items`` while drawing a bar labelled ``description`` (nothing when ``quiet``)."""
    if quiet:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_stderr, transient=False) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Route ``stefaland.*`` logs to stderr through rich; called once by the CLI."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logger = logging.getLogger("stefaland")
    logger.handlers.clear()
    logger.addHandler(RichHandler(console=_stderr, show_path=False, show_time=False))
    logger.setLevel(level)
    logger.propagate = False


class ProgressBoard:
    """Several bars at once (one per source, one for the shards) that ``quiet`` turns off.

    A build reads many sources per shard; one bar per source shows which one is slow.
    """

    def __init__(self, quiet: bool = False, *extra_columns: TextColumn) -> None:
        self._progress = None if quiet else Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), *extra_columns, console=_stderr,
        )
        self._tasks: dict[str, object] = {}

    def __enter__(self) -> "ProgressBoard":
        if self._progress is not None:
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def add(self, name: str, total: int, completed: int = 0, **fields: object) -> None:
        if self._progress is not None:
            self._tasks[name] = self._progress.add_task(name, total=total, completed=completed, **fields)

    def advance(self, name: str, amount: int = 1, **fields: object) -> None:
        if self._progress is not None:
            self._progress.update(self._tasks[name], advance=amount, **fields)
