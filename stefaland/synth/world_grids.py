"""Gridded versions of virtual-world sources, so the gridded path runs in the demo and in tests.

``data synth --gridded`` calls :func:`add_gridded_sources`: the grids cover the world's sites at a
coarse resolution (the world spans continents, so a fine grid would be gigabytes) and their catalog
entries are merged into the world's catalog.

The virtual world's forcings and attributes are site tables; real global products are rasters.
These writers put the same kind of information on grids covering the sites, each in one of the
formats users meet (NetCDF with a daily time axis, zarr with y/x names and 0..360 longitudes,
a north-up GeoTIFF of class codes), so every normalisation path is exercised by the demo too.
Writing goes through dask chunk by chunk: a long period never sits in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import yaml

from ..errors import StefaLandError
from ..fileio import write_bytes_atomic

if TYPE_CHECKING:
    import geopandas as gpd  # the geo extra: imported where a basin layer is built

LANDCOVER_CLASSES = {1: "forest", 2: "grassland", 3: "cropland", 4: "urban"}
LANDCOVER_NODATA = 0  # water / no data: left out of the class fractions
GRID_FOLDER = "grids"  # beside the world's catalog
MAX_CELLS = 4_000_000  # per time step; beyond that the caller wants a coarser resolution or fewer sites


@dataclass(frozen=True)
class GriddedWorld:
    forcing: Path  # NetCDF: prcp (mm/day), tmean (K); dims time, lat, lon
    elevation: Path  # zarr: elevation (m); dims y, x; longitudes 0..360
    landcover: Path  # GeoTIFF: class codes (LANDCOVER_CLASSES), nodata 0, north-up


def grid_axes(sites: pd.DataFrame, resolution: float, pad: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres of a grid aligned on ``resolution`` covering every site with ``pad`` degrees around it."""
    lat, lon = sites["lat"].to_numpy(dtype=float), sites["lon"].to_numpy(dtype=float)
    south = max(-90.0, np.floor((lat.min() - pad) / resolution) * resolution)
    north = min(90.0, np.ceil((lat.max() + pad) / resolution) * resolution)
    west = max(-180.0, np.floor((lon.min() - pad) / resolution) * resolution)
    east = min(180.0, np.ceil((lon.max() + pad) / resolution) * resolution)
    lats = np.arange(south + resolution / 2, north, resolution)
    lons = np.arange(west + resolution / 2, east, resolution)
    if lats.size * lons.size > MAX_CELLS:
        raise StefaLandError(
            f"gridded synth: {lats.size}x{lons.size} cells at {resolution}° is too large; use a coarser resolution"
        )
    return np.round(lats, 10), np.round(lons, 10)


def _forcing(lat: np.ndarray, lon: np.ndarray, time: pd.DatetimeIndex, seed: int, time_chunk: int) -> xr.Dataset:
    shape, chunks = (time.size, lat.size, lon.size), (time_chunk, lat.size, lon.size)
    rng = da.random.default_rng(seed)
    doy = xr.DataArray(time.day_of_year.to_numpy(), dims="time").chunk({"time": time_chunk})
    lat_da = xr.DataArray(lat, dims="lat")
    season = np.cos(2 * np.pi * (doy - 200) / 365.25) * np.sign(lat_da + 1e-9)
    noise = xr.DataArray(rng.normal(0.0, 2.0, size=shape, chunks=chunks), dims=("time", "lat", "lon"))
    tmean = (273.15 + 27.0 - 0.45 * np.abs(lat_da) + 9.0 * season + noise).astype(np.float32)
    wet = xr.DataArray(rng.random(size=shape, chunks=chunks) < 0.35, dims=("time", "lat", "lon"))
    amount = xr.DataArray(rng.gamma(0.8, 7.0, size=shape, chunks=chunks), dims=("time", "lat", "lon"))
    prcp = (wet * amount * (1.0 + 0.3 * season)).astype(np.float32)
    tmean, prcp = tmean.transpose("time", "lat", "lon"), prcp.transpose("time", "lat", "lon")
    return xr.Dataset(
        {"prcp": prcp.assign_attrs(units="mm/day", long_name="precipitation"),
         "tmean": tmean.assign_attrs(units="K", long_name="daily mean air temperature")},
        coords={"time": time, "lat": lat, "lon": lon},
    )


def _elevation(lat: np.ndarray, lon: np.ndarray, seed: int) -> xr.Dataset:
    rng = np.random.default_rng(seed + 1)
    field = 600.0 + 500.0 * np.sin(np.radians(lat * 7))[:, None] * np.cos(np.radians(lon * 5))[None, :]
    field = np.maximum(field + rng.normal(0.0, 50.0, size=field.shape), 0.0).astype(np.float32)
    lon360 = np.mod(lon, 360.0)  # the GMTED-style 0..360 convention, normalised on read
    return xr.Dataset({"elevation": (("y", "x"), field, {"units": "m"})}, coords={"y": lat, "x": lon360})


def _landcover(lat: np.ndarray, lon: np.ndarray, seed: int) -> xr.DataArray:
    rng = np.random.default_rng(seed + 2)
    codes = rng.integers(1, len(LANDCOVER_CLASSES) + 1, size=(lat.size, lon.size)).astype(np.uint8)
    codes[rng.random(codes.shape) < 0.05] = LANDCOVER_NODATA
    north_up = codes[::-1]
    array = xr.DataArray(north_up, dims=("y", "x"), coords={"y": lat[::-1], "x": lon}, name="landcover")
    return array.rio.write_crs("EPSG:4326").rio.write_nodata(LANDCOVER_NODATA)


