"""Former home of the gridded virtual world, now :mod:`stefaland.synth.world_grids`.

Kept so that ``stefaland.gridded.synthetic.write_gridded_world``, as docs/GRIDDED.md named it before
issue 16, keeps importing; new code imports ``stefaland.synth.world_grids``.
"""

from ..synth.world_grids import (
    LANDCOVER_CLASSES,
    LANDCOVER_NODATA,
    MAX_CELLS,
    GriddedWorld,
    basin_squares,
    grid_axes,
    gridded_catalog_entries,
    write_basins,
    write_gridded_world,
)

__all__ = ["LANDCOVER_CLASSES", "LANDCOVER_NODATA", "MAX_CELLS", "GriddedWorld", "basin_squares", "grid_axes",
           "gridded_catalog_entries", "write_basins", "write_gridded_world"]
