"""The approximate commune outlines: Voronoi cells checked against a brute-force nearest
centre, for the métropole's communes and for many random sets of centres."""

from __future__ import annotations

import itertools
import random

import pytest

from domain.city.generator import COMMUNES
from domain.city.geometry import distance_m, inside
from domain.city.outlines import voronoi_cells


def nearest(point: tuple[float, float], centres: list[tuple[float, float]]) -> list[float]:
    """Great-circle distances in metres from ``point`` (lat, lon) to each centre."""
    return [distance_m(point, c) for c in centres]


def signed_area(ring: list[tuple[float, float]]) -> float:
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring)) / 2


def check(centres: list[tuple[float, float]], rng: random.Random, samples: int) -> None:
    cells = voronoi_cells(centres)
    assert len(cells) == len(centres)
    polygons = []
    for centre, ring in zip(centres, cells, strict=True):
        assert ring[0] == ring[-1] and len(ring) >= 4  # closed
        assert signed_area(ring) > 0  # counter-clockwise in (lon, lat): right-hand rule
        polygon = [(lat, lon) for lon, lat in ring[:-1]]
        assert inside(centre, polygon)
        polygons.append(polygon)
    lats = [p[0] for poly in polygons for p in poly]
    lons = [p[1] for poly in polygons for p in poly]
    hit = 0
    for _ in range(samples):
        point = (rng.uniform(min(lats), max(lats)), rng.uniform(min(lons), max(lons)))
        holders = [i for i, poly in enumerate(polygons) if inside(point, poly)]
        assert len(holders) <= 1, (point, holders)  # no overlap
        d = nearest(point, centres)
        first, second = sorted(d)[:2]
        # Off the boundaries: the cells are drawn in a local plane, true to some tens of
        # metres across the métropole against the great-circle distances.
        if holders and second - first > 100.0:
            hit += 1
            assert d[holders[0]] == first, point  # each point belongs to its nearest centre
    assert hit > samples // 4


def test_the_metropoles_cells_hold_their_centres_and_do_not_overlap() -> None:
    check([(c.latitude, c.longitude) for c in COMMUNES], random.Random(14), 20_000)


@pytest.mark.parametrize("seed", range(30))
def test_random_centres_give_the_nearest_centre_cells(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 30)
    centres = list(
        {(round(rng.uniform(47.1, 47.5), 4), round(rng.uniform(4.8, 5.3), 4)) for _ in range(n)}
    )
    check(centres, rng, 1_500)


def test_repeated_centres_are_refused() -> None:
    with pytest.raises(ValueError, match="centres"):
        voronoi_cells([(47.3, 5.0), (47.3, 5.0)])
