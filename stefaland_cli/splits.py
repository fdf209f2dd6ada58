"""``stefaland splits``: make holdout split files (the library does the work)."""

from __future__ import annotations

from collections.abc import Callable

import click

from stefaland.splits import DEFAULT_SEED, check_split_out, make_split, splittable, write_split


class RegisteredChoice(click.Choice):
    """A choice among the holdout registry's names as they are when the command runs, so a scheme
    registered after this module was imported (an installed plug-in, a test) is accepted too."""

    def __init__(self, names: Callable[[], list[str]]) -> None:
        self.names = names
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self.names())


def _tasks() -> list[str]:
    return sorted(splittable())


def _schemes() -> list[str]:
    return sorted({scheme for schemes in splittable().values() for scheme in schemes})


@click.group("splits")
def splits() -> None:
    """Holdout splits (PUB, PUR, random k-fold, continental) as small CSV files."""


@splits.command("make")
@click.option("--task", required=True, type=RegisteredChoice(_tasks),
              help="camels (pub|pur), global (random|continents), ismn (random|europe), wosis (random).")
@click.option("--scheme", required=True, type=RegisteredChoice(_schemes), help="Holdout scheme.")
@click.option("--sites", "sites", required=True, multiple=True,
              help="Site table (CSV/TXT, glob allowed), CAMELS attribute folder or zarr store; "
                   "repeat to combine tables by site id.")
@click.option("--out", required=True,
              help="Split file to write (local path or s3://); an existing file is refused unless it is a split "
                   "file and --force is given.")
@click.option("--force", is_flag=True, help="Replace an existing split file at --out (never any other file).")
@click.option("--seed", default=DEFAULT_SEED, show_default=True, type=int)
@click.option("--folds", type=int, default=None, help="Number of random folds (task default).")
@click.option("--basins", default=None,
              help="Site list to restrict to, or 'all' (CAMELS default: 531_basin_list.txt "
                   "beside the site table).")
@click.option("--from-mhpi", "from_mhpi", default=None,
              help="Import MHPI's published PUB folds: PUBsplitLst.txt (JSON list of lists of gauge ids) "
                   "or a huc,gage,LAT,LONG,PUB_ID CSV.")
@click.option("--id-column", default=None, help="Site id column, if not a usual name.")
def make(task: str, scheme: str, sites: tuple[str, ...], out: str, force: bool, seed: int, folds: int | None,
         basins: str | None, from_mhpi: str | None, id_column: str | None) -> None:
    """Assign every site one fold and write SITE,FOLD with a JSON header line."""
    check_split_out(out, force)  # before reading any table: a user's file at --out is refused at once
    split = make_split(task, scheme, list(sites), seed=seed, folds=folds, basins=basins,
                       from_mhpi=from_mhpi, id_column=id_column)
    write_split(split, out, force)
    sizes = split.folds.value_counts().sort_index()
    summary = " ".join(f"{split.fold_names.get(int(k), 'not held out')}={v}" for k, v in sizes.items())
    click.echo(f"{out}: {len(split.folds)} sites, {task}/{scheme}: {summary}")
