"""Write a whole virtual world, chunk by chunk, resumably.

Sites are processed in fixed chunks of :data:`CHUNK_SITES` so memory stays bounded (a chunk's
arrays are (128 sites × days)), and each chunk draws from its own seeded stream, so the output
depends only on (n_sites, years, seed, start_year). A chunk's attribute rows are saved under
``.synth_parts/`` only after all its site files are written; an interrupted run re-run with the
same arguments skips finished chunks. The tables and the catalog come last, so a directory
holding ``virtual_world.yaml`` is complete.
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import StefaLandError
from ..progress import progress
from .attributes import soil_and_geology, vegetation
from .camels_files import DateBlocks, forcing_file_bytes, streamflow_file_bytes, table_bytes, write_atomic
from .catalog import catalog_yaml
from .climate import generate_forcings
from .climate_indices import climate_indices, temperature_amplitude
from .hydrology import parameters_from_attributes, run_hbv
from .observations import observed_discharge, quality_flags
from .sites import UNGAUGED_FRACTION, draw_sites, gauge_names

log = logging.getLogger("stefaland.synth")

GENERATOR_VERSION = 2  # 2: 1-based PUB/PUR folds
CHUNK_SITES = 128
PRODUCT = "synthetic"
CATALOG_NAME = "virtual_world.yaml"
PARTS_DIR = ".synth_parts"
SETTINGS_NAME = ".synth_settings.json"  # what a world in this folder was (or is being) made with
OUTPUT_ENTRIES = (f"basin_mean_forcing/{PRODUCT}", "usgs_streamflow", "camels_attributes_v2.0", CATALOG_NAME)

TABLES: dict[str, list[str]] = {
    "topo": ["gauge_lat", "gauge_lon", "elev_mean", "slope_mean", "area_gages2", "area_geospa_fabric"],
    "clim": ["p_mean", "pet_mean", "p_seasonality", "frac_snow", "aridity", "high_prec_freq", "high_prec_dur",
             "high_prec_timing", "low_prec_freq", "low_prec_dur", "low_prec_timing"],
    "soil": ["soil_depth_pelletier", "soil_depth_statsgo", "soil_porosity", "soil_conductivity",
             "max_water_content", "sand_frac", "silt_frac", "clay_frac"],
    "geol": ["carbonate_rocks_frac", "geol_porostiy", "geol_permeability"],
    "vege": ["frac_forest", "lai_max", "lai_diff", "gvf_max", "gvf_diff"],
    "name": ["huc_02", "gauge_name"],
}
FOLD_COLUMNS = ["region", "pub_fold", "pur_fold"]


def forcing_path(out_dir: Path, region: str, site: str) -> Path:
    return out_dir / "basin_mean_forcing" / PRODUCT / region / f"{site}_lump_{PRODUCT}_forcing_leap.txt"


def streamflow_path(out_dir: Path, region: str, site: str) -> Path:
    return out_dir / "usgs_streamflow" / region / f"{site}_streamflow_qc.txt"


def _validate(n_sites: int, years: int, start_year: int) -> None:
    if n_sites < 1:
        raise StefaLandError(f"--sites must be at least 1 (got {n_sites})")
    if n_sites > 9_999_999:
        raise StefaLandError(f"--sites must be below 10,000,000 to fit 8-digit ids (got {n_sites})")
    if years < 1:
        raise StefaLandError(f"--years must be at least 1 (got {years})")
    if start_year < 1800 or start_year + years - 1 > 9999:
        raise StefaLandError(f"--start-year {start_year} with --years {years} leaves the years 1800..9999")


def describe_change(before: dict, after: dict) -> str:
    """``"n_sites 10 -> 4, seed 0 -> 1"``: what differs between two generators' settings."""
    changed = [f"{key} {before.get(key)} -> {after.get(key)}" for key in sorted({*before, *after})
               if before.get(key) != after.get(key)]
    return ", ".join(changed) or "unknown settings"


def _recorded_settings(out_dir: Path) -> dict | None:
    """The settings of the world in ``out_dir``: finished (``SETTINGS_NAME``) or interrupted (its parts)."""
    for path in (out_dir / PARTS_DIR / "settings.json", out_dir / SETTINGS_NAME):
        if path.exists():
            return json.loads(path.read_text())
    return None


def _prepare(out_dir: Path, settings: dict, force: bool) -> Path | None:
    """The parts folder to write into, or None when ``out_dir`` already holds this very world.

    An interrupted world with the same settings resumes. A world made with other settings is
    replaced only with ``force``: stores and runs may have been built from it.
    """
    parts = out_dir / PARTS_DIR
    recorded = _recorded_settings(out_dir)
    if recorded == settings:
        if (parts / "settings.json").exists():
            log.info("resuming the virtual world in %s", out_dir)
            return parts
        if (out_dir / CATALOG_NAME).exists():
            log.info("the virtual world in %s is already complete with these settings", out_dir)
            return None
    ours = recorded is not None or (out_dir / CATALOG_NAME).exists()
    present = [entry for entry in OUTPUT_ENTRIES if (out_dir / entry).exists()]
    if present and not ours:
        raise StefaLandError(f"{out_dir / present[0]} exists but was not written by `data synth`; choose an empty OUT_DIR")
    if ours and not force and recorded != settings:  # same settings, catalog gone: simply made again
        change = describe_change(recorded, settings) if recorded is not None else "settings unrecorded"
        raise StefaLandError(f"{out_dir} holds a virtual world made with other settings ({change}); "
                             "pass --force to replace it, or choose another OUT_DIR")
    for entry in (*OUTPUT_ENTRIES, PARTS_DIR, SETTINGS_NAME):
        target = out_dir / entry
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    parts.mkdir(parents=True)
    write_atomic(parts / "settings.json", json.dumps(settings, sort_keys=True).encode())
    return parts


