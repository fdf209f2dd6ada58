"""``stefaland embed``: export the frozen encoder's per-site embeddings as zarr (docs/EMBEDDINGS.md)."""

from __future__ import annotations

import click


@click.command("embed")
@click.argument("checkpoint")
@click.option("--store", required=True, help="Store path or s3:// URL whose sites are embedded.")
@click.option("--out", default="embeddings.zarr", show_default=True, help="Output zarr (path or s3:// URL).")
@click.option("--window", type=int, default=None, help="Days per encoder window (default: the encoder's max_len).")
@click.option("--start", default=None, help="First day (default: the store's first).")
@click.option("--end", default=None, help="Last day (default: the store's last).")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Sites per forward pass.")
@click.option("--hide", multiple=True, help="Input variable shown to the encoder as missing (repeatable).")
@click.option("--force", is_flag=True, help="Replace embeddings already at --out (never anything else).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def embed(checkpoint: str, store: str, out: str, window: int | None, start: str | None, end: str | None,
          batch_size: int, hide: tuple[str, ...], force: bool, quiet: bool) -> None:
    """Static (site, feature) and per-day (site, time, feature) embeddings of CHECKPOINT's encoder."""
    from stefaland.embed import embed as run_embed

    summary = run_embed(checkpoint, store, out, window, batch_size, start, end, list(hide), quiet, force)
    click.echo(f"embedded {summary.n_sites} sites x {summary.n_time} days (d={summary.d_model}, "
               f"window {summary.window}) -> {summary.out}")
