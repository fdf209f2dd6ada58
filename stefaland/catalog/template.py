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

What comes from the environment stays out of what StefaLand shows and records:

* ``env()`` — and a parameter whose default is ``env(...)`` — may appear only where data is read
  from: a source's ``args`` (paths and driver parameters) and ``metadata.basins`` (the polygons'
  path). Descriptive metadata (descriptions, units, variable specs) is shown by ``catalog show`` and
  written into the store, so there it is refused, naming the file, source and field.
* A variable named like a credential (``*SECRET*``, ``*PASSWORD*``, ``*TOKEN*``, ``*_KEY``,
  ``*KEY_ID``…) is refused wherever ``env()`` names it: credentials reach s3fs/botocore through the
  standard AWS variables or profile, never through a catalog.
* A value substituted from the environment into a path is remembered (``masks``), so the
  input-fingerprint record holds ``env(NAME)/…`` instead of the value.
* Sources may name only local paths and the object stores listed in ``PROTOCOLS``: no ``http(s)://``
  (``catalog validate`` would send a request wherever a shared catalog points, query string and all),
  no ``user:password@`` in a URL, no GDAL ``/vsi…/`` paths. Error messages name the field and the
  protocol, never the value.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
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
# fsspec protocols a source may name: local files and object storage; the caching and archive
# wrappers only ever chain onto one of these (every ``::`` segment is checked).
PROTOCOLS = frozenset({"file", "local", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory",
                       "simplecache", "filecache", "blockcache", "zip", "tar"})
_CREDENTIAL = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE|COOKIE|SESSION|CONNECTION_STRING|APIKEY"
                         r"|(^|_)(KEY|KEY_ID|PAT|AUTH|SAS|PASS|PWD)(_|$)", re.IGNORECASE)
_USERINFO = re.compile(r"^[^/]*://[^/@]*@")
_ENV_PLACES = "args (paths and driver parameters) and metadata.basins"


@dataclass
class Rendered:
    """The catalog with every template resolved; ``unset`` maps source → unset environment variable."""

    document: dict[str, Any]
    unset: dict[str, str] = field(default_factory=dict)
    # Values of ``env(NAME, literal)`` parameters, which the catalog's bytes do not fix: they join the
    # catalog's digest, so a store built with another surface layer is not "up to date".
    settings: dict[str, str] = field(default_factory=dict)
    # Environment values substituted into paths → ``env(NAME)``: what records and displays show instead.
    masks: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Value:
    value: Any
    unset_env: str | None = None  # the environment variable that was empty, if this came from one
    setting: bool = False  # from ``env(NAME, literal)``: the environment or the catalog's fallback
    env: str | None = None  # the variable the default names (set or not): such a value stays out of metadata
    from_env: bool = False  # the value really came from the environment (not a literal fallback): masked


def names_credential(variable: str) -> bool:
    """Whether an environment variable's name says it holds a credential (a key, secret, token, ...)."""
    return _CREDENTIAL.search(variable) is not None


def refuse_credential(variable: str, where: str) -> None:
    """A catalog never carries credentials: they would be shown, recorded, or sent where it points."""
    if names_credential(variable):
        raise StefaLandError(
            f"{where}: env({variable}) names a credential; credentials reach s3fs through the standard AWS "
            "variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) or an AWS profile, "
            "never through the catalog"
        )


def refuse_protocol(url: str, where: str) -> None:
    """Local paths and the object stores of ``PROTOCOLS`` only; the message never repeats the value."""
    if url.startswith("/vsi"):
        raise StefaLandError(f"{where}: GDAL virtual file systems (/vsi…/) are not allowed; name a path or an s3:// URL")
    for segment in url.split("::"):
        if segment.startswith("data:"):
            raise StefaLandError(f"{where}: data: URLs are not allowed; name a path or an object-storage URL")
        if "://" not in segment:
            continue
        protocol = segment.split("://", 1)[0]
        if protocol.lower() not in PROTOCOLS:
            shown = protocol if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,15}", protocol) else "?"
            raise StefaLandError(
                f"{where}: protocol {shown}:// is not allowed; a catalog may name local paths, file://, s3://, gs://, "
                "az:// (abfs://) or memory:// (S3-compatible endpoints come from AWS_ENDPOINT_URL_S3)"
            )
        if _USERINFO.match(segment):
            raise StefaLandError(f"{where}: a URL may not carry user:password@; use the standard AWS variables or profile")


