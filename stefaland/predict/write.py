"""Atomic writing of an output dataset (NetCDF or zarr, local or s3://) by the predictions writer's rules.

The output is claimed first (:func:`stefaland.outputs.claim_output`, kind ``predict``): a file or
folder at ``url`` that StefaLand's ``predict`` did not write is refused, a previous prediction is
replaced only with ``force``, and a second writer to the same path is turned away by the lock.
A single file cannot hold the marker folder, so the kind travels as the dataset's global
attribute ``stefaland_output = "predict"`` (NetCDF and zarr alike). There is no run manifest beside
such a file, so the writer also records the sha256 of its data (``stefaland_data_sha256``), which
``report`` checks; a write killed half-way leaves no temp file for good (stefaland.run.atomic_file).
"""

from __future__ import annotations

import xarray as xr

from stefaland.errors import StefaLandError
from stefaland.outputs import KIND_ATTR, claim_output
from stefaland.run import predictions as contract

KIND = "predict"


def check_output(url: str, force: bool = False) -> None:
    """Refuse ``url`` now (before any compute) if writing it later would be refused."""
    _check_suffix(url)
    claim_output(url, KIND, force=force).release()


def _check_suffix(url: str) -> None:
    if not url.endswith((".zarr", ".nc", ".nc4")):
        raise StefaLandError(f"{url}: --out must end in .nc or .zarr")


def write_dataset(dataset: xr.Dataset, url: str, force: bool = False) -> str:
    """Local: temp + rename; S3 NetCDF: one PUT; S3 zarr: flagged incomplete until its last write."""
    _check_suffix(url)
    with claim_output(url, KIND, force=force):
        dataset = dataset.assign_attrs({KIND_ATTR: KIND})
        if url.endswith(".zarr"):
            contract._write_zarr(dataset, url)
        else:
            contract._write_netcdf(dataset, url)
    return url
