"""The site table: which sites a store holds, where they are, and which folds they belong to."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import StefaLandError
from .readers import site_id_name
from .spec import CatalogSpec, SourceSpec

_RANGES = {"lat": (-90.0, 90.0), "lon": (-180.0, 360.0)}  # degrees; 0..360 longitudes are accepted


def _as_frame(data, spec: SourceSpec) -> pd.DataFrame:
    if isinstance(data, xr.Dataset):
        data = data.to_dataframe().reset_index()
    if hasattr(data, "compute") and not isinstance(data, pd.DataFrame):
        data = data.compute()
    if not isinstance(data, pd.DataFrame):
        raise StefaLandError(f"source {spec.name}: a sites source must give a table, got {type(data).__name__}")
    return data


def load_catalog_sites(catalog: CatalogSpec) -> pd.DataFrame:
    """Return the site table indexed by site id (str) with lat, lon, region and fold_* columns."""
    spec = catalog.sources[catalog.sites_source]
    source = catalog.open(spec.name)
    frame = _as_frame(source.read(), spec)
    site_id = site_id_name(spec, source)
    if site_id not in frame.columns:
        raise StefaLandError(
            f"source {spec.name}: no site id column {site_id!r} (columns: {', '.join(map(str, frame.columns[:8]))})"
        )
    ids = frame[site_id].astype(str).str.strip()
    duplicated = ids[ids.duplicated()]
    if not duplicated.empty:
        raise StefaLandError(f"source {spec.name}: duplicated site id {duplicated.iloc[0]}")
    table = pd.DataFrame(index=pd.Index(ids.to_numpy(dtype=object), name="site"))
    columns = {"lat": "lat", "lon": "lon", **spec.columns}
    for store_name in ("lat", "lon"):
        source_name = columns[store_name]
        if source_name not in frame.columns:
            raise StefaLandError(f"source {spec.name}: no {store_name} column {source_name!r}")
        values = pd.to_numeric(frame[source_name], errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(values).any():
            raise StefaLandError(
                f"source {spec.name}: site {ids.iloc[int(np.flatnonzero(np.isnan(values))[0])]} has no valid {store_name}"
            )
        low, high = _RANGES[store_name]
        outside = (values < low) | (values > high)
        if outside.any():
            row = int(np.flatnonzero(outside)[0])
            raise StefaLandError(
                f"source {spec.name}: site {ids.iloc[row]} has {store_name} {values[row]:g} (column {source_name!r}), "
                f"outside {low:g}..{high:g}; {int(outside.sum())} such sites"
            )
        table[store_name] = values
    region_column = columns.get("region")
    table["region"] = (
        frame[region_column].astype(str).to_numpy(dtype=object) if region_column in frame.columns else ""
    )
    if spec.basins:
        table["geometry"] = _basin_geometries(catalog, spec, table.index)
    for store_name, source_name in columns.items():
        if store_name.startswith("fold_"):
            if source_name not in frame.columns:
                raise StefaLandError(f"source {spec.name}: no fold column {source_name!r}")
            folds = pd.to_numeric(frame[source_name], errors="coerce").fillna(-1)
            table[store_name] = folds.to_numpy(dtype=np.int16)
    return table


def _basin_geometries(catalog: CatalogSpec, spec: SourceSpec, sites: pd.Index) -> list:
    """Basin polygons for every site (``metadata.basins: {urlpath, id_column}``; relative to the catalog)."""
    from ..fileio import is_remote, join
    from ..gridded.polygons import read_basins

    options = spec.basins or {}
    urlpath = str(options.get("urlpath", ""))
    if not urlpath:
        raise StefaLandError(f"source {spec.name}: metadata.basins needs a urlpath")
    if not (is_remote(urlpath) or urlpath.startswith("/")):
        base = catalog.url.rsplit("/", 1)[0] if "/" in catalog.url else "."
        urlpath = join(base, urlpath)
    basins = read_basins(urlpath, str(options.get("id_column", "site")), spec.name)
    missing = sites.difference(pd.Index(basins.index.astype(str)))
    if len(missing):
        raise StefaLandError(f"source {spec.name}: basin file {urlpath} has no polygon for site {missing[0]}")
    return list(basins.reindex(sites))
