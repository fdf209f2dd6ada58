"""Entry point: the ``stefaland`` group and the registration of every sub-command module."""

from __future__ import annotations

import importlib
import sys
import warnings

import click

from stefaland import __version__
from stefaland.errors import StefaLandError
from stefaland.progress import configure_logging
from stefaland_cli.failures import describe

# (module, attribute) of each command or group; each module defines one click object.
COMMANDS: list[tuple[str, str]] = [
    ("stefaland_cli.data", "data"),
    ("stefaland_cli.catalog", "catalog"),
    ("stefaland_cli.submit", "submit"),
    ("stefaland_cli.jobs", "jobs"),
    ("stefaland_cli.pull", "pull"),
    ("stefaland_cli.report", "report"),
    ("stefaland_cli.finetune", "finetune"),
    ("stefaland_cli.splits", "splits"),
    ("stefaland_cli.pretrain", "pretrain"),
    ("stefaland_cli.embed", "embed"),
    ("stefaland_cli.predict", "predict"),
    ("stefaland_cli.store", "store"),
    ("stefaland_cli.paper", "paper"),
    # -- registered commands: add one line per module above this comment --
]


class StefaLandGroup(click.Group):
    """Loads a sub-command's module only when that command runs (torch, dask and the kubernetes
    client are slow to import, and every torchrun worker starts this CLI), and turns
    :class:`StefaLandError` and the known failures of the environment (:mod:`.failures`: S3
    refusals, unreachable endpoints, unwritable or wrong-kind paths, a bad kubeconfig, memory)
    into one ``error:`` line and exit status 1. ``-v`` keeps the traceback of the latter."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(name for _, name in COMMANDS)})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        for module, attribute in COMMANDS:
            if attribute == name:
                return getattr(importlib.import_module(module), attribute)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        with warnings.catch_warnings():  # click 9 folds protected_args into args
            warnings.simplefilter("ignore", DeprecationWarning)
            argv = [*getattr(ctx, "protected_args", []), *ctx.args]  # emptied while dispatching
        ctx.meta["stefaland.quiet"] = "--quiet" in argv
        try:
            return super().invoke(ctx)
        except StefaLandError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except (click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise  # usage errors and --help: click prints them itself
        except Exception as exc:
            message = describe(exc, argv)
            if message is None or ctx.params.get("verbose"):
                raise  # a bug, or -v: the traceback is the point
            click.echo(f"error: {' '.join(message.split())}", err=True)
            sys.exit(1)


@click.group(cls=StefaLandGroup)
@click.version_option(__version__, prog_name="stefaland")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """StefaLand: build attribute stores, pretrain, finetune, report, submit to Kubernetes."""
    # --quiet of any sub-command keeps warnings and errors only, before the sub-command logs anything
    configure_logging(verbose=verbose, quiet=bool(ctx.meta.get("stefaland.quiet")) and not verbose)


if __name__ == "__main__":  # `python -m stefaland_cli.main` (torchrun launches it this way)
    cli()
