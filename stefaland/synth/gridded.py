"""Gridded versions of virtual-world sources, so the raster path of ``data build`` runs in the demo.

The grids (a daily forcing NetCDF, an elevation zarr, a land-cover GeoTIFF) cover the world's sites
at a coarse resolution — the world spans continents, so a fine grid would be gigabytes — and their
catalog entries are merged into the world's catalog.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from ..gridded.synthetic import gridded_catalog_entries, write_gridded_world
from ..storage import write_bytes_atomic

GRID_FOLDER = "grids"


def add_gridded_sources(catalog_path: Path, seed: int = 0, resolution: float = 2.0) -> Path:
    """Write the grids beside ``catalog_path`` and add their sources to it; return the catalog path."""
    catalog_path = Path(catalog_path)
    world = catalog_path.parent
    document = yaml.safe_load(catalog_path.read_text())
    top = document["metadata"]["stefaland"]
    topo = pd.read_csv(world / "camels_attributes_v2.0" / "camels_topo.txt", sep=";", dtype={"gauge_id": str})
    sites = pd.DataFrame({"site": topo["gauge_id"], "lat": topo["gauge_lat"], "lon": topo["gauge_lon"]})
    grids = write_gridded_world(sites, top["start"], top["end"], seed, world / GRID_FOLDER, resolution=resolution)
    document["sources"].update(gridded_catalog_entries(grids, world))
    write_bytes_atomic(str(catalog_path), yaml.safe_dump(document, sort_keys=False).encode())
    return catalog_path
