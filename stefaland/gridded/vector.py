"""Polygon products (GLiM, GLHYMPS, Intact Forest Landscapes) → one static value per site.

A vector catalog source (``metadata.vector``, see docs/GRIDDED.md) holds polygons with attribute
fields. A site point takes the value of the polygon containing it; a site with a basin polygon
(the site table's ``geometry``) takes the area-weighted value over the basin, from the exact
intersection of basin and polygons (``geopandas.overlay``), with areas measured in an equal-area
CRS so that a polygon counts by its true surface, not by square degrees.

Three kinds of output, because a class code cannot be averaged and absence can be information:

* continuous field (GLHYMPS ``logK_Ice_x``): the value (point) or the area-weighted mean over the
  part of the basin the polygons cover (polygon);
* categorical field (GLiM ``xx``): ``<field>_<class>`` = the share of the basin covered by polygons
  of that class (undeclared codes and uncovered land count in the denominator: "fraction of the
  basin", unlike raster class fractions, which are shares of the valid cells);
* presence (IFL): ``<field>`` = the share of the site covered by any polygon; absence is a value
  (0), not a gap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from shapely.geometry.base import BaseGeometry

from ..errors import StefaLandError

METHODS = ("point", "polygon")
KEYS = ("method", "categorical", "classes", "presence", "outside")
EQUAL_AREA = "EPSG:6933"  # WGS 84 / NSIDC EASE-Grid 2.0 Global: cylindrical equal-area, metres
_ROW = "__stefaland_site_row"
_FEATURE = "__stefaland_feature"


def _code_key(value: Any) -> Any:
    """A class code as compared: numbers as float (1 == 1.0 == "1"), anything else as stripped text."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value).strip()
    return number if math.isfinite(number) else None


def _classes(classes: Any, source: str) -> dict[Any, str]:
    """``{code: name}`` from YAML: codes kept as text or numbers (GLiM ``sc``, land cover ``10``), safe names."""
    if not isinstance(classes, Mapping) or not classes:
        raise StefaLandError(f"source {source}: a categorical vector source needs vector.classes ({{code: name}})")
    parsed: dict[Any, str] = {}
    for code, name in classes.items():
        key = _code_key(code)
        if key is None or key == "":
            raise StefaLandError(f"source {source}: vector class code {code!r} is empty or not finite")
        label = re.sub(r"[^0-9A-Za-z_]+", "_", str(name).strip()).strip("_").lower()
        if not label:
            raise StefaLandError(f"source {source}: vector class {code!r} has an empty name")
        if label in parsed.values():
            raise StefaLandError(f"source {source}: vector class name {label!r} is used twice")
        if key in parsed:
            raise StefaLandError(f"source {source}: vector class code {code!r} is given twice")
        parsed[key] = label
    return parsed


def _flag(block: Mapping, key: str, source: str) -> bool:
    value = block.get(key, False)
    if not isinstance(value, bool):
        raise StefaLandError(f"source {source}: vector.{key} must be true or false (got {value!r})")
    return value


def vector_options(metadata: Mapping[str, Any] | None, source: str) -> dict[str, Any]:
    """Read a catalog source's ``vector:`` block → {method, categorical, classes, presence, outside}."""
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise StefaLandError(f"source {source}: metadata.vector must be a mapping ({', '.join(KEYS)})")
    unknown = sorted(map(str, set(metadata) - set(KEYS)))
    if unknown:
        raise StefaLandError(f"source {source}: unknown key vector.{unknown[0]} (known: {', '.join(KEYS)})")
    method = str(metadata.get("method", "point"))
    if method not in METHODS:
        raise StefaLandError(f"source {source}: unknown vector method {method!r} (use one of {', '.join(METHODS)})")
    categorical, presence = _flag(metadata, "categorical", source), _flag(metadata, "presence", source)
    if categorical and presence:
        raise StefaLandError(f"source {source}: vector.categorical and vector.presence exclude each other")
    if metadata.get("classes") and not categorical:
        raise StefaLandError(f"source {source}: vector.classes given but vector.categorical is not true")
    outside = metadata.get("outside", 0 if presence else "nan")
    if isinstance(outside, str) and outside.strip().lower() == "nan":
        outside_value = float("nan")
    elif isinstance(outside, (int, float)) and not isinstance(outside, bool) and (outside == 0 or outside != outside):
        outside_value = float(outside)
    else:
        raise StefaLandError(f"source {source}: vector.outside must be nan or 0 (got {outside!r})")
    return {
        "method": method,
        "categorical": categorical,
        "classes": _classes(metadata.get("classes"), source) if categorical else None,
        "presence": presence,
        "outside": outside_value,
    }


