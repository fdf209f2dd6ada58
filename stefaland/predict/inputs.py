"""Inputs for new sites: a temporary store from a catalog, checked against the run's record.

Why build a store: the catalog's readers, unit conversions and site matching are exactly the ones
the training store went through (``stefaland data build``), so a site is harmonised the same way
whether or not it has a streamflow gauge. The inputs are then z-scored with the **run's**
statistics: the new store's own mean and std describe other sites and must not leak in.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from stefaland import fileio
from stefaland.bounds import bounds_from_json
from stefaland.errors import StefaLandError
from stefaland.finetune.data import SiteData, Variables


def _names(dataset: xr.Dataset, dim: str) -> list[str]:
    return [str(v) for v in dataset[dim].values] if dim in dataset.coords else []


def _units(dataset: xr.Dataset, dim: str) -> list[str]:
    name = f"{dim}_units"
    return [str(v or "") for v in dataset[name].values] if name in dataset.coords else [""] * len(_names(dataset, dim))


def check_inputs(dataset: xr.Dataset, record: dict, catalog: str) -> Variables:
    """The run's input variables located in ``dataset``; a missing one or other units is one clear line."""
    v = record["variables"]
    index = {}
    for kind, dim in (("dynamic", "dvar"), ("static", "svar")):
        have, units = _names(dataset, dim), _units(dataset, dim)
        rows = []
        for name, unit in zip(v[kind], v.get(f"{kind}_units") or [""] * len(v[kind])):
            if name not in have:
                raise StefaLandError(
                    f"{catalog}: {kind} variable {name!r} the run was trained on is missing from the catalog "
                    f"(it provides: {', '.join(have) or 'none'})"
                )
            got = units[have.index(name)]
            if unit and got and got != unit:
                raise StefaLandError(
                    f"{catalog}: {kind} variable {name!r} has units {got!r} but the run was trained with {unit!r}"
                )
            rows.append(have.index(name))
        index[kind] = np.asarray(rows, dtype=np.int64)
    hide = list(v.get("hide") or []) + ([v["target"]] if v.get("static_target") and v["target"] in v["static"] else [])
    return Variables(
        list(v["dynamic"]), list(v["static"]), v["target"], index["dynamic"], index["static"], -1,
        np.asarray(v["dynamic_mean"], np.float64), _std(v["dynamic_std"]),
        np.asarray(v["static_mean"], np.float64), _std(v["static_std"]),
        float(v["target_mean"]), float(v["target_std"]), v.get("target_units", ""), bool(v.get("static_target")),
        [v["dynamic"].index(n) for n in hide if n in v["dynamic"]], [v["static"].index(n) for n in hide if n in v["static"]],
        bounds_from_json(v.get("target_bounds")),
    )


def _std(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values) & (values > 0), values, 1.0)


def read_site_list(url: str) -> list[str]:
    """One site id per line; blank lines and ``#`` comments ignored; ids kept as written (zero-padded)."""
    if not fileio.exists(url):
        raise StefaLandError(f"{url}: site list not found")
    lines = fileio.read_bytes(url).decode().splitlines()
    sites = [line.split("#", 1)[0].strip() for line in lines]
    sites = [s for s in sites if s]
    if not sites:
        raise StefaLandError(f"{url}: site list is empty")
    return sites


def select_rows(dataset: xr.Dataset, sites: list[str] | None, source: str) -> np.ndarray:
    have = [str(s) for s in dataset["site"].values]
    if sites is None:
        return np.arange(len(have))
    position = {s: i for i, s in enumerate(have)}
    missing = [s for s in sites if s not in position]
    if missing:
        raise StefaLandError(
            f"site {missing[0]!r} (from {source}) is not among the catalog's sites with complete inputs "
            f"({len(have)} sites, e.g. {', '.join(have[:3])})"
        )
    return np.asarray([position[s] for s in sites], dtype=np.int64)


def site_data(dataset: xr.Dataset, rows: np.ndarray, variables: Variables, with_obs: bool) -> SiteData:
    """Z-scored inputs with the run's statistics; ``target`` holds observations only if asked (else NaN)."""
    part = dataset.isel(site=rows)
    dynamic = part["dynamic"].values[..., variables.dynamic_index].astype(np.float64)  # (n, T, n_dyn)
    static = part["static"].values[..., variables.static_index].astype(np.float64)  # (n, n_static)
    dynamic[..., variables.hidden_dynamic] = np.nan
    static[..., variables.hidden_static] = np.nan
    n, n_time = dynamic.shape[:2]
    target = np.full((n,) if variables.static_target else (n, n_time), np.nan)
    if with_obs:
        if variables.static_target and variables.target in _names(part, "svar"):
            target = part["static"].values[:, _names(part, "svar").index(variables.target)].astype(np.float64)
        elif not variables.static_target and "target" in part and variables.target in _names(part, "tvar"):
            target = part["target"].values[..., _names(part, "tvar").index(variables.target)].astype(np.float64)
    return SiteData(
        sites=np.asarray([str(s) for s in part["site"].values]),
        times=pd.DatetimeIndex(part["time"].values),
        dynamic=((dynamic - variables.dynamic_mean) / variables.dynamic_std).astype(np.float32),
        static=((static - variables.static_mean) / variables.static_std).astype(np.float32),
        target=target.astype(np.float32),  # raw units (not z-scored): only ever written back as obs
        lat=np.asarray(part["lat"].values, np.float64) if "lat" in part.coords else np.full(n, np.nan),
        lon=np.asarray(part["lon"].values, np.float64) if "lon" in part.coords else np.full(n, np.nan),
        history=0,
    )
