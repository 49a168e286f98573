"""One description per dataset, and every format derived from it.

A dataset is a list of :class:`Attribute` (name, JSON Schema of the value, description,
unit). From that one list come the CSV header and rows, the Frictionless Table Schema
descriptor shipped beside the CSV, the JSON Schema of a GeoJSON feature's properties and of
an NGSI-LD entity, so the formats can never disagree on a name, a type or an enumeration.

Names follow smart-data-models (``dataModel.Streetlighting``: ``Streetlight``,
``StreetlightControlCabinet``, ``StreetlightGroup``) where it has the attribute, with its
types and enumerations; the fields of the arrêté of 27 December 2018 it lacks get names in
the same style (``colorTemperature``, ``luminousFlux``, ``upwardLightRatio``,
``cieFluxCode3``).

GeoJSON follows RFC 7946: WGS 84 (no ``crs`` member), positions ``[longitude, latitude]``,
a ``bbox`` of the collection, coordinates rounded to 7 decimals (about 1 cm).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NGSI_LD_CONTEXT = (
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Streetlighting/"
    "master/context.jsonld"
)
NGSI_LD_CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
COORDINATE_DECIMALS = 7
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Attribute:
    """One column of a dataset (one property of its features and entities).

    Attributes:
        name: the column's name; the smart-data-models name where it has one.
        schema: JSON Schema of a present value (type, enum, minimum, format...).
        description: what it means, for re-users (the dictionary).
        unit: unit of a number (``kWh``, ``W``, ``K``, ``lm``, ``%``, ``m``, ``h``).
        required: never empty; otherwise null (JSON) or an empty cell (CSV) means unknown.
        ngsi: part of the NGSI-LD entity (a smart-data-models attribute, or ours).
        relationship: an NGSI-LD Relationship to another entity (``ref...``).
    """

    name: str
    schema: Mapping[str, Any]
    description: str
    unit: str = ""
    required: bool = True
    ngsi: bool = True
    relationship: bool = False

    def json_schema(self) -> dict[str, Any]:
        described = dict(self.schema) | {"description": self.description}
        if self.required:
            return described
        return {"description": self.description, "anyOf": [dict(self.schema), {"type": "null"}]}


@dataclass(frozen=True)
class Table:
    """A dataset's description: its attributes and, when it has positions, its geometry."""

    name: str
    title: str
    description: str
    attributes: tuple[Attribute, ...]
    entity_type: str = ""  # the NGSI-LD type, when the dataset has an NGSI-LD variant
    point: bool = False  # rows carry longitude/latitude: GeoJSON available
    key: tuple[str, ...] = ("id",)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        names = [a.name for a in self.attributes]
        return [*names, "longitude", "latitude"] if self.point else names

    # -- CSV -----------------------------------------------------------------------------

    def csv_bytes(self, rows: Iterable[Row]) -> bytes:
        """RFC 4180 CSV in UTF-8, header first, ``\\r\\n`` line ends; lists joined by ``;``,
        unknown values left empty, numbers written as JSON writes them."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        columns = self.columns
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
        return out.getvalue().encode("utf-8")

    def table_schema(self) -> dict[str, Any]:
        """The Frictionless Table Schema descriptor of the CSV."""
        fields = [_table_field(a) for a in self.attributes]
        if self.point:
            fields += [
                {
                    "name": "longitude",
                    "type": "number",
                    "description": "WGS 84 longitude, degrees east",
                    "constraints": {"required": True, "minimum": -180, "maximum": 180},
                },
                {
                    "name": "latitude",
                    "type": "number",
                    "description": "WGS 84 latitude, degrees north",
                    "constraints": {"required": True, "minimum": -90, "maximum": 90},
                },
            ]
        return {
            "fields": fields,
            "primaryKey": list(self.key),
            "missingValues": [""],
        }

    # -- JSON Schemas --------------------------------------------------------------------

    def properties_schema(self) -> dict[str, Any]:
        """JSON Schema of one row as a JSON object (a feature's ``properties``)."""
        return {
            "type": "object",
            "properties": {a.name: a.json_schema() for a in self.attributes},
            "required": [a.name for a in self.attributes],
            "additionalProperties": False,
        }

    def geojson_schema(self) -> dict[str, Any]:
        """JSON Schema of the dataset as an RFC 7946 FeatureCollection of Points."""
        position = {
            "type": "array",
            "prefixItems": [
                {"type": "number", "minimum": -180, "maximum": 180},
                {"type": "number", "minimum": -90, "maximum": 90},
            ],
            "minItems": 2,
            "maxItems": 2,
        }
        return {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": f"schemas/{self.name}.geojson.schema.json",
            "title": f"{self.title} (GeoJSON, RFC 7946)",
            "type": "object",
            "required": ["type", "features"],
            "not": {"required": ["crs"]},  # RFC 7946 §4: WGS 84 only, no crs member
            "properties": {
                "type": {"const": "FeatureCollection"},
                "bbox": {
                    "type": "array",
                    "items": {"type": "number"},
                    "minItems": 4,
                    "maxItems": 4,
                },
                "features": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "id", "geometry", "properties"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"const": "Feature"},
                            "id": {"type": "string"},
                            "geometry": {
                                "type": "object",
                                "required": ["type", "coordinates"],
                                "additionalProperties": False,
                                "properties": {
                                    "type": {"const": "Point"},
                                    "coordinates": position,
                                },
                            },
                            "properties": self.properties_schema(),
                        },
                    },
                },
            },
        }

    def ngsi_ld_schema(self) -> dict[str, Any]:
        """JSON Schema of the NGSI-LD variant: an array of normalized entities."""
        properties: dict[str, Any] = {
            "id": {"type": "string", "pattern": f"^urn:ngsi-ld:{self.entity_type}:"},
            "type": {"const": self.entity_type},
            "@context": {"type": "array", "items": {"type": "string", "format": "uri"}},
            "location": {
                "type": "object",
                "required": ["type", "value"],
                "properties": {
                    "type": {"const": "GeoProperty"},
                    "value": {
                        "type": "object",
                        "required": ["type", "coordinates"],
                        "properties": {"type": {"const": "Point"}},
                    },
                },
            },
        }
        for a in self.attributes:
            if not a.ngsi or a.name == "id":
                continue
            if a.relationship:
                value = {
                    "required": ["type", "object"],
                    "properties": {
                        "type": {"const": "Relationship"},
                        "object": _urn_schema(a.schema),
                    },
                }
            else:
                value = {
                    "required": ["type", "value"],
                    "properties": {
                        "type": {"const": "Property"},
                        "value": dict(a.schema),
                    },
                }
            properties[a.name] = {"type": "object", "description": a.description} | value
        return {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": f"schemas/{self.name}.ngsi-ld.schema.json",
            "title": f"{self.title} (NGSI-LD, smart-data-models {self.entity_type})",
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "type", "@context", *(["location"] if self.point else [])],
                "properties": properties,
                "additionalProperties": False,
            },
        }

    def row_schema(self) -> dict[str, Any]:
        """JSON Schema of the dataset as a JSON array of rows (the CSV's content typed)."""
        row = self.properties_schema()
        if self.point:
            row["properties"] |= {
                "longitude": {"type": "number", "minimum": -180, "maximum": 180},
                "latitude": {"type": "number", "minimum": -90, "maximum": 90},
            }
            row["required"] = [*row["required"], "longitude", "latitude"]
        return {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": f"schemas/{self.name}.schema.json",
            "title": self.title,
            "description": self.description,
            "type": "array",
            "items": row,
        }

    # -- documents -----------------------------------------------------------------------

    def geojson(self, rows: Sequence[Row]) -> dict[str, Any]:
        """The rows as an RFC 7946 FeatureCollection (longitude first, WGS 84)."""
        features = []
        lons: list[float] = []
        lats: list[float] = []
        names = [a.name for a in self.attributes]
        for row in rows:
            lon, lat = _coordinate(row["longitude"]), _coordinate(row["latitude"])
            lons.append(lon)
            lats.append(lat)
            features.append(
                {
                    "type": "Feature",
                    "id": str(row["id"]),
                    "geometry": {"type": "Point", "coordinates": [lon, lat]},
                    "properties": {n: row.get(n) for n in names},
                }
            )
        collection: dict[str, Any] = {"type": "FeatureCollection"}
        if lons:
            collection["bbox"] = [min(lons), min(lats), max(lons), max(lats)]
        collection["features"] = features
        return collection

    def ngsi_ld(self, rows: Sequence[Row]) -> list[dict[str, Any]]:
        """The rows as normalized NGSI-LD entities of ``entity_type`` (unknowns left out)."""
        entities = []
        for row in rows:
            entity: dict[str, Any] = {
                "id": urn(self.entity_type, str(row["id"])),
                "type": self.entity_type,
            }
            if self.point:
                entity["location"] = {
                    "type": "GeoProperty",
                    "value": {
                        "type": "Point",
                        "coordinates": [
                            _coordinate(row["longitude"]),
                            _coordinate(row["latitude"]),
                        ],
                    },
                }
            for a in self.attributes:
                value = row.get(a.name)
                if not a.ngsi or a.name == "id" or value is None:
                    continue
                if a.relationship:
                    target = a.schema.get("x-entity", "")
                    if isinstance(value, list):
                        entity[a.name] = {
                            "type": "Relationship",
                            "object": [urn(target, str(v)) for v in value],
                        }
                    else:
                        entity[a.name] = {"type": "Relationship", "object": urn(target, str(value))}
                else:
                    entity[a.name] = {"type": "Property", "value": value}
            entity["@context"] = [NGSI_LD_CONTEXT, NGSI_LD_CORE]
            entities.append(entity)
        return entities


