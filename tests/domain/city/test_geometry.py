"""Point in polygon against an independent reference (the winding number), on random
polygons: what decides which cabinets an operator's area covers."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.city.geometry import distance_m, inside, offset


def winding_number(point: tuple[float, float], polygon: list[tuple[float, float]]) -> int:
    """Sum of the angles the polygon's edges subtend at ``point``, in turns."""
    y, x = point
    total = 0.0
    for i in range(len(polygon)):
        y1, x1 = polygon[i]
        y2, x2 = polygon[(i + 1) % len(polygon)]
        a1 = math.atan2(y1 - y, x1 - x)
        a2 = math.atan2(y2 - y, x2 - x)
        d = a2 - a1
        while d > math.pi:
            d -= 2 * math.pi
        while d < -math.pi:
            d += 2 * math.pi
        total += d
    return round(total / (2 * math.pi))


coordinate = st.floats(min_value=47.0, max_value=47.5, allow_nan=False)
polygons = st.lists(
    st.tuples(coordinate, coordinate.map(lambda v: v - 42.3)), min_size=3, max_size=12
)


@settings(max_examples=400)
@given(polygons, st.tuples(coordinate, coordinate.map(lambda v: v - 42.3)))
def test_inside_agrees_with_the_winding_number_for_star_shaped_polygons(
    points: list[tuple[float, float]], point: tuple[float, float]
) -> None:
    # Sorting the vertices by angle around their centroid makes a simple polygon, for which
    # the even-odd rule and a non-zero winding number agree.
    cy = sum(p[0] for p in points) / len(points)
    cx = sum(p[1] for p in points) / len(points)
    polygon = sorted(points, key=lambda p: math.atan2(p[0] - cy, p[1] - cx))
    near_edge = any(
        _distance_to_segment(point, polygon[i], polygon[(i + 1) % len(polygon)]) < 1e-9
        for i in range(len(polygon))
    )
    if near_edge:
        return  # on a boundary either answer is allowed
    assert inside(point, polygon) == (winding_number(point, polygon) != 0)


def _distance_to_segment(
    p: tuple[float, float], a: tuple[float, float], b: tuple[float, float]
) -> float:
    (py, px), (ay, ax), (by, bx) = p, a, b
    dx, dy = bx - ax, by - ay
    length = dx * dx + dy * dy
    t = 0.0 if length == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def test_a_square_around_dijon_holds_its_centre_not_chenove() -> None:
    square = [(47.31, 5.03), (47.31, 5.05), (47.33, 5.05), (47.33, 5.03)]
    assert inside((47.322, 5.0415), square)
    assert not inside((47.292, 5.005), square)


@settings(max_examples=200)
@given(st.floats(-3000, 3000), st.floats(-3000, 3000))
def test_offset_moves_by_the_distance_asked(north: float, east: float) -> None:
    origin = (47.322, 5.0415)
    moved = offset(origin, north, east)
    assert math.isclose(
        distance_m(origin, moved), math.hypot(north, east), rel_tol=1e-3, abs_tol=0.01
    )
