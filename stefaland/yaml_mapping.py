"""A YAML document that must be a mapping (a catalog, a run config), with one-line errors.

Catalogs, pretraining, finetuning and Kubernetes run configs all start the same way: parse YAML,
and say in one line where it went wrong — file, line and column for a syntax error (a raw
``yaml.YAMLError`` prints over several lines), and what was expected when the top level is not a
mapping. An empty document is an empty mapping.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import StefaLandError


def load_mapping(raw: bytes | str, where: str, not_a_mapping: str) -> dict[str, Any]:
    """``raw`` parsed; ``where`` names the document in errors, ``not_a_mapping`` says what it should hold."""
    try:
        document = yaml.safe_load(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise StefaLandError(f"{where}{at}: YAML error: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise StefaLandError(f"{where}: YAML error: {' '.join(str(exc).split())}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise StefaLandError(f"{where}: {not_a_mapping}")
    return document