def _refuse_protocols(value: Any, where: str) -> None:
    if isinstance(value, str):
        refuse_protocol(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_protocols(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_protocols(item, f"{where}[{index}]")


def _verbatim(label: str) -> Callable[[re.Match[str]], str]:
    """A replacement for ``re.sub`` that inserts ``label`` as it is (no backslash escapes)."""
    return lambda _: label


def mask(text: str, masks: dict[str, str]) -> str:
    """``text`` with each environment value that fills whole path segments replaced by ``env(NAME)``."""
    for value in sorted(masks, key=len, reverse=True):
        core = value.rstrip("/")
        if core:
            text = re.sub(rf"(?<![^/:]){re.escape(core)}(?![^/])", _verbatim(masks[value]), text)
    return text


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
        variable = from_env = None
        if isinstance(default, str):
            if any(m in default for m in _MARKERS):
                raise StefaLandError(f"{at}: a default may not be a template ({default!r})")
            match = _ENV_DEFAULT.match(default)
            if match:
                variable, fallback = match.group(1), match.group(2)
                refuse_credential(variable, f"{at}: default")
                default = os.environ.get(variable, "")
                from_env = bool(default)
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
        values[name] = _Value(value, unset, setting, variable, bool(from_env))
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
    """A substituted value must not become a template; the message names the place, never the value."""
    if isinstance(value, str) and any(m in value for m in _MARKERS):
        raise StefaLandError(f"{where} holds template markup; catalog values may not contain '{{{{', '{{%' or '{{#'")


class _Renderer:
    """Resolves the three documented forms in one string; refuses every other template construct.

    ``env_ok`` is False for descriptive metadata: there neither ``env()`` nor a parameter set from
    the environment may appear. Environment values that land in a path are collected in ``masks``."""

    def __init__(self, context: dict[str, _Value]) -> None:
        self.context = context
        self.unset: str | None = None
        self.masks: dict[str, str] = {}
        self._found: dict[str, str] = {}  # environment values substituted into the string being rendered

    def render(self, text: str, where: str, env_ok: bool = True) -> str:
        if not any(m in text for m in _MARKERS):
            return text
        try:
            tree = _PARSER.parse(text)
        except TemplateSyntaxError as exc:
            raise StefaLandError(f"{where}: template syntax error ({exc.message}) in {text[:80]!r}") from None
        pieces: list[str] = []
        self._found = {}
        for statement in tree.body:
            if not isinstance(statement, nodes.Output):
                raise StefaLandError(
                    f"{where}: template statement {{% {_WHAT.get(type(statement).__name__, type(statement).__name__.lower())} %}} "
                    f"is not allowed; "
                    f"a catalog may only substitute {ALLOWED}"
                )
            for node in statement.nodes:
                pieces.append(self._piece(node, text, where, env_ok))
        rendered = "".join(pieces)
        _refuse_template_value(rendered, f"{where}: the substituted value")
        if "/" in rendered:  # a path: its environment parts are masked in records
            self.masks.update(self._found)
        return rendered

    def _piece(self, node: nodes.Node, text: str, where: str, env_ok: bool) -> str:
        if isinstance(node, nodes.TemplateData):
            return node.data
        if isinstance(node, nodes.Name) and node.ctx == "load":
            return self._parameter(node.name, where, env_ok)
        if (isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "env"
                and len(node.args) == 1 and isinstance(node.args[0], nodes.Const)
                and isinstance(node.args[0].value, str) and not node.kwargs
                and node.dyn_args is None and node.dyn_kwargs is None):
            return self._environment(node.args[0].value, where, env_ok)
        raise StefaLandError(
            f"{where}: template {text[:80]!r} uses {_WHAT.get(type(node).__name__, type(node).__name__.lower())}; "
            f"a catalog may only substitute {ALLOWED}"
        )

    def _parameter(self, name: str, where: str, env_ok: bool) -> str:
        if name not in self.context:
            raise StefaLandError(
                f"{where}: {{{{ {name} }}}} names no catalog parameter "
                f"(parameters: {', '.join(sorted(k for k in self.context if k != 'CATALOG_DIR')) or 'none'})"
            )
        value = self.context[name]
        if value.env and not env_ok:
            _refuse_in_metadata(where, f"{{{{ {name} }}}} (set from env({value.env}))")
        if value.unset_env and self.unset is None:
            self.unset = value.unset_env
        text = "" if value.value is None else str(value.value)
        if value.from_env and text:
            self._found[text] = f"env({value.env})"
        return text

    def _environment(self, variable: str, where: str, env_ok: bool) -> str:
        refuse_credential(variable, where)
        if not env_ok:
            _refuse_in_metadata(where, f"{{{{ env('{variable}') }}}}")
        value = os.environ.get(variable, "")
        _refuse_template_value(value, f"{where}: environment variable {variable}")
        if not value and self.unset is None:
            self.unset = variable
        if value:
            self._found[value] = f"env({variable})"
        return value


def _refuse_in_metadata(where: str, what: str) -> None:
    """Descriptive metadata is displayed and stored: an environment value there would leak."""
    raise StefaLandError(
        f"{where}: {what} is not allowed here; values from the environment may appear only in {_ENV_PLACES}, "
        "never in descriptive metadata (it is shown by catalog show and written into the store)"
    )


def _walk(value: Any, renderer: _Renderer, where: str, env_ok: bool = True) -> Any:
    if isinstance(value, str):
        return renderer.render(value, where, env_ok)
    if isinstance(value, dict):
        return {k: _walk(v, renderer, f"{where}.{k}", env_ok) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, renderer, f"{where}[{i}]", env_ok) for i, v in enumerate(value)]
    return value


def _metadata(metadata: Any, renderer: _Renderer, where: str) -> Any:
    """A source's metadata resolved: ``basins`` (a path) like args, everything else without the environment."""
    if not isinstance(metadata, dict):
        return _walk(metadata, renderer, where, env_ok=False)
    resolved = {}
    for key, value in metadata.items():
        resolved[key] = _walk(value, renderer, f"{where}.{key}", env_ok=key == "basins")
    if isinstance(resolved.get("basins"), dict):
        _refuse_protocols(resolved["basins"], f"{where}.basins")
    return resolved


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
    sources = document.get("sources")
    if not isinstance(sources, dict):
        raise StefaLandError(f"{where}: no 'sources:' mapping at the top level")
    for name, entry in sources.items():
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
        _refuse_protocols(resolved, f"{at} args")  # before the endpoint from AWS_ENDPOINT_URL joins them
        if uses_dir and remote and "storage_options" not in resolved:
            from ..fileio import storage_options_for

            options = storage_options_for(url)
            if options:
                resolved["storage_options"] = options
        entry["args"] = resolved
        if entry.get("metadata") is not None:
            entry["metadata"] = _metadata(entry["metadata"], renderer, f"{at} metadata")
        if renderer.unset:
            rendered.unset[name] = renderer.unset
        rendered.masks.update(renderer.masks)
    return rendered
