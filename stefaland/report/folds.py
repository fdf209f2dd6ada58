"""Join the per-fold predictions of a scheme so every held-out site is scored exactly once.

A cross-validation result is only meaningful when the folds tile the site set: a missing fold
silently shrinks the sample the median is taken over, and a site scored twice weighs double. Both
are errors here, naming the model, the fold or site, and the files involved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from stefaland.errors import StefaLandError
from stefaland.report.tasks import Scheme, Task

log = logging.getLogger("stefaland.report")


@dataclass
class JoinedRun:
    """All folds of one model (and target variable) for one scheme, concatenated along ``site``."""

    model: str
    variable: str
    units: str
    scheme: Scheme
    dataset: xr.Dataset  # obs, sim, coord fold (site,), optional lat/lon
    sources: list[str] = field(default_factory=list)
    verification: dict[str, str] = field(default_factory=dict)  # source -> how it was verified (report.verify)


def group_by_run(datasets: list[xr.Dataset], scheme: Scheme, task: Task) -> dict[tuple[str, str], dict[str, xr.Dataset]]:
    """``{(model, variable): {fold: dataset}}`` for the files of ``scheme``; one file per (model, fold)."""
    groups: dict[tuple[str, str], dict[str, xr.Dataset]] = {}
    for dataset in datasets:
        attrs = dataset.attrs
        if attrs["task"] != scheme.task or attrs["split"] != scheme.split:
            continue
        key = (attrs["model"], attrs["variable"] or task.target)
        fold = attrs["fold"]
        if fold not in scheme.folds:
            raise StefaLandError(f"{attrs['source']}: fold {fold!r} is not a fold of {scheme.task}/{scheme.split} "
                                 f"(folds: {', '.join(scheme.folds)})")
        folds = groups.setdefault(key, {})
        if fold in folds:
            raise StefaLandError(f"model {key[0]!r}, {scheme.task}/{scheme.split} fold {fold}: two files "
                                 f"{folds[fold].attrs['source']} and {attrs['source']}; keep one per (model, fold) "
                                 "or give repeated runs distinct model names")
        folds[fold] = dataset
    return groups


def join_folds(model: str, variable: str, folds: dict[str, xr.Dataset], scheme: Scheme, task: Task) -> JoinedRun:
    """Concatenate the folds of one run after checking they tile the held-out sites."""
    missing = [f for f in scheme.folds if f not in folds]
    if missing:
        found = ", ".join(f for f in scheme.folds if f in folds)
        raise StefaLandError(f"model {model!r}, {scheme.task}/{scheme.split}: fold(s) {', '.join(missing)} missing "
                             f"(found folds {found}; {len(scheme.folds)} expected)")
    ordered = [folds[f] for f in scheme.folds]
    seen: dict[str, str] = {}
    for fold, dataset in zip(scheme.folds, ordered):
        for site in dataset["site"].values:
            if site in seen:
                raise StefaLandError(f"model {model!r}, {scheme.task}/{scheme.split}: site {site} is held out in "
                                     f"fold {seen[site]} and fold {fold} ({dataset.attrs['source']})")
            seen[site] = fold
    units = {d.attrs["units"] for d in ordered}
    if len(units) > 1:
        raise StefaLandError(f"model {model!r}, {scheme.task}/{scheme.split}: folds disagree on units "
                             f"({', '.join(sorted(units))})")
    parts = [_prepare(fold, d, task) for fold, d in zip(scheme.folds, ordered)]
    has_coords = all("lat" in p.coords and "lon" in p.coords for p in parts)
    if not has_coords:
        parts = [p.drop_vars([c for c in ("lat", "lon") if c in p.coords]) for p in parts]
    joined = xr.concat(parts, dim="site", join="outer", data_vars="all", coords="different", compat="equals")
    return JoinedRun(model, variable, units.pop(), scheme, joined, [d.attrs["source"] for d in ordered],
                     {d.attrs["source"]: str(d.attrs.get("verified", "")) for d in ordered})


def _prepare(fold: str, dataset: xr.Dataset, task: Task) -> xr.Dataset:
    keep = dataset[["obs", "sim"]]
    if task.static and "time" in keep.dims:
        if keep.sizes["time"] != 1:
            raise StefaLandError(f"{dataset.attrs['source']}: task {task.name} is a static target; expected dims "
                                 f"(site,) or a time axis of length 1, got {keep.sizes['time']} steps")
        keep = keep.isel(time=0, drop=True)
    if not task.static and "time" not in keep.dims:
        raise StefaLandError(f"{dataset.attrs['source']}: task {task.name} needs dims (site, time); got (site,)")
    keep = keep.assign_coords(fold=("site", np.full(keep.sizes["site"], fold, dtype=object)))
    keep.attrs = {}
    return keep
