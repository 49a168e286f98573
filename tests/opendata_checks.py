"""Checks every open data file against its schema, written apart from the code under test:
JSON Schema (jsonschema, draft 2020-12 with formats), RFC 7946 rules on GeoJSON, and CSV
against its Frictionless Table Schema descriptor (types, required, enumerations, bounds,
patterns, primary key), read with the csv module."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, datetime
from typing import Any

import jsonschema

TYPES = {
    "string": lambda v: v,
    "number": float,
    "integer": int,
    "boolean": {"true": True, "false": False}.__getitem__,
    "date": date.fromisoformat,
    "datetime": lambda v: datetime.strptime(v, "%Y-%m-%dT%H:%M:%SZ"),
}


def validate_json(schema: dict[str, Any], document: Any) -> None:
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, f"{len(errors)} errors, first: {errors[0].message} at {list(errors[0].path)}"


def validate_csv(table_schema: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
    """Rows of ``data`` typed by ``table_schema``; AssertionError on the first violation."""
    text = data.decode("utf-8")
    assert "\r\n" in text or text.count("\n") == 0
    rows = list(csv.reader(io.StringIO(text, newline="")))
    fields = table_schema["fields"]
    assert rows[0] == [f["name"] for f in fields], "header differs from the schema's fields"
    missing = set(table_schema.get("missingValues", [""]))
    typed = []
    keys = set()
    for n, row in enumerate(rows[1:], start=2):
        assert len(row) == len(fields), f"line {n}: {len(row)} cells"
        record: dict[str, Any] = {}
        for f, cell in zip(fields, row, strict=True):
            c = f.get("constraints", {})
            if cell in missing:
                assert not c.get("required"), f"line {n}: {f['name']} is required"
                record[f["name"]] = None
                continue
            value = TYPES[f["type"]](cell)
            if "enum" in c:
                assert value in c["enum"], f"line {n}: {f['name']}={cell!r} not in enum"
            if "minimum" in c:
                assert value >= c["minimum"], f"line {n}: {f['name']}={cell} < minimum"
            if "maximum" in c:
                assert value <= c["maximum"], f"line {n}: {f['name']}={cell} > maximum"
            if "pattern" in c:
                assert re.fullmatch(c["pattern"], cell), f"line {n}: {f['name']}={cell!r}"
            record[f["name"]] = value
        key = tuple(record[k] for k in table_schema["primaryKey"])
        assert key not in keys, f"line {n}: primary key {key} repeated"
        keys.add(key)
        typed.append(record)
    return typed


def check_rfc7946(collection: dict[str, Any]) -> None:
    """What RFC 7946 asks beyond the schema: no crs, WGS 84 ranges, longitude first
    (within the bbox, which is [west, south, east, north])."""
    assert "crs" not in collection
    features = collection["features"]
    if not features:
        return
    west, south, east, north = collection["bbox"]
    for f in features:
        lon, lat = f["geometry"]["coordinates"]
        assert -180 <= lon <= 180 and -90 <= lat <= 90
        assert west <= lon <= east and south <= lat <= north


def validate_export(files: dict[str, bytes]) -> dict[str, list[dict[str, Any]]]:
    """Every file of an export against its schema; the typed CSV rows by dataset."""
    package = json.loads(files["datapackage.json"])
    rows = {}
    for resource in package["resources"]:
        schema = json.loads(files[resource["schema"]])
        rows[resource["path"][:-4]] = validate_csv(schema, files[resource["path"]])
    catalogue = json.loads(files["catalogue.jsonld"])
    for dataset in catalogue["dcat:dataset"]:
        for dist in dataset["dcat:distribution"]:
            name = dist["@id"].rsplit("/", 1)[-1]
            schema_name = dist["dct:conformsTo"]["@id"].split("/", 1)[-1]
            schema = json.loads(files[f"schemas/{schema_name}"])
            assert dist["dcat:byteSize"] == len(files[name])
            if name.endswith(".csv"):
                continue
            document = json.loads(files[name])
            validate_json(schema, document)
            if name.endswith(".geojson"):
                check_rfc7946(document)
                assert len(document["features"]) == len(rows[name[: -len(".geojson")]])
    for name, data in files.items():
        if name.startswith("schemas/") and name.endswith(".schema.json"):
            jsonschema.Draft202012Validator.check_schema(json.loads(data))
    for name in rows:
        validate_json(json.loads(files[f"schemas/{name}.schema.json"]), _as_json(files, name))
    return rows


def _as_json(files: dict[str, bytes], name: str) -> list[dict[str, Any]]:
    """The GeoJSON's properties with its coordinates, or the typed CSV rows."""
    if f"{name}.geojson" in files:
        out = []
        for f in json.loads(files[f"{name}.geojson"])["features"]:
            lon, lat = f["geometry"]["coordinates"]
            out.append(f["properties"] | {"longitude": lon, "latitude": lat})
        return out
    schema = json.loads(files[f"schemas/{name}.tableschema.json"])
    typed = validate_csv(schema, files[f"{name}.csv"])
    return [{k: (v.isoformat() if isinstance(v, date) else v) for k, v in r.items()} for r in typed]
