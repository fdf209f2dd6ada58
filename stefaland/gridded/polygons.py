"""Area-weighted basin means: which cells a basin covers, and by how much.

Coverage fractions come from ``exactextract`` (exact polygon/cell intersection), computed once per
(grid, basin set) and kept in a small cache: every variable and every time step of a source, and
every source on the same grid, reuses them. Cells are weighted by covered fraction × cell area
(a 0.1° cell near the pole is much smaller than one at the equator), so the mean is a true
area-weighted mean on the sphere.
"""

from __future__ import annotations

import io
import logging
from collections import OrderedDict
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import shapely
from exactextract import exact_extract
from exactextract.raster import NumPyRasterSource
from shapely.affinity import translate
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from ..errors import StefaLandError
from ..fileio import is_remote, read_bytes
from ..progress import progress
from .grid import GridGeometry
from .weights import SiteWeights

log = logging.getLogger("stefaland.gridded")

BATCH = 256  # basins per exactextract call: small enough for a live progress bar
WINDOW_CELLS = 20_000_000  # largest zero raster handed to exactextract for one batch (20 MB)
CACHE_SIZE = 8
# a basin must lie inside the grid; the last 0.1 % is float noise along the grid's edge
MIN_INSIDE = 0.999

_cache: OrderedDict[tuple, SiteWeights] = OrderedDict()
cache_stats = {"hits": 0, "misses": 0}


def to_lon180(geometry: BaseGeometry) -> BaseGeometry:
    """Any basin → the same area expressed within -180..180, split at the antimeridian if needed.

    Basins crossing the antimeridian come either with longitudes past 180 (179..181) or as one
    ring jumping from 179 to -179; the latter is recognised by a longitude span over 180°, which
    no river basin has.
    """
    minx, _, maxx, _ = geometry.bounds
    if -180.0 <= minx and maxx <= 180.0 and maxx - minx <= 180.0:
        return geometry  # the usual case: nothing to do
    if maxx - minx > 180.0 and minx >= -180.0 and maxx <= 180.0:
        geometry = shapely.transform(
            geometry, lambda xy: np.column_stack([np.where(xy[:, 0] < 0, xy[:, 0] + 360.0, xy[:, 0]), xy[:, 1]])
        )
    pieces = []
    for shift in (-360.0, 0.0, 360.0):
        piece = geometry.intersection(box(-180.0 - shift, -90.0, 180.0 - shift, 90.0))
        if not piece.is_empty and piece.area > 0:
            pieces.append(translate(piece, xoff=shift))
    if not pieces:
        return geometry
    return shapely.union_all(pieces)


def _cell_area(grid: GridGeometry) -> np.ndarray:
    """Relative area of one cell per latitude row: sin(top) − sin(bottom) (sphere, any radius)."""
    top = np.radians(np.clip(grid.lat + grid.dlat / 2, -90, 90))
    bottom = np.radians(np.clip(grid.lat - grid.dlat / 2, -90, 90))
    return np.sin(top) - np.sin(bottom)


