"""Progress bars that scripts can silence.

Every long loop goes through :func:`progress` so ``--quiet`` is honoured everywhere and the
look is consistent; bars go to stderr so stdout stays parseable.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

#: Width of a console that is not a terminal (a log file, a pipe, a pod's log): wide enough that
#: tables and messages are never cut or wrapped at rich's default of 80 columns.
LOG_WIDTH = 1000


def console(stderr: bool = False) -> Console:
    """A rich console; when its stream is not a terminal, one as wide as :data:`LOG_WIDTH`."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=LOG_WIDTH, soft_wrap=True)


_stderr = console(stderr=True)


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


class _PlainHandler(logging.StreamHandler):
    """One plain line per record on the current ``sys.stderr`` (looked up at each record, so a
    redirected or captured stderr gets it), never wrapped: for logs that are not a terminal."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Route ``stefaland.*`` logs to stderr: through rich on a terminal, as plain unwrapped lines
    otherwise; ``quiet`` keeps warnings and errors only. Called by the CLI (and by ``--quiet``)."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logger = logging.getLogger("stefaland")
    logger.handlers.clear()
    if sys.stderr.isatty():
        logger.addHandler(RichHandler(console=Console(stderr=True), show_path=False, show_time=False))
    else:
        logger.addHandler(_PlainHandler())
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
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressBoard:
        if self._progress is not None:
            self._progress.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, traceback)

    def add(self, name: str, total: int, completed: int = 0, **fields: Any) -> None:
        if self._progress is not None:
            self._tasks[name] = self._progress.add_task(name, total=total, completed=completed, **fields)

    def advance(self, name: str, amount: int = 1, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._tasks[name], advance=amount, **fields)
