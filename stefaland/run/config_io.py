"""A run config read from YAML and validated against its stage's schema, every problem on one line.

Pretraining and finetuning configs (and the copies saved in run folders, and the ones ``submit``
checks before it schedules a pod) all go through here, so a typo reads the same whichever command
found it: ``<file>: unknown key 'train.epochz'``, ``<file>: optim.lr: <why>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import StefaLandError
from ..fileio import read_bytes
from ..yaml_mapping import load_mapping

Config = TypeVar("Config", bound=BaseModel)


def describe_validation_error(error: ValidationError) -> str:
    """Every problem of ``error`` as ``key: why`` (``unknown key 'key'`` for a typo), joined by ``; ``."""
    return "; ".join(_problem(problem) for problem in error.errors())


def _problem(problem: Any) -> str:
    where = ".".join(str(part) for part in problem["loc"])
    if problem["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    context = problem.get("ctx") or {}
    # a validator's ValueError: its own sentence, without pydantic's "Value error, " in front
    message = str(context["error"]) if problem["type"] == "value_error" and "error" in context else problem["msg"]
    return f"{where}: {message}" if where else message


def validate_config(schema: type[Config], values: Mapping[str, Any] | None, source: str) -> Config:
    """``values`` as a ``schema``; StefaLandError ``<source>: <problems>`` when they do not fit."""
    try:
        return schema.model_validate(values or {})
    except ValidationError as exc:
        raise StefaLandError(f"{source}: {describe_validation_error(exc)}") from exc


def parse_config(schema: type[Config], text: bytes | str, source: str, not_a_mapping: str) -> Config:
    """A YAML document (``source`` names it in errors) validated as a ``schema``."""
    return validate_config(schema, load_mapping(text, source, not_a_mapping), source)


def read_config(schema: type[Config], url: str, not_a_mapping: str) -> Config:
    """The YAML file (local path or URL) ``url`` validated as a ``schema``."""
    return parse_config(schema, read_bytes(url), url, not_a_mapping)


def config_yaml(config: BaseModel) -> str:
    """``config`` as the YAML a run folder keeps: every value spelt out, in the schema's order."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
