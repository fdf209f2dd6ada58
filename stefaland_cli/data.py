"""``stefaland data synth|build``."""

from __future__ import annotations

from pathlib import Path

import click

from stefaland.assemble import DEFAULT_SHARD_SIZE, build_store
from stefaland.errors import StefaLandError
from stefaland.progress import configure_logging


class _SitesPerShard(click.IntRange):
    """``click.IntRange(1, 100_000)`` whose refusal is the CLI's one ``error:`` line (exit 1), before
    anything is read or allocated (an absurd value once tried to allocate 104 GiB)."""

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            raise StefaLandError(f"--shard-size: {exc.message.rstrip('.')} (sites per shard)") from None


@click.group()
def data() -> None:
    """Generate the virtual world and build harmonised zarr stores from catalogs."""


@data.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--sites", "n_sites", type=int, default=None,
              help="Number of sites [default: 64; with --products 4229, the paper's pretraining locations].")
@click.option("--years", type=int, default=None, help="Years of daily data [default: 6; with --products 3].")
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same files).")
@click.option("--start-year", default=1980, show_default=True)
@click.option("--gridded", is_flag=True, help="Also write gridded sources (forcing, elevation, land cover rasters).")
@click.option("--grid-resolution", default=2.0, show_default=True, help="Degrees, for --gridded.")
@click.option("--products", is_flag=True,
              help="Write miniatures of the paper's Table C1 products in their providers' formats and layout "
                   "(for catalog/global.yaml) instead of the virtual CAMELS world.")
@click.option("--resolution", type=float, default=None,
              help="Degrees of the static product grids, for --products [default: 0.5; daily grids max(2.5, this)].")
@click.option("--force", is_flag=True, help="Replace a virtual world OUT_DIR holds that was made with other settings.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def synth(out_dir: Path, n_sites: int | None, years: int | None, seed: int, start_year: int, gridded: bool,
          grid_resolution: float, products: bool, resolution: float | None, force: bool, quiet: bool) -> None:
    """Write a virtual world in CAMELS file formats plus an intake catalog into OUT_DIR
    (with --products: miniatures of the global pretraining products)."""
    if quiet:
        configure_logging(quiet=True)
    given = {name: value for name, value in (("n_sites", n_sites), ("years", years)) if value is not None}
    if products:  # unset options take the library's defaults, which differ between the two writers
        _synth_products(out_dir, given, seed, start_year, gridded, resolution, force, quiet)
        return
    if resolution is not None:
        raise StefaLandError("--resolution applies to --products; the virtual world's grids use --grid-resolution")
    from stefaland.synth import write_virtual_world

    catalog = write_virtual_world(out_dir, seed=seed, start_year=start_year, quiet=quiet, force=force, **given)
    if gridded:
        from stefaland.synth.world_grids import add_gridded_sources

        add_gridded_sources(catalog, seed=seed, resolution=grid_resolution)
    click.echo(str(catalog))


def _synth_products(out_dir: Path, given: dict[str, int], seed: int, start_year: int, gridded: bool,
                    resolution: float | None, force: bool, quiet: bool) -> None:
    """``synth --products``: write the product miniatures, then say how to build the global catalog from them."""
    import shlex

    from stefaland.synth.products import BUILD_COMMAND, write_products

    if gridded:
        raise StefaLandError("--gridded applies to the virtual world, not to --products (whose products are all gridded)")
    if resolution is not None:
        given = {**given, "resolution": resolution}
    root = write_products(out_dir, seed=seed, start_year=start_year, quiet=quiet, force=force, **given)
    click.echo(str(root))
    click.echo(BUILD_COMMAND.format(root=shlex.quote(str(root))))


@data.command()
@click.option("--catalog", "catalog_url", required=True, help="Intake catalog (path or s3:// URL).")
@click.option("--out", default=None, help="Store path or s3:// URL [default: <catalog name>.zarr in the working directory].")
@click.option("--sources", default=None, help="Comma-separated source names (default: all).")
@click.option("--shard-size", type=_SitesPerShard(1, 100_000), default=DEFAULT_SHARD_SIZE, show_default=True,
              help="Sites per shard (zarr chunk).")
@click.option("--start", default=None, help="First day (YYYY-MM-DD), overrides the catalog.")
@click.option("--end", default=None, help="Last day (YYYY-MM-DD), overrides the catalog.")
@click.option("--force", is_flag=True, help="Rebuild even if the store is complete and up to date.")
@click.option("--scheduler", default=None,
              help="Dask scheduler for gridded sources: 'local' (default when needed) or an address (tcp://host:8786).")
@click.option("--quiet", is_flag=True, help="No progress bars, warnings only.")
def build(catalog_url: str, out: str | None, sources: str | None, shard_size: int, start: str | None,
          end: str | None, force: bool, scheduler: str | None, quiet: bool) -> None:
    """Build one sharded zarr store from every source of an intake catalog (resumes if interrupted)."""
    if quiet:
        configure_logging(quiet=True)
    if out is None:  # never beside the catalog: a shipped catalog lies inside the install tree
        out = str(Path(Path(catalog_url.rstrip("/").rsplit("/", 1)[-1]).with_suffix(".zarr")))
        click.echo(f"store: {out} (in the working directory; --out to choose)", err=True)
    names = [s.strip() for s in sources.split(",") if s.strip()] if sources else None
    summary = build_store(catalog_url, out, shard_size=shard_size, sources=names, start=start, end=end,
                          quiet=quiet, force=force, scheduler=scheduler)
    state = "up to date" if summary.up_to_date else f"{summary.shards_written} of {summary.n_shards} shards written"
    click.echo(f"{summary.store}: {summary.n_sites} sites × {summary.n_time} days ({state})")
    _warn_identical(str(summary.store))


def _warn_identical(store: str) -> None:
    """A warning per variable identical to another in the built store (NLDAS' Tmax == Tmin)."""
    from stefaland.catalog.duplicates import store_warnings
    from stefaland.store import open_store

    for message in store_warnings(open_store(store)):
        click.echo(f"warning: {store}: {message}", err=True)
