"""HWSD v2 miniature: the soil-mapping-unit raster (``HWSD2.bil``) and its HWSD2_LAYERS table.

As in the real database, a raster cell holds only a mapping unit id; properties live in the
``HWSD2_LAYERS`` table of ``HWSD2.mdb`` (shipped here as its CSV export), one row per unit,
soil sequence (1–3 soils sharing the unit, SHARE summing to 100) and depth layer D1..D7. Readers
must join and share-weight the rows, and skip -9 (missing) values, which appear only in deeper
layers and minor sequences, so every unit keeps a valid topsoil.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .products_io import write_ehdr, write_text
from .products_static import StaticWorld

RASTER_FOLDER, RASTER_STEM, LAYERS_FILE = "HWSD2", "HWSD2", "HWSD2/HWSD2_LAYERS.csv"
NODATA = 65535
UNIT_DEG = 3.0  # a mapping unit is a block of cells this many degrees across
MISSING = -9
MISSING_SHARE = 0.03  # of the deep-layer and minor-sequence rows
LAYERS = [("D1", 0, 20), ("D2", 20, 40), ("D3", 40, 60), ("D4", 60, 80), ("D5", 80, 100), ("D6", 100, 150),
          ("D7", 150, 200)]
COLUMNS = ["ID", "HWSD2_SMU_ID", "LAYER", "SEQUENCE", "SHARE", "TOPDEP", "BOTDEP", "COARSE", "SAND", "SILT",
           "CLAY", "BULK", "ORG_CARBON", "PH_WATER"]
PROPERTIES = ["COARSE", "SAND", "SILT", "CLAY", "BULK", "ORG_CARBON", "PH_WATER"]


def mapping_units(world: StaticWorld) -> np.ndarray:
    """Unit id per cell (1..M, numbered north-west to south-east), :data:`NODATA` at sea."""
    rows, cols = world.grid.shape
    per_block = max(1, int(round(UNIT_DEG / world.grid.resolution)))
    block = (np.arange(rows)[:, None] // per_block) * (cols // per_block + 1) + np.arange(cols)[None] // per_block
    _, ids = np.unique(block[world.land], return_inverse=True)
    units = np.full(world.grid.shape, NODATA, dtype=np.uint16)
    units[world.land] = ids + 1
    return units


def _shares(rng: np.random.Generator) -> list[int]:
    count = int(rng.integers(1, 4))
    if count == 1:
        return [100]
    raw = np.sort(rng.dirichlet(np.full(count, 2.0)))[::-1]
    shares = np.maximum(5, np.round(raw * 100)).astype(int)
    shares[0] += 100 - shares.sum()
    return shares.tolist()


def _texture(sand: np.ndarray, clay: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer sand, silt, clay (%) summing to 100 on every row."""
    sand, clay = np.clip(sand, 3, 92), np.clip(clay, 3, 65)
    scale = np.minimum(1.0, 97.0 / (sand + clay))
    sand, clay = np.round(sand * scale).astype(int), np.round(clay * scale).astype(int)
    return sand, 100 - sand - clay, clay


def layers_table(units: np.ndarray, world: StaticWorld, seed: int) -> pd.DataFrame:
    """HWSD2_LAYERS rows: sandier, more alkaline and poorer in carbon where dry; clay rising with depth."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7300]))
    valid = units != NODATA
    count = np.bincount(units[valid], minlength=units[valid].max() + 1).astype(float)

    def unit_mean(field: np.ndarray) -> np.ndarray:
        return np.bincount(units[valid], weights=field[valid], minlength=count.size) / np.maximum(count, 1)

    dryness = np.clip(1.0 - unit_mean(world.normals.precip) / 3.0, 0.0, 1.0)
    cold = np.clip((15.0 - unit_mean(world.normals.tmean)) / 25.0, 0.2, 1.0)
    sand0 = 25 + 45 * dryness + 8 * rng.standard_normal(count.size)
    clay0 = 32 - 17 * dryness + 6 * rng.standard_normal(count.size)
    sequences = [(unit, sequence, share) for unit in range(1, count.size)
                 for sequence, share in enumerate(_shares(rng), start=1)]
    unit, sequence, share = (np.array(column) for column in zip(*sequences))
    sand = sand0[unit] + 6 * rng.standard_normal(unit.size)
    clay = clay0[unit] + 5 * rng.standard_normal(unit.size)
    k = np.tile(np.arange(len(LAYERS)), unit.size)  # one row per sequence and layer
    row = np.repeat(np.arange(unit.size), len(LAYERS))
    unit_of = unit[row]
    s, si, c = _texture(sand[row] - 1.0 * k, clay[row] + 1.5 * k)
    noise = rng.standard_normal((3, k.size))
    carbon = (0.4 + 2.5 * (1 - dryness[unit_of]) * cold[unit_of]) * np.exp(-0.45 * k)
    table = pd.DataFrame({
        "ID": np.arange(1, k.size + 1), "HWSD2_SMU_ID": unit_of, "LAYER": np.array([name for name, _, _ in LAYERS])[k],
        "SEQUENCE": sequence[row], "SHARE": share[row],
        "TOPDEP": np.array([top for _, top, _ in LAYERS])[k], "BOTDEP": np.array([bottom for _, _, bottom in LAYERS])[k],
        "COARSE": np.clip(np.round(8 + 6 * noise[0]), 0, 60).astype(int), "SAND": s, "SILT": si, "CLAY": c,
        "BULK": np.round(1.2 + 0.03 * k + 0.25 * s / 100 + 0.03 * noise[1], 2),
        "ORG_CARBON": np.round(np.maximum(0.05, carbon), 2),
        "PH_WATER": np.round(5.0 + 3.0 * dryness[unit_of] + 0.3 * noise[2], 1),
    }, columns=COLUMNS)
    eligible = np.flatnonzero((table["SEQUENCE"] > 1).to_numpy() | (k >= 3))
    missing = eligible[rng.random(eligible.size) < MISSING_SHARE]
    if missing.size == 0 and eligible.size:
        missing = eligible[-1:]
    table.loc[missing, PROPERTIES] = MISSING
    return table


def write_hwsd(root: Path, world: StaticWorld, seed: int) -> list[str]:
    units = mapping_units(world)
    write_ehdr(root / RASTER_FOLDER, RASTER_STEM, units, world.grid, NODATA)
    write_text(root / LAYERS_FILE, layers_table(units, world, seed).to_csv(index=False))
    return [f"{RASTER_FOLDER}/{RASTER_STEM}.bil", f"{RASTER_FOLDER}/{RASTER_STEM}.hdr", LAYERS_FILE]
