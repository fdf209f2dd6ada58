"""``stefaland data synth DIR --products``: a miniature of every paper Table C1 product.

The products are written in their providers' own formats, names and folder layout (MSWX/MSWEP
daily NetCDF trees, ESA CCI NetCDF, MODIS/GMTED/Pelletier/GPW GeoTIFFs, HWSD2 ``.bil`` plus its
layer table, Kummu NetCDFs, GLiM/GLHYMPS/IFL polygons), with the pretraining site table, so that
``STEFALAND_GLOBAL_ROOT=DIR stefaland data build --catalog catalog/global.yaml`` exercises the
real readers end to end without downloading terabytes. Everything is drawn from one seeded
planet (:mod:`.products_world`); the same arguments give the same files.

``DIR`` is claimed like every StefaLand output (:mod:`stefaland.outputs`): a folder of foreign
files is refused, a previous products folder is replaced, and a second writer is locked out.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import StefaLandError
from ..outputs import claim_output, read_marker
from .products_daily import daily_resolution, write_daily
from .products_io import write_text
from .products_rasters import write_rasters
from .products_soil import write_hwsd
from .products_static import static_world
from .products_vector import write_vectors
from .products_world import REGION_CONTINENT, Planet
from .sites import draw_sites
from .world import _validate, describe_change

log = logging.getLogger("stefaland.synth")

KIND = "synth_products"
GENERATOR_VERSION = 1
SITES_FILE = "sites/pretraining_sites.csv"
PAPER_SITES = 4229  # the paper's count of pretraining locations
MIN_RESOLUTION, MAX_RESOLUTION = 0.1, 10.0
BUILD_COMMAND = "STEFALAND_GLOBAL_ROOT={root} stefaland data build --catalog catalog/global.yaml"


def check_resolution(resolution: float) -> None:
    """A resolution that tiles the globe exactly (180° and 360° are whole numbers of cells)."""
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise StefaLandError(f"--resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION} degrees "
                             f"(got {resolution})")
    cells = 180.0 / resolution
    if abs(cells - round(cells)) > 1e-6:
        raise StefaLandError(f"--resolution {resolution}: 180 degrees must be a whole number of cells "
                             "(e.g. 0.25, 0.5, 1)")


def pretraining_sites(n_sites: int, seed: int) -> pd.DataFrame:
    """site, lat, lon, region (continent): the regions of the virtual world, named by continent."""
    drawn = draw_sites(n_sites, np.random.default_rng(np.random.SeedSequence([seed, 7000])))
    return pd.DataFrame({
        "site": drawn["gauge_id"].astype(str),
        "lat": drawn["gauge_lat"].round(5),
        "lon": drawn["gauge_lon"].round(5),
        "region": drawn["region"].map(REGION_CONTINENT),
    })


PRODUCTS = (  # what README.txt lists: path (pattern) and content
    ("sites/pretraining_sites.csv", "the pretraining sites: site, lat, lon, region (continent)"),
    ("MSWX_V100/Past/{Tmax,Tmin,SWd,RelHum}/Daily/YYYYDDD.nc",
     "MSWX v1 daily meteorology, one file per day: air_temperature (degree_Celsius), "
     "downward_shortwave_radiation (W m-2), relative_humidity (%)"),
    ("MSWEP_V280/Past/Daily/YYYYDDD.nc", "MSWEP v2.8 daily precipitation (mm/d), one file per day"),
    ("ESACCI-LC/ESACCI-LC-L4-LCCS-Map-300m-P1Y-2018-v2.1.1.nc", "ESA CCI land cover 2018, lccs_class codes"),
    ("MOD13A3/MOD13A3.061__1_km_monthly_NDVI_doyYYYYDDD_aid0001.tif",
     "MODIS MOD13A3 monthly NDVI x 10000 (nodata -3000), the 12 months of the first year"),
    ("HWSD2/HWSD2.bil (+ .hdr .prj)", "HWSD v2 soil mapping unit ids (nodata 65535)"),
    ("HWSD2/HWSD2_LAYERS.csv", "the HWSD2_LAYERS table of HWSD2.mdb as CSV (-9 = missing)"),
    ("GMTED2010/mn30_grd.tif", "GMTED2010 mean elevation (m)"),
    ("Global_Soil_Regolith_Sediment_1304/data/average_soil_and_sedimentary-deposit_thickness.tif",
     "Pelletier et al. soil and sedimentary-deposit thickness (m, nodata 255)"),
    ("gpw-v4-population-density-rev11_2015_30_sec_tif/gpw_v4_population_density_rev11_2015_30_sec.tif",
     "GPW v4 population density 2015 (persons/km2)"),
    ("Kummu_GDP_HDI/GDP_per_capita_PPP_1990_2015_v2.nc", "Kummu et al. GDP per capita (PPP, USD), 1990-2015"),
    ("Kummu_GDP_HDI/HDI_1990_2015_v2.nc", "Kummu et al. human development index, 1990-2015"),
    ("GLiM/LiMW_GIS_2015.gpkg", "GLiM lithology polygons, field xx (sc = carbonate sedimentary rocks)"),
    ("GLHYMPS/GLHYMPS.shp (+ .shx .dbf .prj)", "GLHYMPS polygons in EPSG:6933: logK_Ice_x, Porosity_x (x 100)"),
    ("IFL_2016/ifl_2016.shp (+ .shx .dbf .prj)", "Intact Forest Landscapes 2016 polygons, field IFL_ID"),
)


def readme(n_sites: int, years: int, seed: int, start_year: int, resolution: float) -> str:
    width = max(len(path) for path, _ in PRODUCTS)
    return "\n".join([
        "Synthetic miniature of the StefaLand pretraining products (paper Table C1).",
        "",
        "Written by `stefaland data synth DIR --products` "
        f"(--sites {n_sites} --years {years} --seed {seed} --start-year {start_year} --resolution {resolution}).",
        "Every value is made up: physically plausible and spatially coherent, but not observed data.",
        "Formats, names and layout follow the providers', so the shipped catalog builds from here:",
        f"    {BUILD_COMMAND.format(root='DIR')}",
        "",
        f"Static products are on a global {resolution} degree grid, the daily files on a "
        f"{daily_resolution(resolution)} degree grid.",
        "",
        *[f"{path.ljust(width)}  {what}" for path, what in PRODUCTS],
        "",
    ])


def write_products(out_dir: Path, n_sites: int = PAPER_SITES, years: int = 3, seed: int = 0, start_year: int = 1980,
                   resolution: float = 0.5, quiet: bool = False, force: bool = False) -> Path:
    """Write every miniature product into ``out_dir``; return it. One-line StefaLandError on bad input.

    Products made earlier with the same settings are rewritten (the same files); products made with
    other settings are replaced only with ``force``, since stores may have been built from them.
    """
    _validate(n_sites, years, start_year)
    check_resolution(resolution)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    settings = {"generator_version": GENERATOR_VERSION, "n_sites": n_sites, "years": years, "seed": seed,
                "start_year": start_year, "resolution": resolution}
    with claim_output(str(out_dir), KIND, resumable=True) as claim:
        if claim.existed:
            before = {key: value for key, value in (read_marker(str(out_dir)) or {}).items() if key in settings}
            if before != settings and not force:
                raise StefaLandError(f"{out_dir} holds products made with other settings "
                                     f"({describe_change(before, settings)}); pass --force to replace them, "
                                     "or choose another OUT_DIR")
            claim.clear()
        claim.mark(**settings)
        sites = pretraining_sites(n_sites, seed)
        write_text(out_dir / SITES_FILE, sites.to_csv(index=False))
        planet = Planet(seed)
        n_daily = write_daily(out_dir, planet, resolution, seed, start_year, years, quiet=quiet)
        claim.heartbeat()
        world = static_world(planet, resolution, sites, seed)
        files = write_rasters(out_dir, world, planet, start_year)
        files += write_hwsd(out_dir, world, seed)
        files += write_vectors(out_dir, planet, sites, seed)
        write_text(out_dir / "README.txt", readme(n_sites, years, seed, start_year, resolution))
    log.info("products written to %s: %d daily files and %d others (%.1f s)", out_dir, n_daily, len(files) + 2,
             time.perf_counter() - started)
    return out_dir
