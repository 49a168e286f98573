"""What describes an export: the DCAT-AP catalogue (JSON-LD) and the Frictionless Data
Package, and the assembly of every file of an export.

The licence is the **Licence Ouverte / Open Licence 2.0** (Etalab) by default: the French
State's licence for public information, compatible with CC BY 4.0 and with ODbL, asking
only that the source be credited and the date of last update given; a publisher that wants
share-alike sets ``licence = "odbl"`` (ODbL 1.0) instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.opendata.datasets import TABLES, Inputs, rows_of
from domain.opendata.privacy import check, check_rows
from domain.opendata.tables import Table

LICENCES: Mapping[str, tuple[str, str]] = {
    "etalab-2.0": (
        "Licence Ouverte / Open Licence 2.0",
        "https://www.etalab.gouv.fr/wp-content/uploads/2017/04/ETALAB-Licence-Ouverte-v2.0.pdf",
    ),
    "odbl": ("Open Database License (ODbL) 1.0", "https://opendatacommons.org/licenses/odbl/1-0/"),
}
FREQUENCY = "http://publications.europa.eu/resource/authority/frequency/"
FORMATS = {
    "csv": ("text/csv", "http://publications.europa.eu/resource/authority/file-type/CSV"),
    "geojson": (
        "application/geo+json",
        "http://publications.europa.eu/resource/authority/file-type/GEOJSON",
    ),
    "ngsi-ld.json": (
        "application/ld+json",
        "http://publications.europa.eu/resource/authority/file-type/JSON_LD",
    ),
}
# How often each dataset changes (the export runs daily; programs are tonight's).
UPDATE = {
    "streetlights": "DAILY",
    "cabinets": "DAILY",
    "programs": "DAILY",
    "energy": "DAILY",
    "outages": "DAILY",
    "access_sites": "DAILY",
}
NGSI_LD = ("streetlights", "cabinets", "programs")


@dataclass(frozen=True)
class Publisher:
    """Who publishes, under which licence, for what area (``[public]`` of the configuration)."""

    name: str = "Dijon métropole"
    contact_url: str = "https://www.metropole-dijon.fr/contact"
    contact_email: str = ""
    licence: str = "etalab-2.0"
    base_url: str = ""  # where re-users fetch the files; "" = relative links
    spatial: str = "Dijon métropole (23 communes), Côte-d'Or, France"
    language: str = "fr"


def distribution_files(name: str) -> list[str]:
    table = TABLES[name]
    files = [f"{name}.csv"]
    if table.point:
        files.append(f"{name}.geojson")
    if name in NGSI_LD:
        files.append(f"{name}.ngsi-ld.json")
    return files


def catalogue(
    publisher: Publisher,
    generated_at: datetime,
    files: Mapping[str, bytes],
    bbox: Sequence[float] | None,
) -> dict[str, Any]:
    """The DCAT-AP 2 catalogue of an export, in JSON-LD."""
    licence_title, licence_uri = LICENCES[publisher.licence]
    issued = generated_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    base = publisher.base_url.rstrip("/") + "/" if publisher.base_url else ""
    spatial: dict[str, Any] = {"@type": "dct:Location", "skos:prefLabel": publisher.spatial}
    if bbox is not None:
        w, s, e, n = bbox
        spatial["dcat:bbox"] = {
            "@type": "gsp:wktLiteral",
            "@value": f"POLYGON(({w} {s},{e} {s},{e} {n},{w} {n},{w} {s}))",
        }
    contact: dict[str, Any] = {
        "@type": "vcard:Organization",
        "vcard:fn": publisher.name,
        "vcard:hasURL": {"@id": publisher.contact_url},
    }
    if publisher.contact_email:
        contact["vcard:hasEmail"] = {"@id": f"mailto:{publisher.contact_email}"}
    datasets = []
    for name, table in TABLES.items():
        distributions = []
        for file in distribution_files(name):
            kind = file.split(".", 1)[1]
            media, file_type = FORMATS[kind]
            dist: dict[str, Any] = {
                "@type": "dcat:Distribution",
                "@id": f"{base}{file}",
                "dcat:accessURL": {"@id": f"{base}{file}"},
                "dcat:downloadURL": {"@id": f"{base}{file}"},
                "dcat:mediaType": media,
                "dct:format": {"@id": file_type},
                "dcat:byteSize": len(files[file]),
                "dct:license": {"@id": licence_uri},
                "dct:modified": issued,
                "dct:conformsTo": {"@id": f"{base}{schema_file(file)}"},
            }
            distributions.append(dist)
        datasets.append(
            {
                "@type": "dcat:Dataset",
                "@id": f"{base}#{name}",
                "dct:identifier": name,
                "dct:title": table.title,
                "dct:description": table.description,
                "dct:publisher": {"@type": "foaf:Organization", "foaf:name": publisher.name},
                "dcat:contactPoint": contact,
                "dct:license": {"@id": licence_uri},
                "dct:accessRights": {
                    "@id": "http://publications.europa.eu/resource/authority/access-right/PUBLIC"
                },
                "dct:accrualPeriodicity": {"@id": FREQUENCY + UPDATE[name]},
                "dct:spatial": spatial,
                "dct:modified": issued,
                "dct:language": {
                    "@id": "http://publications.europa.eu/resource/authority/language/FRA"
                },
                "dcat:theme": {
                    "@id": "http://publications.europa.eu/resource/authority/data-theme/ENER"
                },
                "dcat:keyword": ["éclairage public", "street lighting", name],
                "dcat:distribution": distributions,
            }
        )
    return {
        "@context": {
            "dcat": "http://www.w3.org/ns/dcat#",
            "dct": "http://purl.org/dc/terms/",
            "foaf": "http://xmlns.com/foaf/0.1/",
            "vcard": "http://www.w3.org/2006/vcard/ns#",
            "skos": "http://www.w3.org/2004/02/skos/core#",
            "gsp": "http://www.opengis.net/ont/geosparql#",
        },
        "@type": "dcat:Catalog",
        "@id": f"{base}catalogue.jsonld",
        "dct:title": f"Données ouvertes de l'éclairage public — {publisher.name}",
        "dct:description": (
            "Street lighting, bollards and crossings of the métropole: inventory, programs, "
            "energy, outages. No personal data."
        ),
        "dct:publisher": {"@type": "foaf:Organization", "foaf:name": publisher.name},
        "dct:license": {"@id": licence_uri},
        "dct:rights": licence_title,
        "dct:modified": issued,
        "dct:spatial": spatial,
        "dcat:dataset": datasets,
    }


def schema_file(file: str) -> str:
    name, kind = file.split(".", 1)
    return {
        "csv": f"schemas/{name}.tableschema.json",
        "geojson": f"schemas/{name}.geojson.schema.json",
        "ngsi-ld.json": f"schemas/{name}.ngsi-ld.schema.json",
    }[kind]


def data_package(publisher: Publisher, generated_at: datetime) -> dict[str, Any]:
    """The Frictionless Data Package: every CSV with its Table Schema."""
    licence_title, licence_uri = LICENCES[publisher.licence]
    return {
        "profile": "tabular-data-package",
        "name": "ondijon-street-lighting",
        "title": f"Éclairage public — {publisher.name}",
        "created": generated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "licenses": [{"name": publisher.licence, "path": licence_uri, "title": licence_title}],
        "resources": [
            {
                "profile": "tabular-data-resource",
                "name": name.replace("_", "-"),
                "path": f"{name}.csv",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "title": table.title,
                "dialect": {"delimiter": ",", "lineTerminator": "\r\n", "header": True},
                "schema": f"schemas/{name}.tableschema.json",
            }
            for name, table in TABLES.items()
        ],
    }


def _dump(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _pretty(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2) + "\n").encode()


def schemas() -> dict[str, bytes]:
    """Every schema file of an export (they depend on nothing but the dictionaries)."""
    out: dict[str, bytes] = {}
    for name, table in TABLES.items():
        out[f"schemas/{name}.tableschema.json"] = _pretty(table.table_schema())
        out[f"schemas/{name}.schema.json"] = _pretty(table.row_schema())
        if table.point:
            out[f"schemas/{name}.geojson.schema.json"] = _pretty(table.geojson_schema())
        if name in NGSI_LD:
            out[f"schemas/{name}.ngsi-ld.schema.json"] = _pretty(table.ngsi_ld_schema())
    return out


def export_files(inputs: Inputs, publisher: Publisher, generated_at: datetime) -> dict[str, bytes]:
    """Every file of an export, by relative path; raises PrivacyError rather than publish
    anything that looks personal."""
    files: dict[str, bytes] = {}
    bbox: list[float] | None = None
    allowed = [publisher.contact_email]
    for name, rows in rows_of(inputs).items():
        table: Table = TABLES[name]
        check_rows(name, table.columns, rows, allowed)
        files[f"{name}.csv"] = table.csv_bytes(rows)
        if table.point:
            collection = table.geojson(rows)
            files[f"{name}.geojson"] = _dump(collection)
            if "bbox" in collection:
                box = collection["bbox"]
                bbox = (
                    box
                    if bbox is None
                    else [
                        min(bbox[0], box[0]),
                        min(bbox[1], box[1]),
                        max(bbox[2], box[2]),
                        max(bbox[3], box[3]),
                    ]
                )
        if name in NGSI_LD:
            files[f"{name}.ngsi-ld.json"] = _dump(table.ngsi_ld(rows))
    files |= schemas()
    files["datapackage.json"] = _pretty(data_package(publisher, generated_at))
    files["catalogue.jsonld"] = _pretty(catalogue(publisher, generated_at, files, bbox))
    # The dataset files came from rows checked above; what describes them is checked here.
    check(
        {n: d for n, d in files.items() if n.split(".", 1)[0] not in TABLES}, allowed_values=allowed
    )
    return files
