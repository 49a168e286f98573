"""Approximate commune outlines for the map when no real ones are at hand.

The real outlines (IGN ADMIN EXPRESS) are not available offline here; these are the
Voronoi cells of the communes' centres (each point of the métropole goes to the nearest
centre), clipped to a circle around them: convex, not overlapping, each holding its own
centre. Good enough to tell the communes apart on a map without tiles; an operator
replaces the file with the city's own outlines (same name, same format: a GeoJSON
FeatureCollection of Polygons with a ``name`` property).

Distances are taken in a local plane (longitude scaled by the cosine of the mean
latitude): over a few tens of kilometres the bisectors are then true to some tens of
metres, far below what an approximate outline claims.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from domain.city.geometry import EARTH_RADIUS_M

XY = tuple[float, float]

SOURCE = (
    "Approximation: Voronoi cells of the communes' centres, clipped to a circle around "
    "the métropole. Replace this file with the real outlines (IGN ADMIN EXPRESS), same "
    "name and format."
)


def _clip(polygon: list[XY], a: XY, b: XY) -> list[XY]:
    """The part of a convex ``polygon`` nearer to ``a`` than to ``b`` (one Sutherland-
    Hodgman step against the perpendicular bisector)."""
    nx, ny = b[0] - a[0], b[1] - a[1]
    mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)

    def side(p: XY) -> float:  # < 0 on a's side
        return (p[0] - mid[0]) * nx + (p[1] - mid[1]) * ny

    out: list[XY] = []
    for i, p in enumerate(polygon):
        q = polygon[(i + 1) % len(polygon)]
        sp, sq = side(p), side(q)
        if sp <= 0:
            out.append(p)
        if (sp < 0 < sq) or (sq < 0 < sp):
            t = sp / (sp - sq)
            out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
    return out


def voronoi_cells(
    centres: Sequence[tuple[float, float]], *, margin_m: float = 3000.0, sides: int = 96
) -> list[list[tuple[float, float]]]:
    """For each ``(latitude, longitude)`` centre, its cell as a ring of ``(longitude,
    latitude)`` vertices, counter-clockwise, first vertex repeated last (RFC 7946).

    The cells are clipped to a circle (a ``sides``-gon) around the centres' mean, reaching
    ``margin_m`` beyond the farthest centre. Centres must be distinct.
    """
    if len(set(centres)) != len(centres) or not centres:
        raise ValueError("centres: empty or repeated")
    lat0 = sum(c[0] for c in centres) / len(centres)
    lon0 = sum(c[1] for c in centres) / len(centres)
    k = math.cos(math.radians(lat0))
    metres = math.pi * EARTH_RADIUS_M / 180

    def plane(lat: float, lon: float) -> XY:
        return ((lon - lon0) * k * metres, (lat - lat0) * metres)

    def back(p: XY) -> tuple[float, float]:
        return (round(lon0 + p[0] / (k * metres), 6), round(lat0 + p[1] / metres, 6))

    points = [plane(lat, lon) for lat, lon in centres]
    radius = max(math.hypot(*p) for p in points) + margin_m
    circle = [
        (radius * math.cos(2 * math.pi * i / sides), radius * math.sin(2 * math.pi * i / sides))
        for i in range(sides)
    ]  # counter-clockwise; clipping keeps the order
    cells = []
    for i, a in enumerate(points):
        cell = circle
        for j, b in enumerate(points):
            if i != j:
                cell = _clip(cell, a, b)
        ring = [back(p) for p in cell]
        ring = [p for n, p in enumerate(ring) if p != ring[n - 1]]  # rounding may join two
        cells.append([*ring, ring[0]])
    return cells


def feature_collection(communes: Sequence[Any]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection (RFC 7946) of the communes' approximate cells; each
    commune has ``name``, ``latitude`` and ``longitude``."""
    cells = voronoi_cells([(c.latitude, c.longitude) for c in communes])
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": c.name, "approximate": True, "source": SOURCE},
                "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
            }
            for c, ring in zip(communes, cells, strict=True)
        ],
    }
