"""``stefaland store verify``: read every chunk of a store and compare it with its integrity record."""

from __future__ import annotations

import click

from stefaland.errors import StefaLandError


@click.group("store")
def store() -> None:
    """Check harmonised stores (see stefaland.store.integrity)."""


@store.command("verify")
@click.argument("url")
@click.option("--all", "show_all", is_flag=True, help="List every problem found, not only the first.")
def verify(url: str, show_all: bool) -> None:
    """Full check of STORE (path or s3:// URL): every chunk's size and checksum, every array's shape.

    Exit status 0 when intact; otherwise one error line naming the first damaged array and shard.
    Opening a store for training only lists it (cheap); this reads every byte.
    """
    from stefaland.store.integrity import verify_store

    summary = verify_store(url)
    if summary.problems:
        if show_all:
            for problem in summary.problems:
                click.echo(f"{summary.url}: {problem}")
        more = f" ({len(summary.problems) - 1} more; --all lists them)" if len(summary.problems) > 1 else ""
        raise StefaLandError(f"{summary.url}: {summary.problems[0]}; the store is damaged{more}")
    click.echo(f"{summary.url}: intact ({summary.arrays} arrays, {summary.chunks} chunks, "
               f"{summary.bytes / 2**20:.1f} MiB checked)")
