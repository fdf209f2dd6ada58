"""Gridded sources (global rasters) → site and basin series for ``data build``."""

from .culling import compute_shard, cull_shard
from .extract import METHODS, extract_to_sites, gridded_options, site_weights
from .grid import GridGeometry, normalise_grid
from .polygons import read_basins
from .shards import compute_shards, spatial_order

__all__ = ["METHODS", "GridGeometry", "compute_shard", "compute_shards", "cull_shard", "extract_to_sites", "gridded_options",
           "normalise_grid", "read_basins", "site_weights", "spatial_order"]
