"""Polygon miniatures: GLiM lithology (GeoPackage), GLHYMPS hydrogeology and IFL 2016 (shapefiles).

The land is cut into 2.5° tiles (clipped to the continents), and each tile takes a lithology from
its terrain and climate: crystalline and volcanic rock in the mountains, ice where frozen, and
elsewhere mostly carbonate (``sc``), unconsolidated and siliciclastic sediments. GLHYMPS, which
the real product derives from GLiM, takes its permeability and porosity from the same classes and
is projected to EPSG:6933 like the original. Intact forest covers large blobs of the tropical and
boreal forest tiles.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import box

from .products_io import staged
from .products_world import CONTINENTS, Grid, Planet, normals

TILE_DEG = 2.5
GLIM_FILE, GLHYMPS_FILE, IFL_FILE = "GLiM/LiMW_GIS_2015.gpkg", "GLHYMPS/GLHYMPS.shp", "IFL_2016/ifl_2016.shp"
LOWLAND = {"sc": 0.32, "su": 0.22, "ss": 0.16, "sm": 0.08, "mt": 0.07, "pa": 0.04, "pb": 0.02, "py": 0.03,
           "ev": 0.02, "vb": 0.02, "pi": 0.01, "wb": 0.005, "nd": 0.005}
MOUNTAIN = {"mt": 0.3, "pa": 0.2, "sc": 0.2, "vi": 0.1, "va": 0.1, "ss": 0.1}
NOT_AT_SITES = ("wb", "nd")  # water bodies and no-data polygons never hold a site
# GLHYMPS by GLiM class: (log10 permeability ×100, porosity %)
HYDRO = {"su": (-1250, 28), "ss": (-1400, 16), "sm": (-1350, 18), "sc": (-1150, 12), "py": (-1500, 8),
         "ev": (-1300, 10), "mt": (-1550, 4), "pa": (-1550, 3), "pb": (-1500, 4), "pi": (-1500, 3),
         "va": (-1300, 10), "vb": (-1250, 8), "vi": (-1350, 6), "wb": (-1300, 25), "ig": (-1900, 1),
         "nd": (-1400, 10)}
IFL_PREFIX = {"north_america": "NAM", "south_america": "SAM", "europe": "EUR", "africa": "AFR", "asia": "ASI",
              "oceania": "AUS"}


def land_tiles(planet: Planet, sites: pd.DataFrame) -> gpd.GeoDataFrame:
    """Tiles of the land with their centre's elevation, temperature and rain, and whether a site is inside."""
    grid = Grid(TILE_DEG)
    n = normals(planet, grid)
    continents = shapely.union_all([box(w, s, e, nth) for s, nth, w, e in CONTINENTS.values()])
    lat, lon = grid.mesh()
    half = TILE_DEG / 2
    cells = shapely.box(lon - half, lat - half, lon + half, lat + half).ravel()
    shapes = np.array([_polygonal(shape) for shape in shapely.intersection(cells, continents)])
    keep = ~shapely.is_empty(shapes) & (shapely.area(shapes) > 1e-9)
    rows, cols = np.unravel_index(np.flatnonzero(keep), grid.shape)
    with_site = np.zeros(grid.shape, dtype=bool)
    with_site[grid.cell(sites["lat"].to_numpy(float), sites["lon"].to_numpy(float))] = True
    return gpd.GeoDataFrame({
        "elevation": n.elevation[rows, cols], "tmean": n.tmean[rows, cols], "precip": n.precip[rows, cols],
        "has_site": with_site[rows, cols], "lat": lat[rows, cols], "lon": lon[rows, cols],
    }, geometry=shapes[keep], crs="EPSG:4326")


def _polygonal(shape: shapely.Geometry) -> shapely.Geometry:
    """Only the areas of an intersection (tiles touching a continent's edge also yield lines)."""
    if isinstance(shape, (shapely.Polygon, shapely.MultiPolygon)):
        return shape
    areas = [part for part in shapely.get_parts(shape) if isinstance(part, shapely.Polygon)]
    return shapely.union_all(areas) if areas else shapely.Polygon()


def lithology(tiles: gpd.GeoDataFrame, seed: int) -> np.ndarray:
    """GLiM code per tile; a site never falls on water (wb) or no-data (nd), which carry no rock fraction."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7400]))

    def draw(table: dict[str, float]) -> np.ndarray:
        weights = np.array(list(table.values()))
        return rng.choice(list(table), size=len(tiles), p=weights / weights.sum())

    classes = np.where(tiles["elevation"].to_numpy() > 1500.0, draw(MOUNTAIN), draw(LOWLAND))
    classes = np.where(tiles["tmean"].to_numpy() < -6.0, "ig", classes)
    return np.where(tiles["has_site"].to_numpy() & np.isin(classes, NOT_AT_SITES), "su", classes)


def _write(root: Path, relative: str, frame: gpd.GeoDataFrame, driver: str) -> None:
    target = root / relative
    with staged(target.parent) as scratch:
        frame.to_file(scratch / target.name, driver=driver)


def write_vectors(root: Path, planet: Planet, sites: pd.DataFrame, seed: int) -> list[str]:
    tiles = land_tiles(planet, sites)
    xx = lithology(tiles, seed)
    _write(root, GLIM_FILE, gpd.GeoDataFrame({"xx": xx}, geometry=tiles.geometry.values, crs="EPSG:4326"), "GPKG")

    rng = np.random.default_rng(np.random.SeedSequence([seed, 7401]))
    hydro = np.array([HYDRO[code] for code in xx], dtype=float)
    log_k = np.clip(np.round(hydro[:, 0] + 60 * rng.standard_normal(len(xx))), -2000, -1000).astype(np.int32)
    porosity = np.clip(np.round(hydro[:, 1] + 2 * rng.standard_normal(len(xx))), 1, 40).astype(np.int32)
    glhymps = gpd.GeoDataFrame({"logK_Ice_x": log_k, "Porosity_x": porosity}, geometry=tiles.geometry.values,
                               crs="EPSG:4326").to_crs("EPSG:6933")
    _write(root, GLHYMPS_FILE, glhymps, "ESRI Shapefile")

    forest = ((tiles["tmean"] >= 20.0) & (tiles["precip"] >= 3.0)) | ((tiles["tmean"] < 4.0) & (tiles["tmean"] > -6.0))
    intact = forest.to_numpy() & (planet.wave(tiles["lat"].to_numpy(), tiles["lon"].to_numpy(), 5) > -0.3)
    blobs = shapely.get_parts(shapely.union_all(tiles.geometry.values[intact])) if intact.any() else np.array([])
    names = list(CONTINENTS)
    ids = []
    for k, blob in enumerate(blobs, start=1):
        point = blob.representative_point()
        inside = [name for name, (s, nth, w, e) in CONTINENTS.items() if s <= point.y <= nth and w <= point.x <= e]
        ids.append(f"{IFL_PREFIX[(inside or names)[0]]}_{k}")
    _write(root, IFL_FILE, gpd.GeoDataFrame({"IFL_ID": ids}, geometry=list(blobs), crs="EPSG:4326"), "ESRI Shapefile")
    stems = [str(Path(name).with_suffix(suffix)) for name in (GLHYMPS_FILE, IFL_FILE)
             for suffix in (".shp", ".shx", ".dbf", ".prj")]
    return [GLIM_FILE, *stems]
