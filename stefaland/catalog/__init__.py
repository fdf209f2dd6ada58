"""Intake catalogs as StefaLand reads them: the metadata contract of docs/DESIGN.md §1."""

from .spec import CatalogSpec, SourceSpec, VariableSpec, load_catalog

__all__ = ["CatalogSpec", "SourceSpec", "VariableSpec", "load_catalog"]
