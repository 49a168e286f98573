"""The map's bundled commune outlines (``orchestrator/console/static/communes.geojson``):
valid RFC 7946 as it is shipped, one cell per commune of the generated city holding its
centre, no two overlapping, and up to date with the command that writes it."""

from __future__ import annotations

import itertools
import json
import random

from domain.city.generator import COMMUNES
from domain.city.geometry import inside
from orchestrator.console.outlines import OUTLINES, outlines_text


def test_the_shipped_file_is_what_the_command_writes() -> None:
    assert OUTLINES.read_text(encoding="utf-8") == outlines_text(), "run `make console-outlines`"


def test_the_outlines_are_rfc_7946_and_each_commune_is_in_its_own_cell_only() -> None:
    data = json.loads(OUTLINES.read_text(encoding="utf-8"))
    assert data["type"] == "FeatureCollection"
    names = [f["properties"]["name"] for f in data["features"]]
    assert sorted(names) == sorted(c.name for c in COMMUNES)
    polygons = {}
    for feature in data["features"]:
        assert feature["type"] == "Feature"
        assert feature["properties"]["approximate"] is True
        assert "IGN ADMIN EXPRESS" in feature["properties"]["source"]
        geometry = feature["geometry"]
        assert geometry["type"] == "Polygon" and len(geometry["coordinates"]) == 1
        ring = geometry["coordinates"][0]
        assert len(ring) >= 4 and ring[0] == ring[-1]  # a closed linear ring
        for position in ring:  # longitude first (Dijon: 5° E, 47° N)
            assert len(position) == 2 and 4.7 < position[0] < 5.4 and 47.0 < position[1] < 47.6
        # Right-hand rule: an exterior ring turns counter-clockwise (positive area).
        area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring))
        assert area > 0, feature["properties"]["name"]
        polygons[feature["properties"]["name"]] = [(lat, lon) for lon, lat in ring[:-1]]
    for commune in COMMUNES:
        holders = [
            n for n, p in polygons.items() if inside((commune.latitude, commune.longitude), p)
        ]
        assert holders == [commune.name]
    rng = random.Random(7946)
    inside_any = 0
    for _ in range(20_000):
        point = (rng.uniform(47.15, 47.45), rng.uniform(4.85, 5.25))
        holders = [n for n, p in polygons.items() if inside(point, p)]
        assert len(holders) <= 1, (point, holders)
        inside_any += bool(holders)
    assert inside_any > 10_000  # the cells cover the métropole, not a sliver of it
