"""Atomic writing of an output dataset (NetCDF or zarr, local or s3://) by the predictions writer's rules."""

from __future__ import annotations

import xarray as xr

from stefaland.errors import StefaLandError
from stefaland.report import predictions as contract


def write_dataset(dataset: xr.Dataset, url: str) -> str:
    """Local: temp + rename; S3 NetCDF: one PUT; S3 zarr: flagged incomplete until its last write."""
    if url.endswith(".zarr"):
        contract._write_zarr(dataset, url)
    elif url.endswith((".nc", ".nc4")):
        contract._write_netcdf(dataset, url)
    else:
        raise StefaLandError(f"{url}: --out must end in .nc or .zarr")
    return url
