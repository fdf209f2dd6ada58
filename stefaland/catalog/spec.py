"""Parse an intake catalog into typed source specifications, refusing what the build cannot use.

Intake knows how to *open* every source; it does not know what a source *means* to a land-surface
model (forcing or target, which unit, which masking group). That meaning lives in each source's
``metadata`` and is checked here once, so that every later step can trust it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import yaml
from intake.catalog.local import YAMLFileCatalog, get_dir

from ..errors import StefaLandError
from ..fileio import read_bytes
from ..units import lookup
from ..yaml_mapping import load_mapping
from .include import add_included_sources
from .template import mask, render_catalog

# intake warns on every parameter expansion that it did not run a shell command; we never ask it to.
warnings.filterwarnings("ignore", message="Shell command not executed", category=UserWarning)

ROLES = ("sites", "dynamic", "target", "static")
GROUPS = ("", "climate", "terrain", "soil", "geology", "vegetation", "human")


@dataclass(frozen=True)
class VariableSpec:
    name: str  # name in the store
    source_var: str  # name in the source
    units: str  # declared unit of the source data
    group: str = ""
    description: str = ""
    never_mask: bool = False
    per_area: str | None = None  # discharge → depth: the site/static column holding the area (km²)
    missing_value: float | None = None  # a sentinel the source uses for "no value" (becomes NaN)
    on_invalid: str = "error"  # physically impossible values (negative rain, area <= 0): error | nan
    scale: float | None = None  # products that store scaled integers (GLHYMPS ×100, MODIS NDVI ×1e4): value × scale


@dataclass(frozen=True)
class SourceSpec:
    name: str
    role: str
    variables: tuple[VariableSpec, ...] = ()
    site_id: str | None = None  # None: the driver's own id column (CAMELS: gauge_id), else "site"
    columns: dict[str, str] = field(default_factory=dict)  # sites role: store column → source column
    gridded: dict[str, Any] | None = None
    grid_variables: tuple[str, ...] = ()  # gridded/vector: the raster variables or polygon fields to extract (before class expansion)
    vector: dict[str, Any] | None = None  # polygon product: parsed metadata.vector (method, categorical, classes, presence, outside)
    basins: dict[str, Any] | None = None  # sites role: {urlpath, id_column} of basin polygons
    description: str = ""
    driver: str = ""


@dataclass
class CatalogSpec:
    url: str
    sha256: str
    dataset: str
    sites_source: str
    start: str | None
    end: str | None
    sources: dict[str, SourceSpec]
    catalog: Any  # the intake catalog, to open sources with
    default_sources: list[str] = field(default_factory=list)  # used when the user picks none
    unset: dict[str, str] = field(default_factory=dict)  # source → environment variable its args need but is unset
    masks: dict[str, str] = field(default_factory=dict)  # environment value in a path → env(NAME)

    def mask(self, text: str) -> str:
        """``text`` (a path or URL) as it may be recorded or shown: environment values read ``env(NAME)``."""
        return mask(text, self.masks)

    def by_role(self, role: str) -> list[SourceSpec]:
        return [s for s in self.sources.values() if s.role == role]

    def refuse_unset(self, names: list[str]) -> None:
        """Name the first unset environment variable these sources need, before any work starts."""
        for name in names:
            if name in self.unset:
                raise StefaLandError(
                    f"catalog {self.url} source {name}: environment variable {self.unset[name]} is not set "
                    f"(its paths depend on it); set it, e.g. export {self.unset[name]}=/path/or/s3://prefix"
                )

    def open(self, name: str) -> Any:
        self.refuse_unset([name])
        return self.catalog[name]

    def select(self, names: list[str] | None) -> list[SourceSpec]:
        """The data sources to build (by name, else the catalog's defaults, else all); no clashes."""
        names = names or self.default_sources
        unknown = [n for n in names if n not in self.sources]
        if unknown:
            raise StefaLandError(f"catalog {self.url}: no source named {unknown[0]} (sources: {', '.join(self.sources)})")
        chosen = [s for s in self.sources.values() if s.role != "sites" and (not names or s.name in names)]
        seen: dict[tuple[str, str], str] = {}
        for source in chosen:
            for variable in source.variables:
                key = (source.role, variable.name)
                if key in seen:
                    raise StefaLandError(
                        f"catalog {self.url}: variable {variable.name} comes from both {seen[key]} and "
                        f"{source.name}; choose one with --sources"
                    )
                seen[key] = source.name
        return chosen


def _parse_yaml(url: str, raw: bytes) -> dict:
    missing = "no 'sources:' mapping at the top level"
    document = load_mapping(raw, f"catalog {url}", missing)
    if not isinstance(document.get("sources"), dict):
        raise StefaLandError(f"catalog {url}: {missing}")
    return document


def _variable(source: str, name: str, spec: Any) -> VariableSpec:
    where = f"catalog source {source} variable {name}"
    if not isinstance(spec, dict) or "units" not in spec:
        raise StefaLandError(f"{where}: needs a 'units' entry")
    lookup(str(spec["units"]), where)
    group = str(spec.get("group", "") or "")
    if group not in GROUPS:
        raise StefaLandError(f"{where}: unknown group {group!r} (use one of {', '.join(g for g in GROUPS if g)})")
    on_invalid = str(spec.get("on_invalid", "error"))
    if on_invalid not in ("error", "nan"):
        raise StefaLandError(f"{where}: on_invalid must be 'error' or 'nan' (got {on_invalid!r})")
    scale = spec.get("scale")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale):
        raise StefaLandError(f"{where}: scale must be a non-zero number (got {scale!r})")
    missing_value = spec.get("missing_value")
    if missing_value is not None and (isinstance(missing_value, bool) or not isinstance(missing_value, (int, float))):
        raise StefaLandError(f"{where}: missing_value must be a number (got {missing_value!r})")
    return VariableSpec(
        name=name,
        source_var=str(spec.get("from", name)),
        units=str(spec["units"]),
        group=group,
        description=str(spec.get("description", "")),
        never_mask=bool(spec.get("never_mask", False)),
        per_area=spec.get("per_area"),
        missing_value=None if missing_value is None else float(missing_value),
        on_invalid=on_invalid,
        scale=None if scale is None else float(scale),
    )