def _sites(sites: pd.DataFrame, method: str, source: str) -> tuple[np.ndarray, gpd.GeoSeries]:
    """Site ids and their geometry in EPSG:4326: points (lon in −180..180) or basin polygons."""
    frame = sites.reset_index() if "site" not in sites.columns and sites.index.name == "site" else sites
    if "site" not in frame.columns:
        raise StefaLandError(f"source {source}: the site table has no 'site' column")
    ids = frame["site"].astype(str).to_numpy(dtype=object)
    if method == "point":
        missing = [c for c in ("lat", "lon") if c not in frame.columns]
        if missing:
            raise StefaLandError(f"source {source}: the site table has no {missing[0]!r} column")
        lat = pd.to_numeric(frame["lat"], errors="coerce").to_numpy(dtype=np.float64)
        lon = pd.to_numeric(frame["lon"], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isnan(lat) | np.isnan(lon)
        if bad.any():
            raise StefaLandError(f"source {source}: site {ids[np.flatnonzero(bad)[0]]} has no valid lat/lon")
        lon = (lon + 180.0) % 360.0 - 180.0
        return ids, gpd.GeoSeries(gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    if "geometry" not in frame.columns:
        raise StefaLandError(f"source {source}: vector method polygon needs basin polygons (metadata.basins of the sites source)")
    from .polygons import to_lon180

    shapes = []
    for site, geometry in zip(ids, frame["geometry"]):
        if not isinstance(geometry, BaseGeometry) or geometry.is_empty:
            raise StefaLandError(f"source {source}: site {site} has no basin geometry (vector method polygon needs one)")
        if geometry.geom_type not in ("Polygon", "MultiPolygon"):
            raise StefaLandError(f"source {source}: basin of site {site} is a {geometry.geom_type}, not a polygon")
        shapes.append(to_lon180(geometry if geometry.is_valid else shapely.make_valid(geometry)))
    return ids, gpd.GeoSeries(shapes, crs="EPSG:4326")


def _candidates(frame: gpd.GeoDataFrame, fields: Sequence[str], where: gpd.GeoSeries, source: str) -> gpd.GeoDataFrame:
    """The features whose bounding box meets the sites' extent (spatial index), in file order, valid."""
    if not isinstance(frame, gpd.GeoDataFrame):
        raise StefaLandError(f"source {source}: a vector source must give polygons (got {type(frame).__name__})")
    absent = [f for f in fields if f not in frame.columns]
    if absent:
        fields_there = [str(c) for c in frame.columns if c != frame.geometry.name]
        raise StefaLandError(f"source {source}: field {absent[0]!r} is not in the polygons (fields: {', '.join(fields_there[:12])})")
    frame = frame if frame.crs is not None else frame.set_crs("EPSG:4326")
    frame = frame.to_crs("EPSG:4326") if not frame.crs.equals("EPSG:4326") else frame
    minx, miny, maxx, maxy = where.total_bounds
    extent = shapely.box(minx - 1e-9, miny - 1e-9, maxx + 1e-9, maxy + 1e-9)
    rows = np.sort(frame.sindex.query(extent))
    chosen = gpd.GeoDataFrame(
        {**{f: frame[f].to_numpy()[rows] for f in dict.fromkeys(fields)}, _FEATURE: np.arange(len(rows))},
        geometry=frame.geometry.to_numpy()[rows], crs="EPSG:4326",
    )
    invalid = ~chosen.is_valid
    if invalid.any():  # real products hold a few self-intersecting rings; overlay needs valid input
        repaired = shapely.make_valid(chosen.geometry[invalid].to_numpy(), method="structure", keep_collapsed=False)
        chosen.loc[invalid, "geometry"] = repaired
    return chosen[~chosen.geometry.is_empty]


def _numeric(values: pd.Series, field: str, source: str) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna()
    if bad.any():
        raise StefaLandError(f"source {source}: field {field} holds a non-numeric value {values[bad].iloc[0]!r}; "
                             "declare vector.categorical with classes for a class field")
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)


def _class_labels(values: pd.Series, classes: Mapping[Any, str]) -> np.ndarray:
    return np.asarray([classes.get(_code_key(v)) if v is not None and v == v else None for v in values], dtype=object)


def _points(ids: np.ndarray, points: gpd.GeoSeries, candidates: gpd.GeoDataFrame, fields: Sequence[str],
            options: Mapping[str, Any], source: str) -> dict[str, np.ndarray]:
    """Each site point takes the first feature (file order) that contains it (or touches it)."""
    n = len(ids)
    sites = gpd.GeoDataFrame({_ROW: np.arange(n)}, geometry=points.to_numpy(), crs="EPSG:4326")
    joined = gpd.sjoin(sites, candidates, how="inner", predicate="intersects")
    first = joined.sort_values([_ROW, _FEATURE]).drop_duplicates(_ROW)
    rows = first[_ROW].to_numpy()
    outside = options["outside"]
    out: dict[str, np.ndarray] = {}
    for field in dict.fromkeys(fields):
        if options["presence"]:
            values = np.full(n, outside)
            values[rows] = 1.0
            out[field] = values
        elif options["categorical"]:
            labels = _class_labels(first[field], options["classes"])
            for label in options["classes"].values():
                values = np.full(n, outside)
                values[rows] = (labels == label).astype(np.float64)
                out[f"{field}_{label}"] = values
        else:
            values = np.full(n, outside)
            values[rows] = _numeric(first[field], field, source)
            out[field] = values
    return out


def _union_area(pieces: gpd.GeoDataFrame, by: list[str]) -> pd.Series:
    """Area (m²) of the union of the pieces of each group: overlapping features count once."""
    if pieces.empty:
        return pd.Series(dtype=np.float64)
    groups = pieces.groupby(by, sort=False).geometry
    return groups.apply(lambda g: shapely.union_all(g.to_numpy()).area if len(g) > 1 else g.iloc[0].area)


def _basins(ids: np.ndarray, basins: gpd.GeoSeries, candidates: gpd.GeoDataFrame, fields: Sequence[str],
            options: Mapping[str, Any], source: str) -> dict[str, np.ndarray]:
    """Each basin: area-weighted values of the features intersecting it (areas in an equal-area CRS)."""
    n = len(ids)
    sites = gpd.GeoDataFrame({_ROW: np.arange(n)}, geometry=basins.to_numpy(), crs="EPSG:4326")
    basin_area = sites.to_crs(EQUAL_AREA).area.to_numpy()
    pieces = gpd.overlay(sites, candidates, how="intersection", keep_geom_type=True).to_crs(EQUAL_AREA)
    pieces = pieces[~pieces.geometry.is_empty]
    outside = options["outside"]
    out: dict[str, np.ndarray] = {}

    def fraction(area: pd.Series) -> np.ndarray:
        share = np.zeros(n)
        share[area.index.to_numpy(dtype=np.int64)] = area.to_numpy()
        return np.clip(share / basin_area, 0.0, 1.0)

    # a basin no polygon covers (edge contacts leave no area) takes the `outside` value
    empty = np.bincount(pieces[_ROW].to_numpy(dtype=np.int64), weights=pieces.area.to_numpy(), minlength=n) <= 0.0
    for field in dict.fromkeys(fields):
        if options["presence"]:
            out[field] = np.where(empty, outside, fraction(_union_area(pieces, [_ROW])))
        elif options["categorical"]:
            labelled = pieces.assign(_label=_class_labels(pieces[field], options["classes"]))
            areas = _union_area(labelled[labelled["_label"].notna()], [_ROW, "_label"])
            by_class = areas.unstack("_label") if len(areas) else pd.DataFrame()
            for label in options["classes"].values():
                column = by_class[label].dropna() if label in by_class else pd.Series(dtype=np.float64)
                out[f"{field}_{label}"] = np.where(empty, outside, fraction(column))
        else:
            values = _numeric(pieces[field], field, source)
            area = pieces.area.to_numpy()
            valid = np.isfinite(values) & (area > 0)
            rows = pieces[_ROW].to_numpy()[valid]
            total = np.bincount(rows, weights=area[valid], minlength=n)
            weighted = np.bincount(rows, weights=area[valid] * values[valid], minlength=n)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[field] = np.where(total > 0, weighted / np.where(total > 0, total, 1.0), outside)
    return out


def extract_vector(frame: gpd.GeoDataFrame, sites: pd.DataFrame, options: Mapping[str, Any],
                   variables: Sequence[str], source: str) -> xr.Dataset:
    """Per-site values of the polygon fields ``variables``: dims ``(site)``.

    ``sites`` has ``site`` and ``lat``/``lon`` (method point) or ``geometry`` basin polygons in
    EPSG:4326 (method polygon). ``options`` comes from :func:`vector_options`. Outputs are named
    ``<field>`` (continuous, presence) or ``<field>_<class>`` (categorical, unit ``fraction``).
    """
    method = options["method"]
    ids, where = _sites(sites, method, source)
    candidates = _candidates(frame, list(variables), where, source)
    if method == "point":
        values = _points(ids, where, candidates, variables, options, source)
    else:
        values = _basins(ids, where, candidates, variables, options, source)
    fraction = options["categorical"] or options["presence"]
    result = xr.Dataset(
        {name: xr.DataArray(v.astype(np.float64), dims="site", attrs={"units": "fraction"} if fraction else {})
         for name, v in values.items()},
        coords={"site": ids},
    )
    result.attrs.update(source=source, vector_method=method)
    return result
