"""Write the map's commune outlines: ``python -m orchestrator.console.outlines`` (or
``make console-outlines``) writes ``static/communes.geojson`` from the generated city's
commune centres (:mod:`domain.city.outlines`: approximate cells, said so in every
feature). An operator with the real outlines (IGN ADMIN EXPRESS) puts them in that file
instead: a FeatureCollection of Polygons (or MultiPolygons), each with a ``name``."""

from __future__ import annotations

import json
from pathlib import Path

from domain.city.generator import COMMUNES
from domain.city.outlines import feature_collection

OUTLINES = Path(__file__).resolve().parent / "static" / "communes.geojson"


def outlines_text() -> str:
    """The collection, one feature a line (a replaced commune shows as one line changed)."""
    collection = feature_collection(COMMUNES)
    features = ",\n".join(
        json.dumps(f, ensure_ascii=False, separators=(",", ":")) for f in collection["features"]
    )
    return f'{{"type":"FeatureCollection","features":[\n{features}\n]}}\n'


def main() -> None:
    OUTLINES.write_text(outlines_text(), encoding="utf-8")
    print(f"wrote {OUTLINES} ({len(COMMUNES)} communes, approximate outlines)")


if __name__ == "__main__":
    main()
