"""Static raster miniatures: ESA CCI, MOD13A3 NDVI, GMTED2010, Pelletier, GPW v4 and Kummu GDP/HDI.

Each is written in its provider's format and naming (NetCDF for CCI and Kummu, GeoTIFF for the
rest) from one :class:`~.products_static.StaticWorld`, so products agree with each other and with
the daily forcing. Land-only products carry their nodata over the sea, never on a site's cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .products_io import write_geotiff, write_netcdf
from .products_static import CCI_CLASSES, StaticWorld
from .products_world import Planet

CCI_FILE = "ESACCI-LC/ESACCI-LC-L4-LCCS-Map-300m-P1Y-2018-v2.1.1.nc"
GMTED_FILE = "GMTED2010/mn30_grd.tif"
PELLETIER_FILE = "Global_Soil_Regolith_Sediment_1304/data/average_soil_and_sedimentary-deposit_thickness.tif"
GPW_FILE = "gpw-v4-population-density-rev11_2015_30_sec_tif/gpw_v4_population_density_rev11_2015_30_sec.tif"
KUMMU_GDP_FILE = "Kummu_GDP_HDI/GDP_per_capita_PPP_1990_2015_v2.nc"
KUMMU_HDI_FILE = "Kummu_GDP_HDI/HDI_1990_2015_v2.nc"
GPW_NODATA = np.float32(-3.402823466e38)
NDVI_NODATA = -3000
# NDVI (base, seasonal amplitude) by CCI class
NDVI_BY_CLASS = {10: (0.50, 0.25), 50: (0.82, 0.05), 60: (0.62, 0.22), 70: (0.55, 0.22), 130: (0.20, 0.12),
                 190: (0.25, 0.05), 210: (-0.05, 0.0), 220: (-0.08, 0.02)}
GDP_2015 = {"north_america": 30000.0, "south_america": 9000.0, "europe": 26000.0, "africa": 2500.0,
            "asia": 6000.0, "oceania": 28000.0}  # USD PPP per capita, typical of the continent


def ndvi_file(day: pd.Timestamp) -> str:
    return f"MOD13A3/MOD13A3.061__1_km_monthly_NDVI_doy{day.year}{day.day_of_year:03d}_aid0001.tif"


def write_cci(root: Path, world: StaticWorld) -> None:
    grid = world.grid
    classes = xr.DataArray(world.classes[None], dims=("time", "lat", "lon"), attrs={
        "long_name": "Land cover class defined in LCCS", "standard_name": "land_cover_lccs",
        "flag_values": np.array(list(CCI_CLASSES), dtype=np.uint8), "flag_meanings": " ".join(CCI_CLASSES.values()),
        "valid_min": np.uint8(10), "valid_max": np.uint8(220)})
    dataset = xr.Dataset({"lccs_class": classes}, coords={
        "time": pd.DatetimeIndex(["2018-01-01"]), "lat": ("lat", grid.lat, {"units": "degrees_north"}),
        "lon": ("lon", grid.lon, {"units": "degrees_east"})},
        attrs={"title": "ESA CCI Land Cover Map (synthetic miniature)", "Conventions": "CF-1.6"})
    dataset["time"].encoding.update(units="days since 1970-01-01", calendar="standard")
    dataset["lccs_class"].encoding.update(zlib=True, complevel=4, _FillValue=None, dtype="uint8")
    write_netcdf(root / CCI_FILE, dataset)


def write_ndvi(root: Path, world: StaticWorld, planet: Planet, year: int) -> None:
    """12 monthly NDVI GeoTIFFs (×10000): green-up in local summer, or in the rainy season in the tropics."""
    grid, n = world.grid, world.normals
    lat, lon = grid.mesh()
    base = np.zeros(grid.shape)
    amplitude = np.zeros(grid.shape)
    for code, (b, a) in NDVI_BY_CLASS.items():
        base[world.classes == code], amplitude[world.classes == code] = b, a
    grass = world.classes == 130
    base[grass] += 0.3 * np.clip(n.precip[grass] / 3.0, 0.0, 1.0)
    peak = np.where(np.abs(lat) < 23.0, n.wet_doy + 30.0, np.where(lat >= 0, 200.0, 20.0))
    texture = 0.03 * planet.wave(lat, lon, 7, scale=8.0)
    for month in range(1, 13):
        day = pd.Timestamp(year, month, 1)
        mid = day.day_of_year + 15.0
        ndvi = np.clip(base + amplitude * np.cos(2 * np.pi * (mid - peak) / 365.25) + texture, -0.2, 0.95)
        scaled = np.where(world.land, np.round(ndvi * 10000.0), NDVI_NODATA).astype(np.int16)
        write_geotiff(root / ndvi_file(day), scaled, grid, NDVI_NODATA)


def write_terrain(root: Path, world: StaticWorld, planet: Planet) -> None:
    """GMTED2010 mean elevation (m) and Pelletier soil thickness (m; thick on flat lowlands)."""
    grid, n = world.grid, world.normals
    write_geotiff(root / GMTED_FILE, np.round(n.elevation).astype(np.int16), grid, -32768)
    lat, lon = grid.mesh()
    thickness = (50.0 * np.exp(-world.slope / 0.1) * np.clip(1.0 - n.elevation / 3000.0, 0.1, 1.0)
                 + 3.0 * planet.wave(lat, lon, 7, scale=5.0))
    thickness = np.where(world.land, np.clip(np.round(thickness), 0, 50), 255).astype(np.uint8)
    write_geotiff(root / PELLETIER_FILE, thickness, grid, 255)


def write_population(root: Path, world: StaticWorld) -> None:
    density = np.where(world.land, world.density, GPW_NODATA).astype(np.float32)
    write_geotiff(root / GPW_FILE, density, world.grid, float(GPW_NODATA))


def write_kummu(root: Path, world: StaticWorld, planet: Planet) -> None:
    """GDP per capita (PPP) and HDI for 1990..2015: richer continents and cities, faster growth where poorer."""
    grid = world.grid
    lat, lon = grid.mesh()
    by_continent = np.array(list(GDP_2015.values()))[world.continent]
    gdp_2015 = by_continent * np.exp(0.35 * planet.wave(lat, lon, 7)) * (1.0 + 0.5 * (world.classes == 190))
    growth = np.clip(0.045 - 0.01 * np.log10(gdp_2015 / 1000.0), 0.005, 0.05).astype(np.float32)
    gdp_2015 = np.where(world.land, gdp_2015, np.nan).astype(np.float32)  # float32 and NaN at sea, as published
    years = np.arange(1990, 2016)
    gdp = gdp_2015[None] * (1.0 + growth[None]) ** (years - 2015).astype(np.float32)[:, None, None]
    coords = {"time": ("time", years.astype(np.int32), {"long_name": "year"}),
              "latitude": ("latitude", grid.lat, {"units": "degrees_north"}),
              "longitude": ("longitude", grid.lon, {"units": "degrees_east"})}
    _write_kummu(root / KUMMU_GDP_FILE, "GDP_per_capita_PPP", np.round(gdp), "USD", coords)
    hdi = np.clip(0.45 + 0.28 * np.log10(gdp / 1000.0), 0.1, 0.98)
    del gdp
    _write_kummu(root / KUMMU_HDI_FILE, "HDI", np.round(hdi, 3), "1", coords)


def _write_kummu(path: Path, name: str, values: np.ndarray, units: str, coords: dict) -> None:
    array = xr.DataArray(values, dims=("time", "latitude", "longitude"), attrs={"units": units})
    dataset = xr.Dataset({name: array}, coords=coords, attrs={"title": f"{name} 1990-2015 (synthetic miniature)"})
    dataset[name].encoding.update(zlib=True, complevel=4, shuffle=True, chunksizes=(1, *values.shape[1:]))
    write_netcdf(path, dataset)


def write_rasters(root: Path, world: StaticWorld, planet: Planet, year: int) -> list[str]:
    """Write every static raster product; return the paths written (relative to ``root``)."""
    write_cci(root, world)
    write_ndvi(root, world, planet, year)
    write_terrain(root, world, planet)
    write_population(root, world)
    write_kummu(root, world, planet)
    months = [ndvi_file(pd.Timestamp(year, month, 1)) for month in range(1, 13)]
    return [CCI_FILE, *months, GMTED_FILE, PELLETIER_FILE, GPW_FILE, KUMMU_GDP_FILE, KUMMU_HDI_FILE]