def write_gridded_world(
    sites: pd.DataFrame,
    start: str,
    end: str,
    seed: int,
    out_dir: str | os.PathLike,
    resolution: float = 0.25,
    pad: float = 1.0,
    time_chunk: int = 365,
) -> GriddedWorld:
    """Write a forcing NetCDF, an elevation zarr and a land-cover GeoTIFF around ``sites`` (site/lat/lon)."""
    import rioxarray  # noqa: F401  (registers .rio)

    missing = [c for c in ("lat", "lon") if c not in sites.columns]
    if missing:
        raise StefaLandError(f"gridded synth: the site table has no {missing[0]!r} column")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lat, lon = grid_axes(sites, resolution, pad)
    time = pd.date_range(start, end, freq="D")
    if time.empty:
        raise StefaLandError(f"gridded synth: empty period {start}..{end}")
    world = GriddedWorld(out / "forcing_grid.nc", out / "elevation_grid.zarr", out / "landcover_grid.tif")
    forcing = _forcing(lat, lon, time, seed, min(time_chunk, time.size))
    chunking = {"chunksizes": (min(time_chunk, time.size), lat.size, lon.size), "zlib": True, "complevel": 1}
    # files are written here, by this process: a cluster that may be active must not do it remotely
    with dask.config.set(scheduler="threads"):
        forcing.to_netcdf(world.forcing, engine="h5netcdf", encoding={v: chunking for v in forcing.data_vars})
    _elevation(lat, lon, seed).to_zarr(world.elevation, mode="w", consolidated=False)
    _landcover(lat, lon, seed).rio.to_raster(world.landcover)
    return world


def _urlpath(path: Path, catalog_dir: str | os.PathLike | None) -> str:
    if catalog_dir is None:
        return str(path)
    try:
        return "{{ CATALOG_DIR }}/" + Path(path).resolve().relative_to(Path(catalog_dir).resolve()).as_posix()
    except ValueError:
        return str(path)


def gridded_catalog_entries(world: GriddedWorld, catalog_dir: str | os.PathLike | None = None,
                            point_method: str = "bilinear", basin_method: str | None = None) -> dict[str, dict]:
    """Intake catalog ``sources`` entries for a :class:`GriddedWorld` (merge them into a catalog).

    ``basin_method="polygon"`` makes the continuous sources area-weighted basin means (the site
    table must then carry basin geometries); the land cover is always class fractions.
    """
    method = basin_method or point_method
    return {
        "grid_forcing": {
            "description": "virtual-world daily precipitation and temperature on a grid",
            "driver": "netcdf",
            "args": {"urlpath": _urlpath(world.forcing, catalog_dir),
                     "xarray_kwargs": {"engine": "h5netcdf", "chunks": {"time": 365}}},
            "metadata": {
                "role": "dynamic",
                "gridded": {"method": method},
                "variables": {
                    "grid_prcp": {"from": "prcp", "units": "mm/day", "group": "climate", "description": "gridded precipitation"},
                    "grid_tmean": {"from": "tmean", "units": "K", "group": "climate", "description": "gridded mean temperature"},
                },
            },
        },
        "grid_elevation": {
            "description": "virtual-world elevation grid (zarr, y/x, longitudes 0..360)",
            "driver": "zarr",
            "args": {"urlpath": _urlpath(world.elevation, catalog_dir), "consolidated": False},
            "metadata": {
                "role": "static",
                "gridded": {"method": method},
                "variables": {"grid_elev": {"from": "elevation", "units": "m", "group": "terrain", "description": "gridded elevation"}},
            },
        },
        "grid_landcover": {
            "description": "virtual-world land-cover classes (GeoTIFF)",
            "driver": "rasterio",
            "args": {"urlpath": _urlpath(world.landcover, catalog_dir)},
            "metadata": {
                "role": "static",
                "gridded": {"method": "polygon" if basin_method == "polygon" else "nearest", "categorical": True,
                            "classes": dict(LANDCOVER_CLASSES)},
                "variables": {"landcover": {"from": "band_data", "units": "fraction", "group": "vegetation",
                                            "description": "land-cover class fractions"}},
            },
        },
    }


def basin_squares(sites: pd.DataFrame, half_width: float = 0.3) -> gpd.GeoDataFrame:
    """Square stand-in basins (``half_width`` degrees around each site) for the polygon path.

    Squares at a half-cell offset cross cell edges, which is the case area weighting exists for.
    """
    import geopandas as gpd
    from shapely.geometry import box

    geometries = [box(x - half_width, y - half_width, x + half_width, y + half_width)
                  for y, x in zip(sites["lat"].to_numpy(dtype=float), sites["lon"].to_numpy(dtype=float))]
    return gpd.GeoDataFrame({"site": sites["site"].astype(str).to_numpy(dtype=object)}, geometry=geometries, crs="EPSG:4326")


def write_basins(sites: pd.DataFrame, path: str | os.PathLike, half_width: float = 0.3) -> Path:
    """Write :func:`basin_squares` as a GeoPackage (or GeoJSON/shapefile, by the file extension)."""
    frame = basin_squares(sites, half_width)
    frame.to_file(path)
    return Path(path)


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
