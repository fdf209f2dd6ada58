"""Resolve a catalog's templates ourselves, so that a catalog stays data and never becomes code.

Intake renders every string of a source's ``args`` and ``metadata`` with a full Jinja2
environment: ``{{ ''.__class__.__mro__[1].__subclasses__() }}`` or ``{{ cycler.__init__.__globals__
.os.popen('…') }}`` in a ``urlpath`` runs arbitrary Python the moment a source is opened. It also
imports any module a catalog names (``plugins:``, ``cls:``, a dotted ``driver:``).

StefaLand documents exactly three substitutions, and this module performs only those:

* ``{{ name }}`` — a catalog parameter (``metadata.parameters`` or the source's ``parameters``),
  whose default may be a literal, ``env(NAME)`` (a required setting: a path, an archive) or
  ``env(NAME, literal)`` (an optional setting with the catalog's own default, e.g. ISMN's surface
  layer: a user changes it for one build without copying the shipped catalog);
* ``{{ CATALOG_DIR }}`` — the folder (or object-storage prefix) holding the catalog;
* ``{{ env('NAME') }}`` — an environment variable.

Each template is parsed (never evaluated) by a sandboxed Jinja2 environment, and its syntax tree
must hold nothing but those three forms; anything else — attribute or item access, filters,
statements, other calls — is refused in one line naming the source and argument. The resolved
document, holding no template and no parameter, is what intake opens, so intake's own Jinja never
sees a user expression. A value that would become a template again (an environment variable
holding ``{{``) is refused too.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import SandboxedEnvironment

from ..errors import StefaLandError

_MARKERS = ("{{", "{%", "{#")
_ENV_DEFAULT = re.compile(r"^\s*env\(\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?\s*(?:,\s*(.*?)\s*)?\)\s*$")
_CODE_DEFAULT = re.compile(r"^\s*(client_)?(env|shell)\(")
_CATALOG_DRIVERS = {"yaml_file_cat", "yaml_files_cat", "tiled_cat", "intake_remote", "intake_catalog"}
_PARSER = SandboxedEnvironment(autoescape=False)
_WHAT = {"Call": "a function call", "Getattr": "attribute access", "Getitem": "item access", "Filter": "a filter",
         "Test": "a test", "Assign": "set", "AssignBlock": "set"}
ALLOWED = "a catalog parameter, {{ CATALOG_DIR }} or {{ env('NAME') }}"


@dataclass
class Rendered:
    """The catalog with every template resolved; ``unset`` maps source → unset environment variable."""

    document: dict[str, Any]
    unset: dict[str, str] = field(default_factory=dict)
    # Values of ``env(NAME, literal)`` parameters, which the catalog's bytes do not fix: they join the
    # catalog's digest, so a store built with another surface layer is not "up to date".
    settings: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Value:
    value: Any
    unset_env: str | None = None  # the environment variable that was empty, if this came from one
    setting: bool = False  # from ``env(NAME, literal)``: the environment or the catalog's fallback


def catalog_dir(url: str) -> str:
    """The folder or object-storage prefix holding the catalog (what intake calls CATALOG_DIR)."""
    if "://" in url:
        return url.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(url))


def _parameters(where: str, declared: Any) -> dict[str, _Value]:
    """Parameter name → typed value, from literal defaults or ``env(NAME)``; no shell, no code."""
    from intake.catalog.utils import COERCION_RULES, coerce

    if declared is None:
        return {}
    if not isinstance(declared, dict):
        raise StefaLandError(f"{where}: 'parameters' must be a mapping of name → {{type, default}}")
    values: dict[str, _Value] = {}
    for name, spec in declared.items():
        at = f"{where} parameter {name}"
        if not isinstance(spec, dict):
            raise StefaLandError(f"{at}: must be a mapping with type and default")
        kind = str(spec.get("type", "str"))
        if kind not in COERCION_RULES:
            raise StefaLandError(f"{at}: unknown type {kind!r} (use one of {', '.join(COERCION_RULES)})")
        default, unset, setting = spec.get("default"), None, False
        if isinstance(default, str):
            if any(m in default for m in _MARKERS):
                raise StefaLandError(f"{at}: a default may not be a template ({default!r})")
            match = _ENV_DEFAULT.match(default)
            if match:
                variable, fallback = match.group(1), match.group(2)
                default = os.environ.get(variable, "")
                _refuse_template_value(default, f"{at}: environment variable {variable}")
                if fallback is not None:  # optional: unset means the catalog's literal
                    default, setting = default or _literal(fallback), True
                else:
                    unset = None if default else variable
            elif _CODE_DEFAULT.match(default):
                raise StefaLandError(f"{at}: default {default!r} is not allowed; only env(NAME), env(NAME, literal) or a literal value")
        if kind == "bool" and isinstance(default, str) and default.strip():
            default = _boolean(default, at)  # intake's coerce reads "false" as True
        try:
            value = coerce(kind, default) if default is not None else None
        except (ValueError, TypeError, SyntaxError) as exc:
            raise StefaLandError(f"{at}: default {default!r} is not a {kind}: {exc}") from None
        allowed = spec.get("allowed")
        if allowed is not None and value is not None and kind != "mlist" and value not in allowed:
            raise StefaLandError(f"{at}: {value!r} is not one of {allowed}")
        values[name] = _Value(value, unset, setting)
    return values


def _boolean(text: str, where: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise StefaLandError(f"{where}: {text!r} is not a bool (use true or false)")


def _literal(text: str) -> str:
    """The fallback of ``env(NAME, literal)``: quotes stripped, never code or a template."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    if _CODE_DEFAULT.match(text):
        raise StefaLandError(f"env(..., {text!r}): the fallback must be a literal value")
    return text


