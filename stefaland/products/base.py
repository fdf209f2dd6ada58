"""What every gridded product driver shares: a lazy Dataset opened once, named after its catalog source.

The build asks a source for its data more than once (time bounds, then shard windows), and opening
a product can be costly (thousands of daily files, a lookup table to read), so each driver opens
it once in ``_open`` and this base keeps it.
"""

from __future__ import annotations

import xarray as xr
from intake.source.base import DataSource, Schema


class LazyProductSource(DataSource):
    """An intake source whose ``_open`` returns the product as a lazy (dask-backed) Dataset.

    A subclass sets ``name``, takes its own arguments (passing these two on) and implements
    ``_open()``; :meth:`to_dask` calls it once and keeps the Dataset until the source is closed.

    Parameters
    ----------
    storage_options : dict, optional
        fsspec options for remote files.
    metadata : dict, optional
        The catalog entry's metadata; its ``source_name`` names the source in errors.
    """

    container = "xarray"
    version = "1"
    partition_access = False

    def __init__(self, storage_options: dict | None = None, metadata: dict | None = None) -> None:
        super().__init__(storage_options=storage_options, metadata=metadata)
        self._ds: xr.Dataset | None = None

    def _label(self) -> str:
        """The catalog source's name for error messages (the driver's name outside a catalog)."""
        return str((self.metadata or {}).get("source_name", self.name))

    def _open(self) -> xr.Dataset:
        raise NotImplementedError

    def _get_schema(self) -> Schema:
        ds = self.to_dask()
        return Schema(datashape=None, dtype=None, shape=None, npartitions=None,
                      extra_metadata={"dims": dict(ds.sizes), "data_vars": list(map(str, ds.data_vars))})

    def to_dask(self) -> xr.Dataset:
        """The lazy Dataset, opened once per source (the build asks for it more than once)."""
        if self._ds is None:
            self._ds = self._open()
        return self._ds

    def read(self) -> xr.Dataset:
        """The whole product, loaded into memory."""
        return self.to_dask().load()

    def _close(self) -> None:
        self._ds = None
