"""A small DESIGN.md-conformant store for the finetuning tests, with a learnable rainfall-runoff link.

Streamflow comes from a linear reservoir whose runoff coefficient and recession constant are
functions of two static attributes, so a model that reads the attributes can predict basins it
never saw (the PUB setting), and one that ignores them cannot do as well.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

DVARS = ["prcp", "tmax", "tmin", "pet"]
SVARS = ["aridity", "slope_mean", "noise_attr", "p_mean"]


def write_finetune_store(path: Path, n_sites: int = 16, start: str = "1990-01-01", days: int = 730,
                         seed: int = 0, n_pub: int = 4, shard_size: int = 8) -> str:
    rng = np.random.default_rng(seed)
    time = pd.date_range(start, periods=days, freq="D")
    doy = time.day_of_year.to_numpy()
    static = rng.uniform(-1.0, 1.0, (n_sites, len(SVARS)))  # (n, s); p_mean is filled in below
    season = 1.0 + 0.5 * np.sin(2 * np.pi * doy / 365.25)  # (T,)
    wet = rng.random((n_sites, days)) < 0.35
    wetness = np.exp(0.5 * rng.uniform(-1.0, 1.0, n_sites))[:, None]  # some basins get more rain
    prcp = np.where(wet, rng.gamma(0.8, 8.0, (n_sites, days)) * season * wetness, 0.0)  # (n, T) mm/day
    static[:, SVARS.index("p_mean")] = prcp.mean(axis=1)  # a static attribute the forcings reveal
    tmean = 10 + 12 * np.sin(2 * np.pi * (doy - 100) / 365.25) + rng.normal(0, 2, (n_sites, days))
    tmax, tmin = tmean + 5, tmean - 5
    pet = np.clip(2.5 + 0.15 * tmean, 0.0, None)
    runoff_coef = 1 / (1 + np.exp(-2.0 * static[:, 0]))  # wetter basins (low "aridity") give more
    recession = 0.05 + 0.3 / (1 + np.exp(-2.5 * static[:, 1]))  # steeper basins drain faster
    storage_mm = np.zeros(n_sites)
    flow = np.empty((n_sites, days))
    for t in range(days):
        storage_mm += runoff_coef * prcp[:, t]
        flow[:, t] = recession * storage_mm
        storage_mm -= flow[:, t]
    flow[rng.random(flow.shape) < 0.02] = np.nan  # gaps, as gauges have
    dynamic = np.stack([prcp, tmax, tmin, pet], axis=-1).astype(np.float32)  # (n, T, 4)
    target = flow[..., None].astype(np.float32)  # (n, T, 1)
    sites = np.asarray([f"{i:08d}" for i in range(n_sites)], dtype=object)
    folds_pub = np.arange(n_sites) % n_pub + 1  # 1-based, as MHPI number PUB folds
    region = np.asarray([f"{i % 3 + 1:02d}" for i in range(n_sites)], dtype=object)
    folds_pur = np.arange(n_sites) % 3 + 1
    dataset = xr.Dataset(
        {
            "dynamic": (("site", "time", "dvar"), dynamic),
            "target": (("site", "time", "tvar"), target),
            "static": (("site", "svar"), static.astype(np.float32)),
            "dynamic_mean": (("dvar",), np.nanmean(dynamic, axis=(0, 1)).astype(np.float64)),
            "dynamic_std": (("dvar",), np.nanstd(dynamic, axis=(0, 1)).astype(np.float64)),
            "target_mean": (("tvar",), np.nanmean(target, axis=(0, 1)).astype(np.float64)),
            "target_std": (("tvar",), np.nanstd(target, axis=(0, 1)).astype(np.float64)),
            "static_mean": (("svar",), static.mean(0)),
            "static_std": (("svar",), static.std(0)),
        },
        coords={
            "site": sites, "time": time, "dvar": np.asarray(DVARS, dtype=object),
            "tvar": np.asarray(["streamflow"], dtype=object), "svar": np.asarray(SVARS, dtype=object),
            "lat": ("site", rng.uniform(30, 48, n_sites)), "lon": ("site", rng.uniform(-120, -70, n_sites)),
            "region": ("site", region),
            "fold_pub": ("site", folds_pub.astype(np.int16)), "fold_pur": ("site", folds_pur.astype(np.int16)),
            "dvar_units": ("dvar", np.asarray(["mm/day", "degC", "degC", "mm/day"], dtype=object)),
            "dvar_group": ("dvar", np.asarray(["climate"] * 4, dtype=object)),
            "tvar_units": ("tvar", np.asarray(["mm/day"], dtype=object)),
            "tvar_group": ("tvar", np.asarray([""], dtype=object)),
            "svar_units": ("svar", np.asarray(["1", "m/km", "1", "mm/day"], dtype=object)),
            "svar_group": ("svar", np.asarray(["climate", "terrain", "", "climate"], dtype=object)),
            "svar_never_mask": ("svar", np.zeros(len(SVARS), dtype=bool)),
        },
        attrs={"stefaland_complete": True, "shard_size": shard_size, "provenance": {"dataset": "finetune-test"}},
    )
    encoding = {
        "dynamic": {"chunks": (shard_size, days, len(DVARS))},
        "target": {"chunks": (shard_size, days, 1)},
        "static": {"chunks": (shard_size, len(SVARS))},
    }
    dataset.to_zarr(str(path), mode="w", encoding=encoding, consolidated=False, zarr_format=3)
    return str(path)
