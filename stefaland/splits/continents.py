"""Which continent a site lies on, from its coordinates alone (for the continental holdouts).

No natural-earth data ships with StefaLand and no network is assumed, so the three holdout
continents are coarse hand-drawn polygons (lon, lat in degrees, WGS84) that follow the usual
conventions:

* ``north_america``: everything west of 50 degW and north of 5 degN (Alaska, Canada, USA incl.
  Hawaii, Mexico, Central America, the Caribbean; the western Aleutians east of 170 degE) plus
  Greenland, minus South America.
* ``south_america``: the continent and its shelf islands (Trinidad, Aruba/Curaçao, Falklands,
  Galápagos); the boundary with Central America is the Panama–Colombia border.
* ``europe``: Iceland, the Azores and the continent up to the Ural mountains and Ural river, the
  Caspian and the Greater Caucasus crest; the Bosporus/Dardanelles separate it from Anatolia.
  Cyprus, the Canaries and Madeira are outside (Asia / Africa).

The coastlines are drawn to ~50–100 km, which places every gauge of the real Caravan sample in
the continent of its country (see ``tests/test_splits.py``); small islands near a boundary may be
placed as drawn rather than as politics would. Sites elsewhere get ``""``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import shapely
from shapely.geometry import Polygon, box

_SOUTH_AMERICA = [
    (-92.0, -57.0), (-25.0, -57.0), (-25.0, 5.0), (-50.0, 8.0), (-60.0, 9.5), (-62.0, 11.2),
    (-68.0, 12.5), (-71.5, 12.7), (-73.0, 11.5), (-76.0, 9.7), (-77.4, 8.7), (-77.9, 7.2),
    (-79.5, 5.5), (-92.0, 2.0),
]
_GREENLAND = [
    (-75.0, 58.0), (-40.0, 58.0), (-30.0, 68.0), (-18.0, 72.0), (-10.0, 82.0), (-10.0, 90.0),
    (-75.0, 90.0),
]
_EUROPE = [
    # Atlantic and the Mediterranean coast of Africa (south boundary, west to east)
    (-32.0, 35.95), (-5.5, 35.95), (0.0, 36.2), (3.0, 37.2), (9.5, 37.5), (11.5, 37.4),
    (12.3, 37.5), (14.0, 35.5), (16.0, 35.0), (23.0, 34.5), (26.5, 34.5),
    # Aegean, Dardanelles, Sea of Marmara, Bosporus
    (28.5, 36.3), (26.8, 37.4), (26.2, 38.6), (26.5, 39.5), (26.2, 40.0), (26.7, 40.4),
    (28.0, 40.7), (29.0, 41.0), (29.1, 41.25),
    # across the Black Sea to the Caucasus crest, the Caspian, the Ural river and mountains
    (37.4, 44.7), (40.0, 43.5), (44.0, 42.7), (47.0, 41.8), (50.0, 41.5), (50.0, 45.0),
    (51.9, 46.9), (51.4, 51.2), (55.1, 51.8), (58.6, 51.2), (59.5, 54.0), (59.0, 58.0),
    (59.5, 61.0), (60.5, 64.0), (65.0, 68.0), (66.5, 69.5), (69.0, 73.0), (69.0, 77.0),
    (70.0, 82.0), (70.0, 90.0),
    # the Arctic, then down past Svalbard and Iceland and east of Greenland
    (-5.0, 90.0), (-5.0, 82.0), (-12.0, 72.0), (-26.0, 68.0), (-32.0, 62.0),
]

CONTINENTS: tuple[str, ...] = ("north_america", "south_america", "europe")


@lru_cache(maxsize=1)
def continent_polygons() -> dict[str, shapely.Geometry]:
    """The polygons by name, built once; valid, non-overlapping geometries."""
    south = Polygon(_SOUTH_AMERICA)
    north = shapely.union_all(
        [box(-180.0, 5.0, -50.0, 90.0), Polygon(_GREENLAND), box(170.0, 50.0, 180.0, 56.0)]
    ).difference(south)
    europe = Polygon(_EUROPE)
    return {"north_america": north, "south_america": south, "europe": europe}


def continent_of(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Continent name per site (``""`` outside the three); NaN coordinates give ``""``."""
    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    lon = np.where(lon > 180.0, lon - 360.0, lon)  # accept 0..360 longitudes
    result = np.full(lat.shape, "", dtype=object)
    for name, polygon in continent_polygons().items():
        inside = shapely.contains_xy(polygon, lon, lat) | shapely.intersects_xy(
            polygon.boundary, lon, lat
        )
        result[inside & (result == "")] = name
    return result