def _refuse_template_value(value: Any, where: str) -> None:
    if isinstance(value, str) and any(m in value for m in _MARKERS):
        raise StefaLandError(f"{where} holds template markup ({value[:60]!r}); catalog values may not contain '{{{{', '{{%' or '{{#'")


class _Renderer:
    """Resolves the three documented forms in one string; refuses every other template construct."""

    def __init__(self, context: dict[str, _Value]) -> None:
        self.context = context
        self.unset: str | None = None

    def render(self, text: str, where: str) -> str:
        if not any(m in text for m in _MARKERS):
            return text
        try:
            tree = _PARSER.parse(text)
        except TemplateSyntaxError as exc:
            raise StefaLandError(f"{where}: template syntax error ({exc.message}) in {text[:80]!r}") from None
        pieces: list[str] = []
        for statement in tree.body:
            if not isinstance(statement, nodes.Output):
                raise StefaLandError(
                    f"{where}: template statement {{% {_WHAT.get(type(statement).__name__, type(statement).__name__.lower())} %}} "
                    f"is not allowed; "
                    f"a catalog may only substitute {ALLOWED}"
                )
            for node in statement.nodes:
                pieces.append(self._piece(node, text, where))
        rendered = "".join(pieces)
        _refuse_template_value(rendered, f"{where}: the substituted value")
        return rendered

    def _piece(self, node: nodes.Node, text: str, where: str) -> str:
        if isinstance(node, nodes.TemplateData):
            return node.data
        if isinstance(node, nodes.Name) and node.ctx == "load":
            if node.name not in self.context:
                raise StefaLandError(
                    f"{where}: {{{{ {node.name} }}}} names no catalog parameter "
                    f"(parameters: {', '.join(sorted(k for k in self.context if k != 'CATALOG_DIR')) or 'none'})"
                )
            value = self.context[node.name]
            if value.unset_env and self.unset is None:
                self.unset = value.unset_env
            return "" if value.value is None else str(value.value)
        if (isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "env"
                and len(node.args) == 1 and isinstance(node.args[0], nodes.Const)
                and isinstance(node.args[0].value, str) and not node.kwargs
                and node.dyn_args is None and node.dyn_kwargs is None):
            variable = node.args[0].value
            value = os.environ.get(variable, "")
            _refuse_template_value(value, f"{where}: environment variable {variable}")
            if not value and self.unset is None:
                self.unset = variable
            return value
        raise StefaLandError(
            f"{where}: template {text[:80]!r} uses {_WHAT.get(type(node).__name__, type(node).__name__.lower())}; "
            f"a catalog may only substitute {ALLOWED}"
        )


