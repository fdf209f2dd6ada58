"""Read any catalog source for a set of sites (and a time axis), whatever its driver.

``data build`` (:mod:`stefaland.assemble`) reads its shards through this module and ``catalog validate``
(:mod:`.inspect`) a sample of sites; it lives with the catalog, which the build imports and never the
other way round.

Our CAMELS drivers read only the files of the requested sites; xarray sources (zarr, NetCDF) are
opened lazily and sliced, so a shard costs only its own bytes; tables are reindexed by site id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import StefaLandError
from ..gridded.culling import compute_shard
from .spec import CatalogSpec, SourceSpec

log = logging.getLogger("stefaland.assemble")

# A gridded source is extracted a window of shards at a time: the window's sites are sorted
# spatially, cut into batches of ``shard_size`` and computed as one task per batch
# (``compute_shards``), then put back into store order. Larger windows read each grid chunk fewer
# times; the window's values (float64, ×2 while they are put back in order) stay under this.
GRIDDED_WINDOW_BYTES = 1 << 30
# ... unless the environment sets another bound: ``submit build`` gives its client pod a share of the
# pod's memory, so a 40-year build of day-per-file products reads each file in one window, once.
WINDOW_BYTES_ENV = "STEFALAND_GRIDDED_WINDOW_BYTES"
# A grid whose time chunks are shorter than this (day-per-file products) is extracted in batches of
# DAYS_PER_TIME_BATCH days (fewer on a cluster: two batches per worker thread at least) for all of a
# window's sites (see SourceReader._days_per_batch).
DAY_CHUNK_LIMIT = 32
DAYS_PER_TIME_BATCH = 366


def site_id_name(spec: SourceSpec, source) -> str:
    """The catalog's ``site_id``, else the driver's own id column (CAMELS: ``gauge_id``), else ``site``."""
    return spec.site_id or getattr(source, "site_id", None) or "site"


class SourceReader:
    """One catalog source, opened once, read shard by shard."""

    def __init__(self, catalog: CatalogSpec, spec: SourceSpec, sites: pd.DataFrame | None = None,
                 shard_size: int | None = None) -> None:
        self.spec = spec
        self.source = catalog.open(spec.name)
        self.site_id = site_id_name(spec, self.source)
        self.sites = sites  # the store's site table (lat, lon[, geometry]): gridded sources need it
        self.shard_size = shard_size  # gridded: one dask block per shard, so a shard computes only its sites
        self._lazy: xr.Dataset | pd.DataFrame | None = None
        self._grid: xr.Dataset | xr.DataArray | None = None

    def _data(self):
        if self._lazy is None and self.spec.vector is not None:
            self._lazy = self._vector(self.spec.vector)
        if self._lazy is None:
            data = self.source.to_dask()
            if self.spec.gridded is not None:
                data = self._extract(data)
            elif isinstance(data, xr.Dataset):
                data = self._site_dataset(data)
            elif hasattr(data, "compute") and not isinstance(data, pd.DataFrame):
                data = data.compute()
            if isinstance(data, pd.DataFrame):
                data = self._site_table(data)
            self._lazy = data
        return self._lazy

    def _extract(self, grid: xr.Dataset | xr.DataArray) -> xr.Dataset:
        """A gridded source becomes lazy site series (points, basin means or class fractions)."""
        from ..gridded.extract import extract_to_sites, gridded_options, source_patch

        if self.sites is None:
            raise StefaLandError(f"source {self.spec.name}: a gridded source needs the site table")
        method, classes = gridded_options(self.spec.gridded, self.spec.name)
        table = self.sites.reset_index()
        return extract_to_sites(grid, table, method, list(self.spec.grid_variables), classes, self.spec.name,
                                site_chunk=self.shard_size, patch=source_patch(self.spec.gridded, self.spec.name))

    def _vector(self, options: Mapping[str, Any]) -> xr.Dataset:
        """A polygon product becomes one value per site of the site table, computed once for all.

        ``options`` is the source's parsed ``metadata.vector``.
        """
        from ..gridded.vector import extract_vector

        if self.sites is None:
            raise StefaLandError(f"source {self.spec.name}: a vector source needs the site table")
        try:
            frame = self.source.read()
        except StefaLandError as exc:  # the driver names the file; the user also needs the catalog entry
            message = str(exc)
            raise StefaLandError(message if message.startswith("source ") else f"source {self.spec.name}: {message}") from exc
        return extract_vector(frame, self.sites.reset_index(), options, list(self.spec.grid_variables),
                              self.spec.name)

    def _site_dataset(self, data: xr.Dataset) -> xr.Dataset:
        name = self.site_id if self.site_id in data.dims or self.site_id in data.coords else "site"
        if name not in data.dims and name in data.coords:
            data = data.swap_dims({data[name].dims[0]: name})
        if name not in data.dims:
            raise StefaLandError(f"source {self.spec.name}: no site id dimension {self.site_id!r} (dims: {', '.join(map(str, data.dims))})")
        data = data.rename({name: "site"}) if name != "site" else data
        ids = pd.Index(_as_text(data["site"].values))
        if ids.has_duplicates:
            raise StefaLandError(f"source {self.spec.name}: duplicated site id {ids[ids.duplicated()][0]}")
        return data.assign_coords(site=ids.to_numpy(dtype=object))

    def _site_table(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.site_id not in frame.columns:
            raise StefaLandError(
                f"source {self.spec.name}: no site id column {self.site_id!r} (columns: {', '.join(map(str, frame.columns[:8]))})"
            )
        ids = frame[self.site_id].astype(str).str.strip()
        if ids.duplicated().any():
            raise StefaLandError(f"source {self.spec.name}: duplicated site id {ids[ids.duplicated()].iloc[0]}")
        return frame.set_index(pd.Index(ids.to_numpy(dtype=object), name="site"))

    def site_ids(self) -> set[str]:
        if (self.spec.gridded is not None or self.spec.vector is not None) and self.sites is not None:
            return set(map(str, self.sites.index))  # a grid or a polygon layer covers every site (or says why not)
        if hasattr(self.source, "site_ids"):
            return set(self.source.site_ids())
        data = self._data()
        return set(map(str, data.index if isinstance(data, pd.DataFrame) else data["site"].values))

    def time_bounds(self, sites: Sequence[str], chunk: int = 64) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """Earliest and latest date this source holds for any of ``sites`` (None: it has no time axis).

        Per-site files are asked file by file (every site counts, not the first); xarray sources
        share one time coordinate, which is read without loading data.
        """
        if hasattr(self.source, "time_bounds"):
            return self.source.time_bounds(list(sites))
        if hasattr(self.source, "read_sites"):
            present = set(self.site_ids())
            wanted = [s for s in sites if s in present]
            first: pd.Timestamp | None = None
            last: pd.Timestamp | None = None
            for at in range(0, len(wanted), chunk):
                data = self.source.read_sites(wanted[at : at + chunk], None)
                if "time" in data.indexes and len(data.indexes["time"]):
                    index = data.indexes["time"]
                    first = index.min() if first is None else min(first, index.min())
                    last = index.max() if last is None else max(last, index.max())
            return None if first is None or last is None else (first, last)
        data = self._data()
        if isinstance(data, xr.Dataset) and "time" in data.indexes and len(data.indexes["time"]):
            index = data.indexes["time"]
            return pd.Timestamp(index.min()), pd.Timestamp(index.max())
        return None

    def read(self, sites: Sequence[str], time: pd.DatetimeIndex | None) -> xr.Dataset:
        """The source's variables for ``sites`` (absent sites → NaN), on ``time`` when dynamic."""
        needed = [v.source_var for v in self.spec.variables]
        if hasattr(self.source, "read_sites"):
            data = self.source.read_sites(list(sites), time)
        else:
            data = self._data()
            if isinstance(data, pd.DataFrame):
                missing = [c for c in needed if c not in data.columns]
                self._refuse_missing(missing, list(map(str, data.columns)))
                table = data.reindex(list(sites))[needed]
                units = {c: "" for c in needed}
                return xr.Dataset(
                    {c: xr.DataArray(_numeric_column(table[c], self.spec.name, c), dims="site", attrs={"units": units[c]}) for c in needed},
                    coords={"site": np.asarray(list(sites), dtype=object)},
                )
            missing = [c for c in needed if c not in data.data_vars]
            self._refuse_missing(missing, list(map(str, data.data_vars)))
            data = data[needed].reindex(site=list(sites))
            if time is not None and "time" in data.dims:
                data = data.reindex(time=time)
            return compute_shard(data)
        missing = [c for c in needed if c not in data.data_vars]
        self._refuse_missing(missing, list(map(str, data.data_vars)))
        return data[needed]

    def read_shards(self, shards: Sequence[Sequence[str]], time: pd.DatetimeIndex | None) -> Iterator[xr.Dataset]:
        """``read(sites, time)`` for each shard in turn, as a lazy iterator (same values, same order).

        A gridded source is extracted a window of consecutive shards at a time (as many as
        :data:`GRIDDED_WINDOW_BYTES` allows): the window's sites in Z-order
        (:func:`~stefaland.gridded.spatial_order`), so a grid chunk is read by about one batch
        rather than by every shard with a site in it, in batches of ``shard_size`` that run as one
        task each on a distributed client's workers (:func:`~stefaland.gridded.compute_shards`;
        computed here without one). Each shard then gets exactly its sites, in its order: the
        store's order and its shards do not depend on this. Every site's value is computed by the
        same operations on the same cells as in ``read``, so the values are identical.
        """
        if self.spec.gridded is None:
            for sites in shards:
                yield self.read(sites, time)
            return
        shards = [list(map(str, s)) for s in shards]
        needed = [v.source_var for v in self.spec.variables]
        per_site = 2 * 8 * max(len(needed), 1) * (len(time) if time is not None else 1)
        budget = max(1, gridded_window_bytes() // per_site)
        at = 0
        while at < len(shards):
            stop, count = at + 1, len(shards[at])
            while stop < len(shards) and count + len(shards[stop]) <= budget:
                count += len(shards[stop])
                stop += 1
            yield from self._gridded_window(shards[at:stop], needed, time)
            at = stop

    def _gridded_window(self, shards: Sequence[Sequence[str]], needed: list[str], time: pd.DatetimeIndex | None) -> Iterator[xr.Dataset]:
        from ..gridded.extract import extract_to_sites, gridded_options, source_patch
        from ..gridded.shards import compute_shards, spatial_order

        if self.sites is None:
            raise StefaLandError(f"source {self.spec.name}: a gridded source needs the site table")
        ids = [s for shard in shards for s in shard]
        rows = pd.Index(map(str, self.sites.index)).get_indexer(ids)
        if (rows < 0).any():
            raise StefaLandError(f"source {self.spec.name}: site {ids[int(np.flatnonzero(rows < 0)[0])]} is not in the site table")
        table = self.sites.iloc[rows]
        order = spatial_order(table["lat"].to_numpy(float), table["lon"].to_numpy(float))
        method, classes = gridded_options(self.spec.gridded, self.spec.name)
        if self._grid is None:
            self._grid = self.source.to_dask()
        grid = self._grid
        size = self.shard_size or len(ids)
        days = self._days_per_batch(len(ids), size)
        static = not self._grid_has_time(grid)
        # cut along time, or a static map (one value a site: nothing to bound), a batch is every
        # site of the window: one block of sites, not one per shard, and one graph to optimise
        lazy = extract_to_sites(grid, table.iloc[order].reset_index(), method, list(self.spec.grid_variables),
                                classes, self.spec.name, site_chunk=len(ids) if days or static else size,
                                patch=source_patch(self.spec.gridded, self.spec.name))
        missing = [c for c in needed if c not in lazy.data_vars]
        self._refuse_missing(missing, list(map(str, lazy.data_vars)))
        lazy = lazy[needed]
        if time is not None and "time" in lazy.dims:
            lazy = lazy.reindex(time=time)
        if static:
            values = next(iter(compute_shards([lazy])))
        elif days:  # day-per-file grids: cut the window along time, so each file is read once, not once per batch
            batches = (lazy.isel(time=slice(t, t + days)) for t in range(0, lazy.sizes["time"], days))
            parts = list(compute_shards(batches))
            values = parts[0] if len(parts) == 1 else xr.concat(parts, dim="time")
            del parts
        else:
            batches = (lazy.isel(site=slice(a, a + size)) for a in range(0, len(ids), size))
            parts = list(compute_shards(batches))
            values = parts[0] if len(parts) == 1 else xr.concat(parts, dim="site")
            del parts
        back = np.empty(len(ids), dtype=np.int64)
        back[order] = np.arange(len(ids))  # store position k → its row in the spatial order
        at = 0
        for shard in shards:
            yield values.isel(site=back[at : at + len(shard)])
            at += len(shard)

    @staticmethod
    def _grid_has_time(grid: xr.Dataset | xr.DataArray) -> bool:
        grid = grid if isinstance(grid, xr.Dataset) else grid.to_dataset(name="grid")
        return any("time" in grid[v].dims for v in grid.data_vars)

    def _days_per_batch(self, n_sites: int, size: int) -> int | None:
        """Days per batch when the window should be cut along time instead of sites, else None.

        Batches of sites each read every grid chunk they touch. With a grid chunked a day at a time
        and the whole map in each chunk (MSWX/MSWEP: one file per day), every batch of sites reads
        every file: 13,935 WoSIS profiles in shards of 128 read each day's file 109 times.
        Cut along time instead, each batch reads its days once for all the window's sites.
        """
        if n_sites <= size or self._grid is None:
            return None
        grid = self._grid if isinstance(self._grid, xr.Dataset) else self._grid.to_dataset(name="grid")
        arrays = [grid[v] for v in grid.data_vars if "time" in grid[v].dims and grid[v].chunks is not None]
        if not arrays:
            return None
        # only a chunk holding the whole map makes every batch of sites read it; tiled grids are
        # read tile by tile, and spatially ordered batches share few tiles
        whole_map = all(len(c) == 1 for a in arrays for d, c in a.chunksizes.items() if d != "time")
        chunk = min(a.chunksizes["time"][0] for a in arrays)
        if not whole_map or chunk >= DAY_CHUNK_LIMIT:
            return None
        days = DAYS_PER_TIME_BATCH
        threads = _cluster_threads()
        if threads:  # at least two batches per worker thread, so no worker of a cluster waits idle
            days = min(days, -(-min(a.sizes["time"] for a in arrays) // (2 * threads)))
        return max(chunk, days // chunk * chunk)

    def check_table_keys(self, sites: Iterable[str]) -> bool:
        """Each table a static source is made of must key its rows like the store's sites.

        A table whose ids were written differently (a spreadsheet round-trip, another id scheme)
        joins to nothing: its columns become NaN at every site and the build looks complete.
        Refuse a table that matches no site; warn with counts when it matches only some. A grid
        or a polygon layer covers sites by location, not by id, and is not checked. Returns whether
        the source joins several tables on the id (CAMELS, Caravan attributes): curated tables
        meant to cover every site.
        """
        if self.spec.gridded is not None or self.spec.vector is not None:
            return False
        store = pd.Index(list(map(str, sites)))
        for label, ids, used in self._keyed_tables():
            matched = int(store.isin(ids).sum())
            counts = f"{label}: {matched} of {len(store)} sites matched by {self.site_id}"
            if matched == 0:
                example = str(ids[0]) if len(ids) else "none"
                raise StefaLandError(
                    f"source {self.spec.name}: {counts} (its ids look like {example!r}, the store's like "
                    f"{store[0]!r}); {_listed(used)} would be missing at every site. Fix the table's ids"
                )
            if matched < len(store):
                log.warning("source %s: %s; %s missing at the other %d", self.spec.name, counts, _listed(used),
                            len(store) - matched)
        return hasattr(self.source, "table_keys")

    def _keyed_tables(self) -> list[tuple[str, pd.Index, list[str]]]:
        """``(label, ids, variables it gives)`` per file of a joined source, else one for the whole source."""
        wanted = [v.source_var for v in self.spec.variables]
        if hasattr(self.source, "table_keys"):
            tables = [(t.label, t.ids, [c for c in wanted if c in t.columns]) for t in self.source.table_keys()]
            return [t for t in tables if t[2]]
        urlpath = getattr(self.source, "urlpath", None)
        label = urlpath if isinstance(urlpath, str) else self.spec.name
        return [(label, pd.Index(sorted(self.site_ids())), wanted)]

    def _refuse_missing(self, missing: list[str], present: list[str]) -> None:
        if missing:
            raise StefaLandError(
                f"source {self.spec.name}: variable {missing[0]} not found (it has: {', '.join(present[:12])})"
            )


def gridded_window_bytes() -> int:
    """The bound on a window's extracted values: ``$STEFALAND_GRIDDED_WINDOW_BYTES``, else 1 GiB."""
    text = os.environ.get(WINDOW_BYTES_ENV, "")
    if not text:
        return GRIDDED_WINDOW_BYTES
    if not text.isdigit() or int(text) < 1:
        raise StefaLandError(f"{WINDOW_BYTES_ENV} {text!r}: expected a positive number of bytes")
    return int(text)


def _cluster_threads() -> int:
    """Worker threads of the current distributed client (0 without one)."""
    from ..gridded.shards import active_client

    client = active_client()
    if client is None:
        return 0
    return sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values())


def _listed(columns: list[str], shown: int = 4) -> str:
    """'its variables a, b, c, d and 4 more': enough to recognise the table, short enough for one line."""
    more = f" and {len(columns) - shown} more" if len(columns) > shown else ""
    return f"its variable{'s' if len(columns) > 1 else ''} {', '.join(columns[:shown])}{more}"


def _as_text(values: np.ndarray) -> list[str]:
    """Site ids as str whatever the file stored: bytes (NetCDF char arrays), StringDType (zarr 3), objects."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).tolist()]


def _numeric_column(column: pd.Series, source: str, name: str) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & column.notna()
    if bad.any():
        raise StefaLandError(
            f"source {source}: attribute {name} of site {bad[bad].index[0]} is not numeric ({column[bad].iloc[0]!r})"
        )
    return values.to_numpy(dtype=np.float64, na_value=np.nan)
