"""``stefaland predict``: a finetuned run applied to the sites of a catalog (gauged or not)."""

from __future__ import annotations

import click


@click.command("predict")
@click.argument("run")
@click.option("--catalog", required=True, help="Intake catalog of the sites to predict (path or s3:// URL).")
@click.option("--sources", default=None,
              help="Comma-separated catalog sources to build the inputs from (default: the catalog's, as in "
                   "'data build'); e.g. camels_sites,nldas_forcing,camels_attributes for NLDAS-only data.")
@click.option("--sites", default="all", show_default=True, help="File of site ids (one a line), or 'all'.")
@click.option("--start", default=None, help="First day (default: the catalog's).")
@click.option("--end", default=None, help="Last day (default: the catalog's).")
@click.option("--out", default=None, help="Predictions file .nc/.zarr, local or s3:// (default: RUN/predict/predictions.nc).")
@click.option("--training-store", default=None, help="Only for runs without run.json: the store they were trained on.")
@click.option("--with-obs", is_flag=True, help="Copy the catalog's observations into 'obs' (default: NaN).")
@click.option("--force", is_flag=True, help="Replace predictions already at --out (never anything else).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def predict(run: str, catalog: str, sources: str | None, sites: str, start: str | None, end: str | None, out: str | None,
            training_store: str | None, with_obs: bool, force: bool, quiet: bool) -> None:
    """Predict with every fold model of RUN (ensemble mean as 'sim', 'spread' = their std)."""
    from stefaland.predict import predict_run

    names = [s.strip() for s in sources.split(",") if s.strip()] if sources else None
    summary = predict_run(run, catalog, out, sites, start, end, training_store, with_obs, quiet=quiet, force=force,
                          sources=names)
    click.echo(f"predicted {summary.n_sites} sites x {summary.n_time} days with {len(summary.members)} model(s) "
               f"-> {summary.out}")
    if summary.hbv_out:
        click.echo(f"HBV fluxes, states and parameters -> {summary.hbv_out}")
