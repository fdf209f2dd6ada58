"""``stefaland pull RUN [--to DIR]``: download a run's files from object storage and verify them."""

from __future__ import annotations

import posixpath

import click

from stefaland import fileio
from stefaland.errors import StefaLandError
from stefaland.k8s.runs import is_run_id
from stefaland.pull import pull_run
from stefaland_cli.submit import cluster_options


def _run_url(run: str, namespace: str | None, context: str | None) -> str:
    """A run id is looked up in its Job's ``stefaland.io/out``; a URL or folder is used as is.

    Run ids are checked first: after one pull, ``./<run id>`` exists locally and must not be
    mistaken for the run itself on the next pull.
    """
    if "://" not in run and is_run_id(run):
        from stefaland.k8s import client as kube

        return kube.run_out(kube.connect(context, namespace), run)
    if "://" in run or fileio.exists(run):
        return run
    raise StefaLandError(f"{run!r} is neither a run folder/URL nor a run id like pretrain-20260101-120000-1a2b3c")


@click.command("pull")
@click.argument("run")
@click.option("--to", "to", default=None, help="Local folder (default: ./<run name>).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@cluster_options
def pull(run: str, to: str | None, quiet: bool, namespace: str | None, context: str | None) -> None:
    """Download RUN's checkpoints, config and predictions and check sizes/sha256.

    RUN is a run URL (s3://bucket/runs/x) or a run id of a job submitted with `stefaland submit`
    (then --namespace/--context say where to look it up).
    """
    url = _run_url(run, namespace, context)
    result = pull_run(url, to or posixpath.basename(url.rstrip("/")), quiet=quiet)
    how = (f"{result.checksum_verified} by sha256 ({', '.join(result.manifests)})"
           if result.manifests else "all by size only (no manifest.json)")
    if result.manifests and result.size_only:
        how += f", {len(result.size_only)} by size only"
    click.echo(f"pulled {url}: {len(result.downloaded)} downloaded, {len(result.already_present)} already present, "
               f"{result.total_bytes / 1e6:.1f} MB; verified {how}", err=True)
    click.echo(str(result.directory))
