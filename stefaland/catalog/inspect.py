"""What ``stefaland catalog list|show|validate`` report about a catalog."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import StefaLandError
from .duplicates import describe, identical_pairs
from .readers import SourceReader
from .sites import load_catalog_sites
from .spec import CatalogSpec


def source_rows(catalog: CatalogSpec) -> list[tuple[str, str, str, str]]:
    """(name, role, driver, variables) per source, for ``catalog list``."""
    return [
        (s.name, s.role, s.driver, ", ".join(v.name for v in s.variables))
        for s in catalog.sources.values()
    ]


def variable_rows(catalog: CatalogSpec, source: str | None = None) -> list[tuple[str, str, str, str, str, str]]:
    """(source, role, variable, units, group, description) per variable, for ``catalog show``."""
    if source is not None and source not in catalog.sources:
        raise StefaLandError(f"catalog {catalog.url}: no source named {source}")
    chosen = [catalog.sources[source]] if source else list(catalog.sources.values())
    return [(s.name, s.role, v.name, v.units, v.group or "-", v.description) for s in chosen for v in s.variables]


@dataclass
class SourceCheck:
    source: str
    ok: bool
    message: str
    warnings: list[str] = field(default_factory=list)


def _identical(spec, data) -> list[str]:
    """Warnings for variables of a dynamic source read identical to another (NLDAS' Tmax == Tmin)."""
    if spec.role != "dynamic":
        return []
    arrays = {v.name: np.asarray(data[v.source_var].values) for v in spec.variables if v.source_var in data}
    return describe(identical_pairs(arrays))


def validate(catalog: CatalogSpec, sources: list[str] | None = None, sample_sites: int = 2) -> list[SourceCheck]:
    """Open every (chosen) source and read a few sites: each must open and hold its declared variables.

    Every chosen source gets its own check, whatever happened to the others: a name the catalog does
    not have, and every source when the sites source fails, are failed checks too."""
    checks: list[SourceCheck] = []
    unknown = [name for name in sources or [] if name not in catalog.sources]
    try:
        sites = load_catalog_sites(catalog)
        checks.append(SourceCheck(catalog.sites_source, True, f"{len(sites)} sites"))
    except StefaLandError as exc:
        sites = None
        checks.append(SourceCheck(catalog.sites_source, False, str(exc)))
    chosen = [s for s in catalog.sources.values() if s.role != "sites" and (not sources or s.name in sources)]
    checks += [SourceCheck(name, False, f"catalog {catalog.url}: no source named {name} "
                                        f"(sources: {', '.join(catalog.sources)})") for name in unknown]
    for spec in chosen:
        if sites is None:
            checks.append(SourceCheck(spec.name, False, f"source {spec.name}: not checked, the sites source "
                                                        f"{catalog.sites_source} failed"))
            continue
        try:
            reader = SourceReader(catalog, spec, sites)
            available = sorted(reader.site_ids())
            if not available:
                raise StefaLandError(f"source {spec.name}: holds no site")
            data = reader.read(available[:sample_sites], None)
            checks.append(SourceCheck(spec.name, True, f"{len(available)} sites, {len(spec.variables)} variables",
                                      _identical(spec, data)))
        except StefaLandError as exc:
            checks.append(SourceCheck(spec.name, False, str(exc)))
        except Exception as exc:  # noqa: BLE001 - validate reports every failure, it never crashes
            checks.append(SourceCheck(spec.name, False, f"source {spec.name}: {type(exc).__name__}: {exc}"))
    return checks
