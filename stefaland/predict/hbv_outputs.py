"""Interpretable outputs of the HBV hybrids: fluxes, states and learned parameters per site.

Why: a physics-informed model is worth its cost because its internals mean something — ET,
recharge, snowpack and soil water for a basin that has no gauge. The period is cut into the same
overlapping windows as the streamflow prediction (:class:`~stefaland.finetune.data.PredictionWindows`),
so each day's fluxes come from the window that also gave its streamflow. Parameters are reported
per site as the mean over HBV's ``nmul`` components of the value each window settles on (the last
day's, as HBV uses for its static parameters), averaged over windows and then over the fold models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import xarray as xr

from stefaland.finetune.data import PredictionWindows, SiteData, padded_inputs

if TYPE_CHECKING:
    from stefaland.finetune.models.hbv_hybrid import HBVHybrid

UNITS = {"snowpack": "mm", "meltwater": "mm", "sm": "mm", "suz": "mm", "slz": "mm"}
LONG_NAMES = {
    "et": "actual evapotranspiration", "recharge": "recharge from the soil to the upper zone",
    "snowpack": "snow water equivalent (state)", "sm": "soil water (state)", "snow": "snowfall",
    "melt": "snowmelt", "rain": "rainfall", "streamflow": "simulated streamflow (routed)",
    "suz": "upper groundwater zone (state)", "slz": "lower groundwater zone (state)",
    "percolation": "percolation to the lower zone", "pet": "potential evapotranspiration",
}


@torch.no_grad()
def hbv_outputs(model: HBVHybrid, data: SiteData, seq_len: int, overlap: int,
                batch_size: int) -> dict[str, np.ndarray]:
    """``{series: (n, T) mm/day or mm, 'param:<name>': (n,)}`` for one fold model."""
    model.eval()
    n_sites, n_test = data.dynamic.shape[0], data.dynamic.shape[1] - data.history
    windows = PredictionWindows(n_test, seq_len, int(model.warmup), overlap)
    dynamic, _ = padded_inputs(data, windows.pad)  # (n, pad + n_test, n_dyn)
    starts = windows.starts()
    offsets = np.arange(windows.length)
    result: dict[str, np.ndarray] = {}
    params: dict[str, np.ndarray] = {}
    items = [(site, start) for site in range(n_sites) for start in starts]
    for first in range(0, len(items), batch_size):
        chunk = np.asarray(items[first:first + batch_size])  # (B, 2)
        sites, window_starts = chunk[:, 0], chunk[:, 1]
        x = torch.from_numpy(dynamic[sites[:, None], window_starts[:, None] + offsets[None, :]])  # (B, L, n_dyn)
        s = torch.from_numpy(data.static[sites])  # (B, n_static)
        raw = model.network(x, s)  # (B, L, 14·nmul + 2)
        p, t, e = model.physical_forcings(x)  # (L, B) each
        output = model.hbv(p, t, e, raw.transpose(0, 1))
        series = {k: v.float().numpy() for k, v in output.series().items()}  # (seq_len, B) each
        last = {k: v[-1].mean(-1).float().numpy() for k, v in output.parameters.physical.items()}  # (B,)
        last.update({k: v.float().numpy() for k, v in output.parameters.routing.items()})
        for row, (site, start) in enumerate(zip(sites, window_starts)):
            day0 = start + windows.warmup - windows.pad
            low = max(day0 + overlap, 0)
            for name, values in series.items():
                result.setdefault(name, np.full((n_sites, n_test), np.nan, np.float32))[site, low:day0 + seq_len] = \
                    values[low - day0:, row]
            for name, values in last.items():
                params.setdefault(name, np.zeros(n_sites))[site] += values[row] / len(starts)
    return {**result, **{f"param:{k}": v for k, v in params.items()}}


def hbv_dataset(members: dict[str, dict[str, np.ndarray]], data: SiteData, record: dict) -> xr.Dataset:
    """Ensemble mean over the fold models of every flux, state and parameter, as one dataset."""
    names = list(next(iter(members.values())))
    series = {k: np.mean([m[k] for m in members.values()], axis=0) for k in names if not k.startswith("param:")}
    parameters = [k[len("param:"):] for k in names if k.startswith("param:")]
    table = np.stack([np.mean([m[f"param:{k}"] for m in members.values()], axis=0) for k in parameters], axis=1)
    sites = np.asarray([str(s) for s in data.sites], dtype=object)
    variables = {name: (("site", "time"), values.astype(np.float32),
                        {"units": UNITS.get(name, "mm/day"), "long_name": LONG_NAMES.get(name, name)})
                 for name, values in series.items()}
    variables["parameters"] = (("site", "parameter"), table.astype(np.float32),
                               {"long_name": "learned HBV parameters (mean over components, windows and folds)"})
    return xr.Dataset(
        variables,
        coords={"site": sites, "time": data.times[data.history:], "parameter": np.asarray(parameters, dtype=object),
                "lat": ("site", data.lat), "lon": ("site", data.lon)},
        attrs={"model": record["model"], "members": ",".join(members), "task": record["task"]},
    )
