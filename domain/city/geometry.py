"""Points and polygons on the map, in degrees (WGS 84), for areas an operator draws.

A polygon is a closed ring of ``(latitude, longitude)`` vertices (the last vertex joins the
first; repeating the first vertex is allowed). The city is a few tens of kilometres across,
so treating degrees as plane coordinates is exact enough for "is this cabinet inside".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = tuple[float, float]  # (latitude, longitude)

EARTH_RADIUS_M = 6_371_000.0
MAX_VERTICES = 1000


def inside(point: Point, polygon: Sequence[Point]) -> bool:
    """Whether ``point`` lies inside ``polygon`` (even-odd rule: ray casting).

    A point exactly on an edge may be either; cabinets are not placed on boundaries.
    """
    lat, lon = point
    result = False
    n = len(polygon)
    j = n - 1
    for i in range(n):
        lat_i, lon_i = polygon[i]
        lat_j, lon_j = polygon[j]
        if (lat_i > lat) != (lat_j > lat):
            crossing = lon_i + (lat - lat_i) * (lon_j - lon_i) / (lat_j - lat_i)
            if lon < crossing:
                result = not result
        j = i
    return result


def bounding_box(polygon: Sequence[Point]) -> tuple[float, float, float, float]:
    """``(min_lat, min_lon, max_lat, max_lon)``: a cheap first test before :func:`inside`."""
    lats = [p[0] for p in polygon]
    lons = [p[1] for p in polygon]
    return min(lats), min(lons), max(lats), max(lons)


def distance_m(a: Point, b: Point) -> float:
    """Great-circle distance in metres (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def offset(origin: Point, north_m: float, east_m: float) -> Point:
    """The point ``north_m`` metres north and ``east_m`` metres east of ``origin``."""
    lat, lon = origin
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon
