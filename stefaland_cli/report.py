"""``stefaland report``: paper-style tables and plots from predictions files (see docs/PREDICTIONS.md)."""

from __future__ import annotations

import click

from stefaland.metrics import DEFAULT_MIN_VALID
from stefaland.progress import configure_logging
from stefaland.report.tasks import TASKS


def _split_list(value: str | None) -> list[str] | None:
    """A comma-separated list (models, formats)."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.command()
@click.argument("task", type=click.Choice(sorted(TASKS)))
@click.option("--split", default="all", show_default=True,
              help="Holdout scheme: camels pub|pur, global random|continents, ismn random|europe, wosis random; "
                   "predict (files written by 'stefaland predict'); or all.")
@click.option("--runs", default=None,
              help="Folder (searched recursively), glob, or file of predictions (.nc/.zarr); local or s3:// "
                   "[default: the run root: $STEFALAND_RUNS, else runs: in stefaland.yaml, else ./runs].")
@click.option("--models", default=None, help="Comma-separated models, in table order (default: all found).")
@click.option("--format", "formats", default="md,csv,json,png", show_default=True,
              help="Comma-separated outputs: md, csv, json, png.")
@click.option("--out", default=None,
              help="Output folder, local or s3:// [default: reports/<task>]; refused if it holds anything but an "
                   "earlier report.")
@click.option("--force", is_flag=True, help="Replace an earlier report at --out (never anything else).")
@click.option("--min-valid", default=DEFAULT_MIN_VALID, show_default=True,
              help="Fewest paired (obs, sim) steps for a site to be scored; others count as skipped.")
@click.option("--folds", default=None,
              help="Folds of --split to score: 3, 1,2 or 1-5 (default: every fold, all required); the table "
                   "says which.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def report(task: str, split: str, runs: str | None, models: str | None, formats: str, out: str | None, force: bool,
           min_valid: int, folds: str | None, quiet: bool) -> None:
    """Median-metric tables (as in the paper), per-site metrics, JSON and plots for TASK.

    Each predictions file is checked against its run's manifest.json (sha256) or its own data
    digest first; a mismatch is an error, a file with neither is scored with a warning."""
    from stefaland import settings
    from stefaland.errors import StefaLandError
    from stefaland.report import make_report

    if quiet:
        configure_logging(quiet=True)
    root = settings.resolve("runs", runs)
    where = root.describe() if root.value else "./runs (no run root set)"
    if not runs:
        click.echo(f"looking for predictions in {where}", err=True)
    runs = root.value or "runs"
    try:
        result = make_report(task, split, runs, out or f"reports/{task}", models=_split_list(models),
                         formats=_split_list(formats) or [], min_valid=min_valid, quiet=quiet,
                         folds=folds or None, force=force)
    except StefaLandError as exc:
        if root.value or not str(exc).startswith(runs):
            raise
        raise StefaLandError(f"{exc}; to look in your run root, {settings.how_to_set('runs')}") from None
    click.echo(result.table)
    for url in result.outputs:
        click.echo(url)