def _window(grid: GridGeometry, bounds: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """Grid index ranges (first/last row, first/last column) of the cells touching ``bounds``."""
    west, south, east, north = bounds
    row0 = int(np.clip(np.floor((south - grid.south) / grid.dlat), 0, grid.lat.size - 1))
    row1 = int(np.clip(np.ceil((north - grid.south) / grid.dlat) - 1, row0, grid.lat.size - 1))
    col0 = int(np.clip(np.floor((west - grid.west) / grid.dlon), 0, grid.lon.size - 1))
    col1 = int(np.clip(np.ceil((east - grid.west) / grid.dlon) - 1, col0, grid.lon.size - 1))
    return row0, row1, col0, col1


def _window_cells(grid: GridGeometry, geometries: list[BaseGeometry], area: np.ndarray
                  ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """exactextract on a zero raster spanning only these basins' cells (a 300 m global grid is far
    too big to allocate whole), translated back to grid rows (south → north) and columns."""
    bounds = np.array([g.bounds for g in geometries])
    row0, row1, col0, col1 = _window(grid, (bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(), bounds[:, 3].max()))
    n_rows, n_cols = row1 - row0 + 1, col1 - col0 + 1
    raster = NumPyRasterSource(
        np.zeros((n_rows, n_cols), dtype=np.uint8),
        grid.west + col0 * grid.dlon, grid.south + row0 * grid.dlat,
        grid.west + (col1 + 1) * grid.dlon, grid.south + (row1 + 1) * grid.dlat,
    )
    frame = gpd.GeoDataFrame(geometry=geometries, crs="EPSG:4326")
    table = exact_extract(raster, frame, ["cell_id", "coverage"], output="pandas")
    cells = []
    for cell_id, coverage in zip(table["cell_id"], table["coverage"]):
        cell_id, coverage = np.asarray(cell_id, dtype=np.int64), np.asarray(coverage, dtype=np.float64)
        raster_row, col = np.divmod(cell_id, n_cols)
        row = row1 - raster_row  # raster rows run north → south, the grid south → north
        keep = coverage > 0
        row, col, coverage = row[keep], col[keep] + col0, coverage[keep]
        cells.append((row, col, coverage * area[row]))
    return cells


def _coverage(grid: GridGeometry, sites: np.ndarray, geometries: list[BaseGeometry], source: str,
              quiet: bool) -> SiteWeights:
    area = _cell_area(grid)
    cells: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    batches = range(0, len(geometries), BATCH)
    for start in progress(batches, f"{source}: basin cell fractions", total=len(batches), quiet=quiet):
        batch = geometries[start:start + BATCH]
        row0, row1, col0, col1 = _window(grid, tuple(np.r_[np.min([g.bounds[:2] for g in batch], axis=0),
                                                           np.max([g.bounds[2:] for g in batch], axis=0)]))
        if (row1 - row0 + 1) * (col1 - col0 + 1) <= WINDOW_CELLS:
            found = _window_cells(grid, batch, area)
        else:  # basins spread over a fine grid: one small window per basin
            found = [_window_cells(grid, [g], area)[0] for g in batch]
        for offset, (row, col, weight) in enumerate(found):
            _refuse_outside(grid, sites[start + offset], batch[offset], weight / area[row], source)
            cells.append((row, col, weight))
    return SiteWeights.from_lists(sites, cells)


def _refuse_outside(grid: GridGeometry, site: str, geometry: BaseGeometry, coverage: np.ndarray, source: str) -> None:
    inside = float(coverage.sum()) * grid.dlat * grid.dlon
    if geometry.area <= 0 or inside < MIN_INSIDE * geometry.area:
        share = 0.0 if geometry.area <= 0 else 100.0 * inside / geometry.area
        raise StefaLandError(
            f"source {source}: basin of site {site} is outside the grid extent (only {share:.1f}% of it lies in "
            f"lat {grid.south:g}..{grid.north:g}, lon {grid.west:g}..{grid.east:g})"
        )


def polygon_weights(grid: GridGeometry, sites: Sequence[str] | np.ndarray, geometries: Sequence[BaseGeometry | None],
                    source: str, quiet: bool = True) -> SiteWeights:
    """Cells and area weights of every basin, from the cache when this grid and basin set were seen."""
    site_ids = np.asarray([str(s) for s in sites], dtype=object)
    polygons: list[BaseGeometry] = []
    for site, geometry in zip(site_ids, geometries):
        if geometry is None or not isinstance(geometry, BaseGeometry) or geometry.is_empty:
            raise StefaLandError(f"source {source}: site {site} has no basin geometry (method polygon needs one)")
        if geometry.geom_type not in ("Polygon", "MultiPolygon"):
            raise StefaLandError(f"source {source}: basin of site {site} is a {geometry.geom_type}, not a polygon")
        polygons.append(geometry)
    normalised = [to_lon180(shapely.make_valid(g) if not g.is_valid else g) for g in polygons]
    key = (grid.signature(), tuple(site_ids), tuple(shapely.to_wkb(g) for g in normalised))
    if key in _cache:
        cache_stats["hits"] += 1
        _cache.move_to_end(key)
        return _cache[key]
    cache_stats["misses"] += 1
    log.info("source %s: computing cell fractions of %d basins", source, len(site_ids))
    weights = _coverage(grid, site_ids, normalised, source, quiet)
    _cache[key] = weights
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return weights


def read_basins(url: str, id_column: str, source: str = "basins") -> gpd.GeoSeries:
    """Basin polygons (GeoJSON, GeoPackage, shapefile; local or object storage) in EPSG:4326, by site id."""
    import pyogrio

    pyogrio.set_gdal_config_options({"SHAPE_RESTORE_SHX": True})  # a shapefile without .shx is still readable
    try:
        frame = gpd.read_file(io.BytesIO(read_bytes(url))) if is_remote(url) else gpd.read_file(url)
    except Exception as exc:  # pyogrio raises many types; the user needs the file and the reason
        raise StefaLandError(f"source {source}: cannot read basin polygons from {url}: {exc}") from exc
    if id_column not in frame.columns:
        raise StefaLandError(
            f"source {source}: basin file {url} has no id column {id_column!r} (columns: {', '.join(map(str, frame.columns[:8]))})"
        )
    if frame.crs is None:
        log.warning("basin file %s declares no CRS; assuming EPSG:4326", url)
        frame = frame.set_crs("EPSG:4326")
    frame = frame.to_crs("EPSG:4326")
    ids = frame[id_column].astype(str).str.strip()
    empty = frame.geometry.isna() | frame.geometry.is_empty
    if empty.any():
        raise StefaLandError(
            f"source {source}: basin file {url} has no geometry for site {ids[empty].iloc[0]} "
            "(for a shapefile: is its .shx index damaged? delete it and GDAL rebuilds it)"
        )
    if ids.duplicated().any():
        raise StefaLandError(f"source {source}: basin file {url} holds site {ids[ids.duplicated()].iloc[0]} twice")
    return gpd.GeoSeries(frame.geometry.to_numpy(), index=ids.to_numpy(dtype=object), crs="EPSG:4326")