def _source(name: str, entry: dict) -> SourceSpec:
    metadata = entry.get("metadata") or {}
    role = metadata.get("role")
    if role not in ROLES:
        raise StefaLandError(f"catalog source {name}: metadata.role must be one of {', '.join(ROLES)} (got {role!r})")
    variables = metadata.get("variables") or {}
    if role != "sites" and not variables:
        raise StefaLandError(f"catalog source {name}: metadata.variables is empty")
    parsed = tuple(_variable(name, v, s) for v, s in variables.items())
    gridded = metadata.get("gridded")
    vector = None
    grid_variables: tuple[str, ...] = ()
    classes = None
    if gridded is not None and "vector" in metadata:
        raise StefaLandError(f"catalog source {name}: metadata has both gridded and vector; a source is one or the other")
    patch = None
    if gridded is not None:
        from ..gridded.extract import gridded_options, source_patch

        _, classes = gridded_options(gridded, name)
        patch = source_patch(gridded, name)
        grid_variables = tuple(v.source_var for v in parsed)
    elif "vector" in metadata:
        from ..gridded.vector import vector_options

        if role != "static":
            raise StefaLandError(f"catalog source {name}: metadata.vector gives static values; its role must be static (got {role})")
        vector = vector_options(metadata["vector"], name)
        classes = vector["classes"]
        grid_variables = tuple(v.source_var for v in parsed)
    if classes is not None:  # one store variable per class: the fraction of the site it covers
        parsed = tuple(
            replace(v, name=f"{v.name}_{label}", source_var=f"{v.source_var}_{label}", units="fraction",
                    description=f"{v.description} ({label} fraction)".strip())
            for v in parsed for label in classes.values()
        )
    elif patch is not None:  # one store variable per pixel of the patch (stefaland.gridded.patches)
        from ..gridded.patches import patch_names

        parsed = tuple(
            replace(v, name=store, source_var=raw, units="1" if patch.recode is not None else v.units,
                    description=f"{v.description} (patch pixel {store[-6:]})".strip())
            for v in parsed for store, raw in zip(patch_names(v.name, patch.size), patch_names(v.source_var, patch.size))
        )
    elif vector is not None and vector["presence"]:  # the share of the site the polygons cover
        parsed = tuple(replace(v, units="fraction") for v in parsed)
    return SourceSpec(
        name=name,
        role=role,
        variables=parsed,
        site_id=str(metadata["site_id"]) if metadata.get("site_id") else None,
        columns=dict(metadata.get("columns") or {}),
        gridded=gridded,
        grid_variables=grid_variables,
        vector=vector,
        basins=metadata.get("basins"),
        description=str(entry.get("description", "")),
        driver=str(entry.get("driver", "")),
    )


class _ResolvedCatalog(YAMLFileCatalog):
    """An intake catalog built from our already-resolved document: intake never reads the raw file,
    so its Jinja rendering only ever sees plain strings (see :mod:`.template`)."""

    def __init__(self, url: str, text: str) -> None:
        self._resolved_text: str | None = text
        super().__init__(url, autoreload=False)

    def _load(self, reload: bool = False) -> None:
        if getattr(self, "_resolved_text", None) is None:
            return
        self._dir = get_dir(self.path)
        text, self._resolved_text = self._resolved_text, None
        self.parse(text)


def _settings_bytes(settings: dict[str, str]) -> bytes:
    """``env(NAME, literal)`` values in the digest (none: the digest of the bytes alone, as before)."""
    return json.dumps(sorted(settings.items())).encode() if settings else b""


def load_catalog(url: str) -> CatalogSpec:
    """Read and check a catalog (local path or URL); the intake catalog rides along to open sources."""
    url = str(url)
    raw = read_bytes(url)
    rendered = render_catalog(url, _parse_yaml(url, raw))
    document = rendered.document
    included = add_included_sources(url, rendered)
    top = (document.get("metadata") or {}).get("stefaland") or {}
    sources = {name: _source(name, entry or {}) for name, entry in document["sources"].items()}
    sites = top.get("sites") or next((s.name for s in sources.values() if s.role == "sites"), None)
    if sites is None or sites not in sources or sources[sites].role != "sites":
        raise StefaLandError(f"catalog {url}: needs one source with metadata.role: sites (named by metadata.stefaland.sites)")
    defaults = [str(n) for n in top.get("default_sources") or []]
    unknown = [n for n in defaults if n not in sources]
    if unknown:
        raise StefaLandError(f"catalog {url}: default_sources names {unknown[0]}, which is not a source")
    try:
        catalog = _ResolvedCatalog(url, yaml.safe_dump(document, sort_keys=False))
    except Exception as exc:  # intake wraps many parse problems; keep the user's view one line
        raise StefaLandError(f"catalog {url}: intake cannot open it: {exc}") from exc
    return CatalogSpec(
        url=url,
        sha256=hashlib.sha256(raw + included.encode() + _settings_bytes(rendered.settings)).hexdigest(),
        dataset=str(top.get("name", "")),
        sites_source=sites,
        start=str(top["start"]) if top.get("start") else None,
        end=str(top["end"]) if top.get("end") else None,
        sources=sources,
        catalog=catalog,
        default_sources=defaults,
        unset=rendered.unset,
        masks=rendered.masks,
    )