def _chunk(out_dir: Path, sites: pd.DataFrame, dates: pd.DatetimeIndex, blocks: DateBlocks,
           rng: np.random.Generator) -> pd.DataFrame:
    """Simulate one chunk of sites, write their files, return their attribute rows."""
    forcings = generate_forcings(sites, dates, rng)
    prcp, tmax, tmin, pet = forcings["prcp"], forcings["tmax"], forcings["tmin"], forcings["pet"]
    clim = climate_indices(prcp, tmax, tmin, pet, dates)
    soil, geol = soil_and_geology(sites, sites["aridity_target"].to_numpy(float), rng)
    tmean = (tmax + tmin) / 2.0
    vege = vegetation(clim["aridity"].to_numpy(), temperature_amplitude(tmax, tmin, dates), tmean.mean(axis=1), rng)
    rows = pd.concat([sites.reset_index(drop=True), clim, soil, geol, vege], axis=1)
    area = rows["area_gages2"].to_numpy(float)
    rows["area_geospa_fabric"] = area * np.exp(0.03 * rng.standard_normal(len(rows)))
    depth, swe = run_hbv(prcp, tmean, pet, parameters_from_attributes(rows))
    forcings["swe"] = np.round(swe, 2)
    discharge = observed_discharge(depth, area, rows["has_gaps"].to_numpy(bool), rng)
    flags = quality_flags(tmean)
    for i, site in enumerate(rows.itertuples(index=False)):
        series = {name: values[i] for name, values in forcings.items()}
        write_atomic(forcing_path(out_dir, site.huc_02, site.gauge_id),
                     forcing_file_bytes(site.gauge_lat, site.elev_mean, site.area_gages2 * 1e6, blocks, series))
        if site.gauged:
            write_atomic(streamflow_path(out_dir, site.huc_02, site.gauge_id),
                         streamflow_file_bytes(site.gauge_id, blocks, discharge[i], flags[i]))
    return rows


def _write_tables(out_dir: Path, rows: pd.DataFrame) -> None:
    tables = out_dir / "camels_attributes_v2.0"
    rows = rows.assign(gauge_name=gauge_names(rows))
    for table, columns in TABLES.items():
        write_atomic(tables / f"camels_{table}.txt", table_bytes(rows[["gauge_id", *columns]]))
    write_atomic(tables / "synthetic_folds.txt", table_bytes(rows[["gauge_id", *FOLD_COLUMNS]]))


def write_virtual_world(out_dir: Path, n_sites: int = 64, years: int = 6, seed: int = 0,
                        start_year: int = 1980, quiet: bool = False,
                        ungauged_fraction: float = UNGAUGED_FRACTION, force: bool = False) -> Path:
    """Write a synthetic world in the CAMELS-US formats plus its intake catalog; return the catalog path.

    ``ungauged_fraction``: share of sites with forcings and attributes but no streamflow file (0.05 by
    default; benchmarks/skill_foundation_effect.py uses a mostly ungauged world, as the paper's
    pretraining sees far more land than has gauges). ``force`` replaces a world made with other settings.
    """
    _validate(n_sites, years, start_year)
    if not 0.0 <= ungauged_fraction < 1.0:
        raise StefaLandError(f"ungauged_fraction must be in [0, 1) (got {ungauged_fraction})")
    out_dir = Path(out_dir)
    settings: dict[str, int | float] = {"generator_version": GENERATOR_VERSION, "n_sites": n_sites, "years": years,
                                        "seed": seed, "start_year": start_year}
    if ungauged_fraction != UNGAUGED_FRACTION:  # default worlds keep their settings (and resume) as before
        settings["ungauged_fraction"] = ungauged_fraction
    started = time.perf_counter()
    parts = _prepare(out_dir, settings, force)
    if parts is None:
        return out_dir / CATALOG_NAME
    dates = pd.date_range(f"{start_year:04d}-01-01", f"{start_year + years - 1:04d}-12-31", freq="D")
    sites = draw_sites(n_sites, np.random.default_rng(np.random.SeedSequence([seed, 0])), ungauged_fraction)
    blocks = DateBlocks(dates)
    n_chunks = math.ceil(n_sites / CHUNK_SITES)
    log.info("writing %d virtual sites x %d days in %d chunks to %s", n_sites, len(dates), n_chunks, out_dir)
    part_files = []
    for index in progress(range(n_chunks), "synthesising sites", total=n_chunks, quiet=quiet):
        part = parts / f"chunk_{index:05d}.parquet"
        part_files.append(part)
        if part.exists():
            continue
        chunk_sites = sites.iloc[index * CHUNK_SITES:(index + 1) * CHUNK_SITES]
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1, index]))
        rows = _chunk(out_dir, chunk_sites, dates, blocks, rng)
        buffer = io.BytesIO()
        rows.to_parquet(buffer, index=False)
        write_atomic(part, buffer.getvalue())
    rows = pd.concat([pd.read_parquet(part) for part in part_files], ignore_index=True)
    _write_tables(out_dir, rows)
    catalog = out_dir / CATALOG_NAME
    write_atomic(catalog, catalog_yaml(start_year, years).encode("utf-8"))
    write_atomic(out_dir / SETTINGS_NAME, (parts / "settings.json").read_bytes())
    shutil.rmtree(parts)
    log.info("virtual world complete: %s (%.1f s)", catalog, time.perf_counter() - started)
    return catalog
