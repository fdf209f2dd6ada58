"""Variables that hold exactly the same values as another: almost always a product's quirk or a
catalog mistake, never two inputs.

Why: CAMELS' NLDAS basin-mean files carry ``Tmax(C)`` and ``Tmin(C)`` with identical values (a daily
mean under both names). A model fed both learns nothing from the second, and anything computed from
the diurnal range (Hargreaves PET, HBV's mean temperature) is silently wrong. ``catalog validate``
and ``data build`` say so in a warning naming both variables; it is not an error, since a store
built from such a product is still usable once you know.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import xarray as xr

#: Fewer finite values than this, or a constant series, proves nothing about two variables.
MIN_VALUES = 10
#: Pixels of one patch (stefaland.gridded.patches, ``<variable>_r<ii>c<jj>``): neighbours in a coarse
#: raster share a cell, so equal pixels are expected, not a mistake.
_PIXEL = re.compile(r"^(.*)_r\d+c\d+$")


def _same_patch(a: str, b: str) -> bool:
    pa, pb = _PIXEL.match(a), _PIXEL.match(b)
    return pa is not None and pb is not None and pa.group(1) == pb.group(1)


def identical_pairs(arrays: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """Pairs (in the given order) of variables whose values are equal everywhere, NaN where the other is
    NaN, with at least :data:`MIN_VALUES` finite values and more than one distinct value."""
    usable = {}
    for name, values in arrays.items():
        array = np.asarray(values, dtype=np.float64)
        finite = array[np.isfinite(array)]
        if finite.size >= MIN_VALUES and np.ptp(finite) > 0:
            usable[name] = array
    names = list(usable)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
            if not _same_patch(a, b) and usable[a].shape == usable[b].shape and np.array_equal(usable[a], usable[b], equal_nan=True)]


def describe(pairs: list[tuple[str, str]], where: str = "") -> list[str]:
    prefix = f"{where}: " if where else ""
    return [f"{prefix}{a} is identical to {b} (the same value on every day and site read); "
            "one of them is probably not what its name says" for a, b in pairs]


def store_warnings(dataset: xr.Dataset, max_sites: int = 64) -> list[str]:
    """Identical dynamic variables (over the first ``max_sites`` sites) and static attributes (all
    sites) of a built store."""
    messages: list[str] = []
    n = min(int(dataset.sizes.get("site", 0)), max_sites)
    if "dynamic" in dataset and n:
        values = np.asarray(dataset["dynamic"].isel(site=slice(0, n)).values)  # (site, time, dvar)
        names = [str(v) for v in dataset["dvar"].values]
        messages += describe(identical_pairs({name: values[..., i] for i, name in enumerate(names)}),
                             "dynamic variables")
    if "static" in dataset:
        values = np.asarray(dataset["static"].values)  # (site, svar)
        names = [str(v) for v in dataset["svar"].values]
        messages += describe(identical_pairs({name: values[:, i] for i, name in enumerate(names)}),
                             "static attributes")
    return messages
