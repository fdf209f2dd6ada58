"""``stefaland catalog list|show|validate``."""

from __future__ import annotations

import click
from rich.table import Table

from stefaland.catalog import load_catalog
from stefaland.catalog.inspect import source_rows, validate, variable_rows
from stefaland.errors import StefaLandError
from stefaland.progress import console

_console = console()  # not a terminal (a log, a pipe): wide, so no column is cut


def _table(title: str, headers: tuple[str, ...], rows: list[tuple]) -> None:
    table = Table(title=title)
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*map(str, row))
    _console.print(table)


@click.group()
def catalog() -> None:
    """Inspect and check intake catalogs."""


@catalog.command("list")
@click.argument("catalog_url")
def list_sources(catalog_url: str) -> None:
    """List the sources of CATALOG with their role and variables."""
    spec = load_catalog(catalog_url)
    _table(f"{catalog_url} ({spec.dataset or 'unnamed'})", ("source", "role", "driver", "variables"), source_rows(spec))


@catalog.command()
@click.argument("catalog_url")
@click.option("--source", default=None, help="Only this source.")
def show(catalog_url: str, source: str | None) -> None:
    """Show every variable of CATALOG with its units, group and description."""
    spec = load_catalog(catalog_url)
    _table(catalog_url, ("source", "role", "variable", "units", "group", "description"), variable_rows(spec, source))


@catalog.command("validate")
@click.argument("catalog_url")
@click.option("--sources", default=None, help="Comma-separated source names (default: all).")
def validate_command(catalog_url: str, sources: str | None) -> None:
    """Open every source of CATALOG and check it holds the declared variables."""
    names = [s.strip() for s in sources.split(",") if s.strip()] if sources else None
    checks = validate(load_catalog(catalog_url), names)
    for check in checks:
        click.echo(f"{'ok  ' if check.ok else 'FAIL'} {check.source}: {check.message}")
        for warning in check.warnings:
            click.echo(f"warn {check.source}: {warning}")
    failed = [c for c in checks if not c.ok]
    if failed:
        raise StefaLandError(f"{len(failed)} of {len(checks)} sources failed validation "
                             f"({', '.join(c.source for c in failed)}; every one is listed above)")
    click.echo(f"{len(checks)} sources ok" + (f", {sum(len(c.warnings) for c in checks)} warning(s)"
                                               if any(c.warnings for c in checks) else ""))
