"""Small DESIGN.md-conformant stores for the pretraining tests (until the lead's build fixture lands).

The signals are smooth and tied together across variables and groups — temperatures share a
seasonal cycle, humidity follows rain, soil follows terrain and climate — so a masked variable can
be reconstructed from the visible ones and a model that learns beats the predict-the-mean baseline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

DYNAMIC = [("prcp", "climate", "mm/day"), ("tmax", "climate", "degC"), ("tmin", "climate", "degC"),
           ("srad", "climate", "W/m2"), ("rh", "climate", "%")]
STATIC = [("elev_mean", "terrain"), ("slope_mean", "terrain"), ("aridity", "climate"), ("p_mean", "climate"),
          ("sand_frac", "soil"), ("clay_frac", "soil"), ("geol_permeability", "geology"),
          ("lai_max", "vegetation"), ("area", ""), ("frac_forest", "")]
NEVER_MASK = {"area"}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], width: int) -> np.ndarray:
    """Noise smoothed over ``width`` days along the last axis, unit variance."""
    raw = rng.standard_normal((shape[0], shape[1] + width))
    kernel = np.hanning(width)
    kernel /= kernel.sum()
    out = np.stack([np.convolve(row, kernel, mode="valid")[: shape[1]] for row in raw])
    return out / out.std()


def synthetic_arrays(n_sites: int, n_days: int, seed: int = 0, missing: float = 0.02):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_sites, 3))  # latent site factors: altitude, dryness, texture
    static = np.stack([
        800 + 400 * z[:, 0], 5 + 2 * z[:, 0] + 0.3 * rng.standard_normal(n_sites),
        1.0 + 0.4 * z[:, 1], 3 - 1.2 * z[:, 1] + 0.2 * z[:, 0],
        0.4 + 0.1 * z[:, 2] + 0.05 * z[:, 1], 0.25 - 0.08 * z[:, 2] + 0.04 * z[:, 0],
        -13 + 1.0 * z[:, 2] - 0.5 * z[:, 0], 4 - 1.5 * z[:, 1] + 0.3 * z[:, 2],
        np.exp(5 + rng.standard_normal(n_sites)), 0.5 - 0.2 * z[:, 1] + 0.1 * z[:, 0],
    ], axis=1).astype(np.float32)  # (site, svar)
    day = np.arange(n_days)
    phase = 2 * np.pi * (day[None, :] / 365.25) + rng.uniform(-0.3, 0.3, (n_sites, 1))  # (site, time)
    weather = _smooth_noise(rng, (n_sites, n_days), 15)  # shared synoptic signal
    wet = np.clip(1 + 0.8 * weather + 0.5 * np.sin(phase), 0, None) * (3 - 1.2 * z[:, 1:2])
    tmax = 15 - 6 * z[:, 0:1] + (10 + 2 * z[:, 1:2]) * np.sin(phase - 1.5) - 2 * weather
    tmin = tmax - 9 - 3 * z[:, 1:2] + 1.5 * weather
    srad = 200 + 80 * np.sin(phase - 1.5) - 40 * weather + 20 * z[:, 1:2]
    rh = 60 - 12 * z[:, 1:2] + 15 * weather
    dynamic = np.stack([wet, tmax, tmin, srad, rh], axis=-1).astype(np.float32)  # (site, time, dvar)
    dynamic += 0.05 * dynamic.std(axis=(0, 1)) * rng.standard_normal(dynamic.shape).astype(np.float32)
    dynamic[rng.random(dynamic.shape) < missing] = np.nan
    static[rng.random(static.shape) < missing] = np.nan
    return dynamic, static


def write_store(url: str, n_sites: int = 24, n_days: int = 400, shard_size: int = 8, seed: int = 0,
                missing: float = 0.02, complete: bool = True) -> str:
    """Write a store of ``n_sites`` sites to ``url`` (zarr v3, one chunk per shard of sites).

    Written shard by shard (skeleton, shards, statistics, completeness flag last) like the real
    build, so the benchmark can write thousands of sites without holding them in memory.
    """
    import dask.array as da
    import zarr

    kwargs = {}
    if url.startswith("s3://"):
        from stefaland.fileio import storage_options_for
        kwargs["storage_options"] = storage_options_for(url)
    n_dvar, n_svar = len(DYNAMIC), len(STATIC)
    dataset = xr.Dataset(
        {
            "dynamic": (("site", "time", "dvar"),
                        da.full((n_sites, n_days, n_dvar), np.nan, dtype=np.float32, chunks=(shard_size, n_days, n_dvar))),
            "static": (("site", "svar"), da.full((n_sites, n_svar), np.nan, dtype=np.float32, chunks=(shard_size, n_svar))),
            "dynamic_mean": ("dvar", np.zeros(n_dvar)), "dynamic_std": ("dvar", np.ones(n_dvar)),
            "static_mean": ("svar", np.zeros(n_svar)), "static_std": ("svar", np.ones(n_svar)),
        },
        coords={
            "site": np.asarray([f"site{i:05d}" for i in range(n_sites)], dtype=object),
            "time": pd.date_range("2000-01-01", periods=n_days, freq="D"),
            "dvar": np.asarray([d[0] for d in DYNAMIC], dtype=object),
            "dvar_group": ("dvar", np.asarray([d[1] for d in DYNAMIC], dtype=object)),
            "dvar_units": ("dvar", np.asarray([d[2] for d in DYNAMIC], dtype=object)),
            "svar": np.asarray([s[0] for s in STATIC], dtype=object),
            "svar_group": ("svar", np.asarray([s[1] for s in STATIC], dtype=object)),
            "svar_never_mask": ("svar", np.asarray([s[0] in NEVER_MASK for s in STATIC])),
            "lat": ("site", np.linspace(30, 50, n_sites)), "lon": ("site", np.linspace(-120, -70, n_sites)),
            "region": ("site", np.asarray(["r1"] * n_sites, dtype=object)),
        },
        attrs={"stefaland_complete": False, "shard_size": shard_size,
               "provenance": {"dataset": "synthetic-test", "catalog": "tests/_stores.py", "stefaland_version": "test"}},
    )
    encoding = {"dynamic": {"chunks": (shard_size, n_days, n_dvar)}, "static": {"chunks": (shard_size, n_svar)}}
    dataset.to_zarr(url, mode="w", compute=False, encoding=encoding, consolidated=False, zarr_format=3, **kwargs)
    group = zarr.open_group(url, mode="r+", **kwargs)
    sums = {"dynamic": np.zeros((3, n_dvar)), "static": np.zeros((3, n_svar))}  # count, sum, sum of squares
    for shard, start in enumerate(range(0, n_sites, shard_size)):
        stop = min(start + shard_size, n_sites)
        dynamic, static = synthetic_arrays(stop - start, n_days, seed * 100_003 + shard, missing)
        group["dynamic"][start:stop] = dynamic
        group["static"][start:stop] = static
        for name, values in (("dynamic", dynamic.reshape(-1, n_dvar)), ("static", static)):
            present = ~np.isnan(values)
            clean = np.where(present, values, 0.0).astype(np.float64)
            sums[name] += np.stack([present.sum(0), clean.sum(0), (clean**2).sum(0)])
    for name, (count, total, squares) in sums.items():
        mean = total / count
        group[f"{name}_mean"][:] = mean
        group[f"{name}_std"][:] = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    group.attrs["stefaland_complete"] = complete
    return url
