"""Every extraction method is "a weighted sum of a few cells per site"; this module applies one.

Nearest (one cell, weight 1), bilinear (four cells) and polygon means (every cell a basin touches,
weighted by covered area) differ only in which cells and which weights. They are kept as a flat
list of (site, cell, weight) pairs: the grid is touched through one vectorised, lazy ``isel`` of
those cells, so dask reads only the chunks that hold them, and the per-site sums are one sparse
matrix product. Flat, not padded to the largest basin: one Amazon-sized basin in a shard must not
multiply the memory of every small basin beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy import sparse


@dataclass(frozen=True)
class SiteWeights:
    """(site, cell, weight) pairs, grouped by site in site order."""

    sites: np.ndarray  # (n_site,) str ids
    site_of: np.ndarray  # (n_pair,) index into ``sites``, non-decreasing
    rows: np.ndarray  # (n_pair,) lat indices into the normalised grid
    cols: np.ndarray  # (n_pair,) lon indices
    weights: np.ndarray  # (n_pair,) float64, >= 0

    def __post_init__(self) -> None:
        assert self.site_of.shape == self.rows.shape == self.cols.shape == self.weights.shape
        assert np.all(np.diff(self.site_of) >= 0)

    @classmethod
    def from_lists(cls, sites: np.ndarray, cells: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> SiteWeights:
        """From ragged per-site (rows, cols, weights)."""
        counts = [len(r) for r, _, _ in cells]
        site_of = np.repeat(np.arange(len(cells)), counts)

        def join(k: int, dtype: type) -> np.ndarray:
            return np.concatenate([np.asarray(c[k], dtype=dtype) for c in cells]) if cells else np.zeros(0, dtype=dtype)

        return cls(np.asarray(sites, dtype=object), site_of, join(0, np.int64), join(1, np.int64), join(2, np.float64))

    @classmethod
    def from_dense(cls, sites: np.ndarray, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> SiteWeights:
        """From ``(n_site, k)`` arrays: the same k cells count for every site (nearest, bilinear)."""
        n_site, k = rows.shape
        return cls(np.asarray(sites, dtype=object), np.repeat(np.arange(n_site), k), rows.ravel().astype(np.int64),
                   cols.ravel().astype(np.int64), weights.ravel().astype(np.float64))

    def blocks(self, site_chunk: int | None) -> list[tuple[slice, slice]]:
        """(sites, pairs) slices of consecutive blocks of ``site_chunk`` sites (default: one block)."""
        n = len(self.sites)
        size = site_chunk or max(n, 1)
        bounds = np.searchsorted(self.site_of, np.arange(0, n + size, size).clip(max=n))
        return [(slice(start, min(start + size, n)), slice(int(bounds[i]), int(bounds[i + 1])))
                for i, start in enumerate(range(0, max(n, 1), size))]


def _sparse_sum(values: np.ndarray, matrix: sparse.csr_matrix) -> np.ndarray:
    """``values (..., pair) @ matrix (pair, site)`` for any leading dims."""
    lead = values.shape[:-1]
    flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
    return np.asarray((matrix.T @ flat.T).T).reshape(*lead, matrix.shape[1])


def _per_site(values: xr.DataArray, matrix: sparse.csr_matrix) -> xr.DataArray:
    return xr.apply_ufunc(
        _sparse_sum, values, kwargs={"matrix": matrix},
        input_core_dims=[["pair"]], output_core_dims=[["site"]],
        dask="parallelized", output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"site": matrix.shape[1]}},
    )


def per_site_sums(data: xr.DataArray, weights: SiteWeights, site_chunk: int | None,
                  reducers: dict[str, Callable[[xr.DataArray], xr.DataArray]]) -> dict[str, xr.DataArray]:
    """For each ``reducer`` (cell values → per-cell quantity), its weighted sum per site.

    Sites are processed in blocks of ``site_chunk``, each with its own point-indexing, so
    computing one block (one build shard) reads only that block's cells. Splitting one indexing
    into blocks afterwards would be worse twice over: every block would depend on every site's
    cells, and the scheduler may keep each input chunk alive until the last block sharing it is
    done, so memory would grow with the period.
    """
    plain = data.drop_vars(["lat", "lon"], errors="ignore")
    parts: dict[str, list[xr.DataArray]] = {name: [] for name in reducers}
    for site_slice, pair_slice in weights.blocks(site_chunk):
        rows = xr.DataArray(weights.rows[pair_slice], dims="pair")
        cols = xr.DataArray(weights.cols[pair_slice], dims="pair")
        values = plain.isel(lat=rows, lon=cols)
        if values.chunks is not None:
            values = values.chunk({"pair": -1})
        n_site = site_slice.stop - site_slice.start
        matrix = sparse.csr_matrix(
            (weights.weights[pair_slice], (np.arange(pair_slice.stop - pair_slice.start),
                                           weights.site_of[pair_slice] - site_slice.start)),
            shape=(pair_slice.stop - pair_slice.start, n_site),
        )
        for name, reducer in reducers.items():
            parts[name].append(_per_site(reducer(values), matrix))
    site = ("site", weights.sites)
    return {name: (blocks[0] if len(blocks) == 1 else xr.concat(blocks, dim="site")).assign_coords(site=site)
            for name, blocks in parts.items()}


def weighted_mean(data: xr.DataArray, weights: SiteWeights, site_chunk: int | None = None) -> xr.DataArray:
    """Mean over each site's cells, ignoring NaN cells (weights renormalised); NaN if none is valid.

    Renormalising is what makes a coastal basin's mean the mean of its land cells rather than a
    value diluted by ocean NaNs treated as zeros.
    """
    sums = per_site_sums(data, weights, site_chunk, {
        "total": lambda v: v.fillna(0.0),
        "covered": lambda v: v.notnull(),
    })
    return (sums["total"] / sums["covered"]).where(sums["covered"] > 0)
