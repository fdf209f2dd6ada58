"""``stefaland finetune``: train one model per held-out fold and write its predictions."""

from __future__ import annotations

import click

from stefaland.finetune import FinetuneConfig, config_from_dict, load_config
from stefaland.finetune import finetune as run_finetune
from stefaland.finetune.models import known_models
from stefaland.report.model_card import write_model_card


def with_overrides(config: FinetuneConfig, source: str, model_name: str | None, task: str | None) -> FinetuneConfig:
    """The config with the command line's overrides, validated again as a whole: an override is
    held to the same schema (model names from the registry, one-line errors) as the file."""
    values = config.model_dump(mode="json")
    flags = []
    if model_name:
        values["model"]["name"] = model_name
        flags.append(f"--model {model_name}")
    if task:
        values["task"] = task
        flags.append(f"--task {task}")
    if not flags:
        return config
    return config_from_dict(values, f"{source} with {' '.join(flags)}")


@click.command("finetune")
@click.option("--store", required=True, help="Store path or s3:// URL (from `stefaland data build`).")
@click.option("--config", "config_path", required=True, help="Finetune YAML config (see configs/finetune_*.yaml).")
@click.option("--out", required=True, help="Run folder (path or s3:// URL); writes fold-<k>/predictions.nc.")
@click.option("--task", default=None, help="Task name recorded in the predictions (default: the config's).")
@click.option("--split", required=True, help="Holdout scheme, e.g. pub or pur (store coordinate fold_<split>).")
@click.option("--split-file", default=None, help="Split file to use instead of the store's fold_<split> column.")
@click.option("--fold", default="all", show_default=True,
              help="Folds to train: 'all', one id (3), a list (1,2) or a range (1-5); each is its own run.")
@click.option("--model", "model_name", metavar="NAME", default=None,
              help=f"Model to train (default: the config's model.name); one of {', '.join(known_models())}.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def finetune(store: str, config_path: str, out: str, task: str | None, split: str, split_file: str | None,
             fold: str, model_name: str | None, quiet: bool) -> None:
    """Leave-one-fold-out finetuning; re-running an interrupted run resumes it."""
    config = with_overrides(load_config(config_path), config_path, model_name, task)
    results = run_finetune(store, config, out, split, fold, split_file, quiet)
    if results:  # the other ranks of a torchrun launch train nothing and write nothing
        write_model_card(out)
    for result in results:
        click.echo(f"fold {result.name}: {result.n_train_sites} training / {result.n_test_sites} held-out sites "
                   f"-> {result.predictions}")
