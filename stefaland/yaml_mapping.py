"""A YAML document that must be a mapping (a catalog, a run config), with one-line errors.

Catalogs, pretraining, finetuning and Kubernetes run configs all start the same way: parse YAML,
and say in one line where it went wrong — file, line and column for a syntax error (a raw
``yaml.YAMLError`` prints over several lines), and what was expected when the top level is not a
mapping. An empty document is an empty mapping.

YAML aliases (``*name``) share one node, so a few hundred bytes of nested aliases (a "billion
laughs" document) parse instantly yet stand for millions of values; every later step that walks the
document (templating, validation, dumping it for intake) expands them, and a catalog's metadata ran
for minutes at 1.5 GB. The document is therefore composed first and its expanded size counted on the
node graph (each shared node once, so the count itself is cheap) before anything is constructed:
aliases may add at most ``ALIAS_LIMIT`` values, and an alias that contains itself is refused.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import StefaLandError

ALIAS_LIMIT = 100_000  # values that aliases may add; real catalogs and configs add a few dozen


class _AliasBomb(Exception):
    """Raised while counting; ``reason`` completes the one-line error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _expanded_size(root: yaml.Node) -> int:
    """Nodes in the document with every alias written out, counting each shared node's size once."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _AliasBomb("an alias refers to a node that contains it (a recursive document)")
        active.add(key)
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1
        active.discard(key)
        sizes[key] = total
        return total

    expanded = size(root)
    if expanded - len(sizes) > ALIAS_LIMIT:
        raise _AliasBomb(f"its aliases (*name) expand {len(sizes):,} written values to {expanded:,}, "
                         f"more than the {ALIAS_LIMIT:,} extra allowed (an alias bomb?)")
    return expanded


def _parse(text: str) -> Any:
    """Compose, check the alias expansion, then construct — never construct an unchecked graph."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_mapping(raw: bytes | str, where: str, not_a_mapping: str) -> dict[str, Any]:
    """``raw`` parsed; ``where`` names the document in errors, ``not_a_mapping`` says what it should hold."""
    try:
        document = _parse(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise StefaLandError(f"{where}{at}: YAML error: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise StefaLandError(f"{where}: YAML error: {' '.join(str(exc).split())}") from None
    except _AliasBomb as exc:
        raise StefaLandError(f"{where}: refused: {exc.reason}") from None
    except RecursionError:
        raise StefaLandError(f"{where}: refused: nested too deeply to be a catalog or config") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise StefaLandError(f"{where}: {not_a_mapping}")
    return document
