"""What ``stefaland catalog list|show|validate`` report about a catalog."""

from __future__ import annotations

from dataclasses import dataclass

from ..build.readers import SourceReader
from ..build.sites import load_sites
from ..errors import StefaLandError
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


def validate(catalog: CatalogSpec, sources: list[str] | None = None, sample_sites: int = 2) -> list[SourceCheck]:
    """Open every (chosen) source and read a few sites: each must open and hold its declared variables."""
    checks: list[SourceCheck] = []
    try:
        sites = load_sites(catalog)
        checks.append(SourceCheck(catalog.sites_source, True, f"{len(sites)} sites"))
    except StefaLandError as exc:
        return [SourceCheck(catalog.sites_source, False, str(exc))]
    chosen = [s for s in catalog.sources.values() if s.role != "sites" and (not sources or s.name in sources)]
    for spec in chosen:
        try:
            reader = SourceReader(catalog, spec, sites)
            available = sorted(reader.site_ids())
            if not available:
                raise StefaLandError(f"source {spec.name}: holds no site")
            reader.read(available[:sample_sites], None)
            checks.append(SourceCheck(spec.name, True, f"{len(available)} sites, {len(spec.variables)} variables"))
        except StefaLandError as exc:
            checks.append(SourceCheck(spec.name, False, str(exc)))
        except Exception as exc:  # noqa: BLE001 - validate reports every failure, it never crashes
            checks.append(SourceCheck(spec.name, False, f"source {spec.name}: {type(exc).__name__}: {exc}"))
    return checks