def _walk(value: Any, renderer: _Renderer, where: str) -> Any:
    if isinstance(value, str):
        return renderer.render(value, where)
    if isinstance(value, dict):
        return {k: _walk(v, renderer, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, renderer, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _check_driver(where: str, entry: dict[str, Any]) -> None:
    """Only registered, non-catalog drivers by name: a dotted path or ``cls`` would import code."""
    import intake

    if "cls" in entry:
        raise StefaLandError(f"{where}: 'cls' entries are not allowed (they import Python classes); use 'driver'")
    driver = entry.get("driver")
    if not isinstance(driver, str) or not driver:
        raise StefaLandError(f"{where}: 'driver' must be the name of an installed intake driver")
    if "." in driver or driver in _CATALOG_DRIVERS:
        raise StefaLandError(f"{where}: driver {driver!r} is not allowed; name an installed data driver (csv, zarr, netcdf, stefaland_*)")
    if driver not in intake.registry:
        raise StefaLandError(f"{where}: unknown driver {driver!r} (installed: {', '.join(sorted(intake.registry))})")


def _settings(values: dict[str, _Value], prefix: str = "") -> dict[str, str]:
    return {f"{prefix}{name}": repr(v.value) for name, v in values.items() if v.setting}


def render_catalog(url: str, document: dict[str, Any]) -> Rendered:
    """The catalog ``document`` with templates resolved and parameters removed, ready for intake."""
    where = f"catalog {url}"
    if "plugins" in document:
        raise StefaLandError(f"{where}: 'plugins:' is not allowed (it imports Python modules); drivers come from installed packages")
    document = copy.deepcopy(document)
    metadata = document.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise StefaLandError(f"{where}: 'metadata' must be a mapping")
    shared = _parameters(where, metadata.pop("parameters", None))
    base = {**shared, "CATALOG_DIR": _Value(catalog_dir(url))}
    remote = "://" in url and not url.startswith("file://")
    rendered = Rendered(document, settings=_settings(shared))
    for name, entry in document["sources"].items():
        at = f"{where} source {name}"
        if not isinstance(entry, dict):
            raise StefaLandError(f"{at}: must be a mapping (driver, args, metadata)")
        _check_driver(at, entry)
        own = _parameters(at, entry.pop("parameters", None))
        rendered.settings.update(_settings(own, f"{name}."))
        renderer = _Renderer({**base, **own})
        args = entry.get("args") or {}
        if not isinstance(args, dict):
            raise StefaLandError(f"{at}: 'args' must be a mapping")
        uses_dir = "CATALOG_DIR" in repr(args)
        resolved = _walk(args, renderer, f"{at} args")
        for key, value in list(resolved.items()):  # intake's rule: an arg named like a parameter takes its type
            parameter = own.get(key) or shared.get(key)
            if parameter is not None and isinstance(value, str) and parameter.value is not None:
                from intake.catalog.utils import coerce

                try:
                    resolved[key] = coerce(type(parameter.value).__name__, value)
                except (ValueError, TypeError, SyntaxError, KeyError):
                    pass
        if uses_dir and remote and "storage_options" not in resolved:
            from ..fileio import storage_options_for

            options = storage_options_for(url)
            if options:
                resolved["storage_options"] = options
        entry["args"] = resolved
        if entry.get("metadata") is not None:
            entry["metadata"] = _walk(entry["metadata"], renderer, f"{at} metadata")
        if renderer.unset:
            rendered.unset[name] = renderer.unset
    return rendered
