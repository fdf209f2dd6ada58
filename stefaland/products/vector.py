"""Intake driver for polygon products (paper Table C1: GLiM, GLHYMPS, Intact Forest Landscapes).

These products are published as vector files, not rasters: GLiM as an Esri FileGDB (often
exported to shapefile or GeoPackage), GLHYMPS as a shapefile in a projected equal-area CRS, the
IFL layers as shapefiles. Rasterising them first would lose the exact boundaries that basin
fractions need, so ``data build`` reads the polygons as they are and intersects them with the
sites (:mod:`stefaland.gridded.vector`).

``read()`` returns a GeoDataFrame in EPSG:4326 with only the requested ``columns`` (GLiM and
GLHYMPS carry dozens of fields over about a million polygons; reading two of them is much
cheaper). Object storage has no paths GDAL can open, so remote files are read into memory: a
remote shapefile together with its sidecars (``.shx``, ``.dbf``, ``.prj``, ``.cpg``) and a remote
FileGDB folder are zipped in memory first, because a ``.shp`` alone has neither attributes nor CRS.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import geopandas as gpd
from intake.source.base import DataSource, Schema

from ..errors import StefaLandError
from ..fileio import filesystem, is_remote, read_bytes

SIDECARS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")
POLYGONAL = {"Polygon", "MultiPolygon"}


def _zip_members(members: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer


def _remote_dataset(url: str, storage_options: dict | None) -> bytes:
    """A remote vector dataset as bytes GDAL can open from memory (shapefiles and FileGDBs zipped)."""
    fs, path = filesystem(url, storage_options)
    stem, ext = os.path.splitext(path)
    if ext.lower() == ".shp":
        members: dict[str, bytes] = {}
        for sidecar in SIDECARS:
            for candidate in (stem + sidecar, stem + sidecar.upper()):
                if fs.exists(candidate):
                    members[os.path.basename(candidate)] = fs.cat_file(candidate)
                    break
        if not any(name.lower().endswith(".shp") for name in members):
            raise StefaLandError(f"{url}: file not found")
        return _zip_members(members).getvalue()
    if fs.isdir(path):  # a FileGDB is a folder of files
        root = path.rstrip("/")
        folder = os.path.basename(root)
        files = fs.find(root, withdirs=False)
        return _zip_members({f"{folder}/{f[len(root):].lstrip('/')}": fs.cat_file(f) for f in files}).getvalue()
    if not storage_options:
        return read_bytes(url)
    try:
        return fs.cat_file(path)
    except FileNotFoundError as exc:
        raise StefaLandError(f"{url}: file not found") from exc


@contextmanager
def _restore_shx(enabled: bool) -> Iterator[None]:
    """GDAL's SHAPE_RESTORE_SHX for this read only.

    It rebuilds a missing ``.shx`` of a local shapefile, but it makes GDAL open every shapefile
    for writing, so with it a zipped or in-memory shapefile shows no layer at all. The basin
    reader sets it process-wide, so it is set (or cleared) here and put back afterwards.
    """
    import pyogrio

    before = pyogrio.get_gdal_config_option("SHAPE_RESTORE_SHX")
    pyogrio.set_gdal_config_options({"SHAPE_RESTORE_SHX": True if enabled else None})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"SHAPE_RESTORE_SHX": before})


def read_vector(urlpath: str, layer: str | int | None, columns: list[str] | None, source: str | None = None,
                storage_options: dict | None = None) -> gpd.GeoDataFrame:
    """Read ``columns`` of a vector file (any CRS) → GeoDataFrame in EPSG:4326; one-line errors naming the file."""
    where = f"{f'source {source}: ' if source else ''}vector file {urlpath}"
    if is_remote(urlpath):
        data = _remote_dataset(urlpath, storage_options)
        opener: Any = lambda: io.BytesIO(data)  # noqa: E731 - GDAL consumes the buffer; hand it a fresh one
    else:
        if not os.path.exists(urlpath) and not urlpath.startswith(("zip://", "/vsi")):
            raise StefaLandError(f"{where}: file not found")
        opener = lambda: urlpath  # noqa: E731
    with _restore_shx(not is_remote(urlpath) and urlpath.lower().endswith(".shp")):
        frame = _read(opener, layer, columns, where)
    if frame.crs is None:
        warnings.warn(f"{where} declares no CRS; assuming EPSG:4326 (longitude/latitude)", UserWarning, stacklevel=2)
        frame = frame.set_crs("EPSG:4326")
    return frame.to_crs("EPSG:4326").reset_index(drop=True)


def _read(opener: Callable[[], Any], layer: str | int | None, columns: list[str] | None, where: str) -> gpd.GeoDataFrame:
    """Check the fields and the geometry before reading, then read only ``columns`` of the polygons."""
    import pyogrio

    try:
        info = pyogrio.read_info(opener(), layer=layer)
    except Exception as exc:  # pyogrio raises many types; the user needs the file and the reason
        raise StefaLandError(f"{where}: cannot read it{f' (layer {layer!r})' if layer is not None else ''}: {exc}") from exc
    fields = [str(f) for f in info.get("fields", [])]
    if columns is not None:
        absent = [c for c in columns if c not in fields]
        if absent:
            raise StefaLandError(f"{where}: no field {absent[0]!r} (fields: {', '.join(fields[:12])})")
    if not info.get("geometry_type"):
        raise StefaLandError(f"{where}: has no geometry (a table, not polygons); name a polygon layer")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="More than one layer found", category=UserWarning)
            frame = gpd.read_file(opener(), layer=layer, columns=columns, engine="pyogrio")
    except Exception as exc:
        raise StefaLandError(f"{where}: cannot read it: {exc}") from exc
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name not in frame.columns:
        raise StefaLandError(f"{where}: has no geometry (a table, not polygons); name a polygon layer")
    frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)]
    if frame.empty:
        raise StefaLandError(f"{where}: has no feature with a geometry")
    kinds = set(frame.geom_type.unique()) - POLYGONAL
    if kinds:
        raise StefaLandError(f"{where}: holds {sorted(kinds)[0]} features; only polygons can contain a site")
    return frame


class VectorSource(DataSource):
    """A polygon product (shapefile, GeoPackage, GeoJSON, FileGDB, zipped shapefile) as a GeoDataFrame in EPSG:4326."""

    name = "stefaland_vector"
    container = "dataframe"
    version = "1"
    partition_access = False

    def input_paths(self) -> list[str]:
        """A shapefile is several files (.shp .shx .dbf .prj .cpg): an edited .dbf is changed data too."""
        if self.urlpath.lower().endswith(".shp"):
            return [f"{self.urlpath[:-4]}.*"]
        return [self.urlpath]

    def __init__(self, urlpath: str, layer: str | int | None = None, columns: list[str] | None = None,
                 storage_options: dict | None = None, metadata: dict | None = None):
        super().__init__(storage_options=storage_options, metadata=metadata)
        self.urlpath = str(urlpath)
        self.layer = layer
        if columns is not None and (isinstance(columns, str) or not all(isinstance(c, str) for c in columns)):
            raise StefaLandError(f"vector file {urlpath}: columns must be a list of field names (got {columns!r})")
        self.columns = None if columns is None else list(columns)
        self._frame: gpd.GeoDataFrame | None = None

    def _label(self) -> str | None:
        """The catalog entry's name when known (the build's reader sets it): errors then name both."""
        return (self.metadata or {}).get("source_name")

    def _get_schema(self) -> Schema:
        frame = self.read()
        return Schema(datashape=None, dtype=None, shape=frame.shape, npartitions=1, extra_metadata={})

    def read(self) -> gpd.GeoDataFrame:
        if self._frame is None:
            self._frame = read_vector(self.urlpath, self.layer, self.columns, self._label(), self.storage_options)
        return self._frame.copy()

    def to_dask(self) -> gpd.GeoDataFrame:
        return self.read()

    def _close(self) -> None:
        self._frame = None