def urn(entity_type: str, ident: str) -> str:
    return f"urn:ngsi-ld:{entity_type}:{ident}"


def _urn_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    target = schema.get("x-entity", "")
    one = {"type": "string", "pattern": f"^urn:ngsi-ld:{target}:"}
    if schema.get("type") == "array":
        return {"type": "array", "items": one, "minItems": 1, "uniqueItems": True}
    return one


def _coordinate(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"coordinate {value!r} is not a finite number")
    return round(number, COORDINATE_DECIMALS)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    if isinstance(value, float):
        return json.dumps(value)
    return str(value)


_TABLE_TYPES = {"string": "string", "number": "number", "integer": "integer", "boolean": "boolean"}
_TABLE_FORMATS = {"date": "date", "date-time": "datetime", "uri": "string"}


def _table_field(a: Attribute) -> dict[str, Any]:
    schema = a.schema
    kind = schema.get("type", "string")
    described: dict[str, Any] = {"name": a.name, "description": a.description}
    constraints: dict[str, Any] = {}
    if kind == "array":
        # Lists travel as one cell, items joined by ";".
        described["type"] = "string"
        items = schema.get("items", {})
        if "enum" in items:
            alternatives = "|".join(str(v) for v in items["enum"])
            constraints["pattern"] = f"({alternatives})(;({alternatives}))*"
    else:
        fmt = schema.get("format", "")
        described["type"] = _TABLE_FORMATS.get(fmt) or _TABLE_TYPES[kind]
        if "enum" in schema:
            constraints["enum"] = list(schema["enum"])
        if "minimum" in schema:
            constraints["minimum"] = schema["minimum"]
        if "maximum" in schema:
            constraints["maximum"] = schema["maximum"]
    if a.unit:
        described["unit"] = a.unit
    if a.required:
        constraints["required"] = True
    if constraints:
        described["constraints"] = constraints
    return described
