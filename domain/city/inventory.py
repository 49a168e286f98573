"""The asset register's records: parse an inventory (CSV or GeoJSON), check it, diff it.

An inventory lists the city's assets, one per row (CSV) or per Point feature (GeoJSON):

- ``cabinet``: a street cabinet, i.e. one gateway; ``id`` is the gateway id its agent
  reports (its certificate's name); commune, position, ``serial``, ``tags`` (``;``-separated).
- ``lamp``: a luminaire, with the fields of the French décret of 27 December 2018 on light
  pollution: ``power_w``, ``colour_temperature_k``, ``luminous_flux_lm``,
  ``upward_light_ratio`` (percent of the flux sent above the horizontal), ``lantern_height_m``,
  ``install_date``; tied to its cabinet (``cabinet``), the output ``channel`` it hangs on, and
  the ``device`` id the cabinet's agent reports for it.
- ``crossing``: a signalised crossroads (its controller's ``device`` id on its cabinet).
- ``bollard_site``: retractable bollards at one access (``bollards`` of them, the site's
  ``device`` id on its cabinet).

Every asset is tied to the device its agent reports: ``(cabinet, device)``, the pair the
orchestrator sees in the gateway's state. A lamp's commune is its cabinet's when left empty.

Errors name the line (CSV, counting the header as line 1) or the feature (GeoJSON) and the
field; the first error stops the parse and nothing is imported. :func:`diff` compares an
inventory with the register: added, changed (with the fields that changed), removed. Only
the kinds present in the inventory are compared, so a file of lamps never removes cabinets.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from foundation.errors import FieldError

MAX_ASSETS = 200_000
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
_GATEWAY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class InventoryError(FieldError):
    """An inventory is refused: ``field`` names the line or feature and the column."""


class AssetKind(StrEnum):
    LAMP = "lamp"
    CABINET = "cabinet"
    CROSSING = "crossing"
    BOLLARD_SITE = "bollard_site"


@dataclass(frozen=True)
class Asset:
    """One asset of the register. Fields that do not apply to a kind stay at their zero."""

    kind: AssetKind
    asset_id: str
    gateway_id: str  # the cabinet's gateway; a cabinet's own id
    device_id: str  # the id the cabinet's agent reports; "" for a cabinet
    commune: str
    latitude: float
    longitude: float
    channel: int = 0
    power_w: float = 0.0
    colour_temperature_k: int = 0
    luminous_flux_lm: float = 0.0
    upward_light_ratio: float = 0.0
    lantern_height_m: float = 0.0
    install_date: str = ""
    serial: str = ""
    tags: tuple[str, ...] = ()
    name: str = ""
    bollards: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind.value, self.asset_id)


# Columns of an inventory, in file order; ``cabinet`` and ``device`` are the CSV names of
# gateway_id and device_id.
COLUMNS = (
    "kind",
    "id",
    "cabinet",
    "device",
    "commune",
    "latitude",
    "longitude",
    "channel",
    "power_w",
    "colour_temperature_k",
    "luminous_flux_lm",
    "upward_light_ratio",
    "lantern_height_m",
    "install_date",
    "serial",
    "tags",
    "name",
    "bollards",
)
_ATTRIBUTE = {"cabinet": "gateway_id", "device": "device_id", "id": "asset_id"}
# What each kind requires (beyond kind, id and position).
REQUIRED: dict[AssetKind, tuple[str, ...]] = {
    AssetKind.CABINET: ("commune",),
    AssetKind.LAMP: (
        "cabinet",
        "device",
        "channel",
        "power_w",
        "colour_temperature_k",
        "luminous_flux_lm",
        "upward_light_ratio",
        "lantern_height_m",
        "install_date",
    ),
    AssetKind.CROSSING: ("cabinet", "device"),
    AssetKind.BOLLARD_SITE: ("cabinet", "device", "bollards"),
}
# Columns a kind may carry; any other non-empty cell is a mistake worth naming.
ALLOWED: dict[AssetKind, frozenset[str]] = {
    AssetKind.CABINET: frozenset({"commune", "serial", "tags"}),
    AssetKind.LAMP: frozenset(REQUIRED[AssetKind.LAMP]) | {"commune"},
    AssetKind.CROSSING: frozenset({"cabinet", "device", "commune", "name"}),
    AssetKind.BOLLARD_SITE: frozenset({"cabinet", "device", "commune", "name", "bollards"}),
}
_BASE = frozenset({"kind", "id", "latitude", "longitude"})


@dataclass
class Diff:
    """What importing an inventory would do to the register."""

    added: list[Asset] = field(default_factory=list)
    changed: list[tuple[Asset, Asset, tuple[str, ...]]] = field(default_factory=list)
    removed: list[Asset] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)


# -- checking one asset ---------------------------------------------------------------------


def check_asset(asset: Asset, where: str, *, today: date | None = None) -> Asset:
    """Return ``asset`` if it is valid, else raise :class:`InventoryError` naming
    ``where`` and the field. ``where`` is ``"line 12"``, ``"features[3]"``, ``"assets[7]"``."""

    def bad(column: str, reason: str) -> InventoryError:
        return InventoryError(f"{where}, {column}" if where else column, reason)

    if not _ID.fullmatch(asset.asset_id):
        raise bad("id", f"{asset.asset_id!r} is not an id (1-64 letters, digits, '._:/-')")
    if not (-90 <= asset.latitude <= 90) or not math.isfinite(asset.latitude):
        raise bad("latitude", "must be between -90 and 90")
    if not (-180 <= asset.longitude <= 180) or not math.isfinite(asset.longitude):
        raise bad("longitude", "must be between -180 and 180")
    if asset.commune and (
        len(asset.commune) > 128 or not asset.commune.isprintable() or asset.commune == "*"
    ):
        raise bad("commune", "1 to 128 printable characters, not '*'")
    kind = asset.kind
    if kind is AssetKind.CABINET:
        if not _GATEWAY.fullmatch(asset.asset_id):
            raise bad("id", "a cabinet's id is its gateway id: 1-63 letters, digits, '._-'")
        if not asset.commune:
            raise bad("commune", "required for a cabinet")
        if len(asset.serial) > 128 or not asset.serial.isprintable():
            raise bad("serial", "at most 128 printable characters")
        if len(asset.tags) > 32:
            raise bad("tags", "at most 32 tags")
        for tag in asset.tags:
            if not tag or len(tag) > 64 or not tag.isprintable() or ";" in tag:
                raise bad("tags", f"{tag!r}: 1 to 64 printable characters, no ';'")
        return asset
    if not _GATEWAY.fullmatch(asset.gateway_id):
        raise bad("cabinet", f"{asset.gateway_id!r} is not a gateway id")
    if not asset.device_id or len(asset.device_id) > 128 or not asset.device_id.isprintable():
        raise bad("device", "1 to 128 printable characters (the id the agent reports)")
    if len(asset.name) > 128 or not asset.name.isprintable():
        raise bad("name", "at most 128 printable characters")
    if kind is AssetKind.BOLLARD_SITE and not 1 <= asset.bollards <= 64:
        raise bad("bollards", "between 1 and 64")
    if kind is AssetKind.LAMP:
        _check_lamp(asset, bad, today)
    return asset


def _check_lamp(asset: Asset, bad: Any, today: date | None) -> None:
    if not 1 <= asset.channel <= 64:
        raise bad("channel", "between 1 and 64 (the cabinet's output it hangs on)")
    if not 0 < asset.power_w <= 2000 or not math.isfinite(asset.power_w):
        raise bad("power_w", "more than 0 and at most 2000 W")
    if not 1000 <= asset.colour_temperature_k <= 10000:
        raise bad("colour_temperature_k", "between 1000 and 10000 K")
    if not 0 < asset.luminous_flux_lm <= 500_000 or not math.isfinite(asset.luminous_flux_lm):
        raise bad("luminous_flux_lm", "more than 0 and at most 500000 lm")
    if not 0 <= asset.upward_light_ratio <= 100 or not math.isfinite(asset.upward_light_ratio):
        raise bad("upward_light_ratio", "a percentage, between 0 and 100")
    if not 0 < asset.lantern_height_m <= 60 or not math.isfinite(asset.lantern_height_m):
        raise bad("lantern_height_m", "more than 0 and at most 60 m")
    try:
        installed = date.fromisoformat(asset.install_date)
    except ValueError:
        raise bad("install_date", f"{asset.install_date!r} is not a date (YYYY-MM-DD)") from None
    if installed.year < 1900 or (today is not None and installed > today):
        raise bad("install_date", "must be after 1900 and not in the future")


def check_inventory(
    assets: Sequence[Asset],
    where: Sequence[str],
    *,
    known_cabinets: Mapping[str, str] | None = None,
    today: date | None = None,
) -> list[Asset]:
    """Check each asset and the inventory as a whole; return the assets with lamps' and
    equipment's empty communes taken from their cabinet.

    ``where[i]`` names asset ``i`` in errors. ``known_cabinets`` (gateway id -> commune) are
    cabinets already in the register, which an inventory of lamps alone may refer to.
    """
    if len(assets) > MAX_ASSETS:
        raise InventoryError("assets", f"more than {MAX_ASSETS} assets")
    seen: dict[tuple[str, str], str] = {}
    devices: dict[tuple[str, str], str] = {}
    cabinets = dict(known_cabinets or {})
    for asset, place in zip(assets, where, strict=True):
        check_asset(asset, place, today=today)
        if asset.key in seen:
            raise InventoryError(
                f"{place}, id",
                f"{asset.kind.value} {asset.asset_id!r} is also at {seen[asset.key]}",
            )
        seen[asset.key] = place
        if asset.kind is AssetKind.CABINET:
            cabinets[asset.asset_id] = asset.commune
    result = []
    for asset, place in zip(assets, where, strict=True):
        if asset.kind is not AssetKind.CABINET:
            if asset.gateway_id not in cabinets:
                raise InventoryError(
                    f"{place}, cabinet", f"no cabinet {asset.gateway_id!r} in the inventory"
                )
            pair = (asset.gateway_id, asset.device_id)
            if pair in devices:
                raise InventoryError(
                    f"{place}, device",
                    f"{asset.device_id!r} of cabinet {asset.gateway_id!r} is also at "
                    f"{devices[pair]}",
                )
            devices[pair] = place
            if not asset.commune:
                asset = dataclasses.replace(asset, commune=cabinets[asset.gateway_id])
        result.append(asset)
    return result


# -- reading --------------------------------------------------------------------------------


def _number(text: str, column: str, where: str, *, integer: bool = False) -> Any:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise InventoryError(f"{where}, {column}", f"{text!r} is not {kind}") from None
    if not integer and not math.isfinite(value):
        raise InventoryError(f"{where}, {column}", "must be a finite number")
    return value


def _asset_from_cells(cells: Mapping[str, Any], where: str) -> Asset:
    """An asset from named cells (CSV strings, or GeoJSON properties of any JSON type)."""
    raw_kind = str(cells.get("kind") or "")
    try:
        kind = AssetKind(raw_kind)
    except ValueError:
        choices = ", ".join(k.value for k in AssetKind)
        raise InventoryError(f"{where}, kind", f"{raw_kind!r} is not one of {choices}") from None
    given = {k for k, v in cells.items() if v not in ("", None)}
    for column in sorted(given - _BASE - ALLOWED[kind]):
        raise InventoryError(f"{where}, {column}", f"not a field of a {kind.value}")
    for column in ("id", "latitude", "longitude", *REQUIRED[kind]):
        if column not in given:
            raise InventoryError(f"{where}, {column}", f"required for a {kind.value}")
    values: dict[str, Any] = {"kind": kind}
    for column in given - {"kind"}:
        value = cells[column]
        attribute = _ATTRIBUTE.get(column, column)
        if column in ("latitude", "longitude", "power_w", "luminous_flux_lm") or column in (
            "upward_light_ratio",
            "lantern_height_m",
        ):
            if isinstance(value, bool):
                raise InventoryError(f"{where}, {column}", "must be a number")
            values[attribute] = _number(str(value), column, where)
        elif column in ("channel", "colour_temperature_k", "bollards"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise InventoryError(f"{where}, {column}", "must be a whole number")
            values[attribute] = _number(
                str(int(value) if isinstance(value, float) else value), column, where, integer=True
            )
        elif column == "tags":
            if isinstance(value, list):
                values["tags"] = tuple(str(t) for t in value)
            else:
                values["tags"] = tuple(t.strip() for t in str(value).split(";") if t.strip())
        elif column not in COLUMNS:
            raise InventoryError(f"{where}, {column}", "unknown field")
        else:
            if not isinstance(value, str):
                raise InventoryError(f"{where}, {column}", "must be text")
            values[attribute] = value.strip()
    values.setdefault("gateway_id", values["asset_id"] if kind is AssetKind.CABINET else "")
    values.setdefault("device_id", "")
    values.setdefault("commune", "")
    return Asset(**values)


def read_csv(text: str) -> tuple[list[Asset], list[str]]:
    """Assets of a CSV inventory and where each was (``"line N"``); the header names the
    columns (any order, unknown columns refused)."""
    reader = csv.DictReader(io.StringIO(text), strict=True)
    header = reader.fieldnames or []
    for column in header:
        if column not in COLUMNS:
            raise InventoryError(
                f"line 1, {column}", f"unknown column (known: {', '.join(COLUMNS)})"
            )
    for column in ("kind", "id", "latitude", "longitude"):
        if column not in header:
            raise InventoryError(f"line 1, {column}", "missing column")
    assets, where = [], []
    try:
        for row in reader:
            line = f"line {reader.line_num}"
            if None in row:
                raise InventoryError(line, "more cells than columns")
            if not any(v for v in row.values()):
                continue
            assets.append(_asset_from_cells(row, line))
            where.append(line)
            if len(assets) > MAX_ASSETS:
                raise InventoryError(line, f"more than {MAX_ASSETS} assets")
    except csv.Error as exc:
        raise InventoryError(f"line {reader.line_num}", f"not valid CSV ({exc})") from None
    return assets, where


def read_geojson(text: str) -> tuple[list[Asset], list[str]]:
    """Assets of a GeoJSON FeatureCollection of Point features (``properties`` carry the
    columns, ``geometry.coordinates`` is ``[longitude, latitude]``)."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        line = getattr(exc, "lineno", 0)
        raise InventoryError(f"line {line}", f"not valid JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise InventoryError("type", "must be a FeatureCollection")
    features = document.get("features")
    if not isinstance(features, list):
        raise InventoryError("features", "must be a list")
    if len(features) > MAX_ASSETS:
        raise InventoryError("features", f"more than {MAX_ASSETS} assets")
    assets, where = [], []
    for i, feature in enumerate(features):
        place = f"features[{i}]"
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise InventoryError(place, "must be a Feature")
        geometry = feature.get("geometry")
        if not isinstance(geometry, dict) or geometry.get("type") != "Point":
            raise InventoryError(f"{place}, geometry", "must be a Point")
        coordinates = geometry.get("coordinates")
        if (
            not isinstance(coordinates, list)
            or len(coordinates) not in (2, 3)
            or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in coordinates)
        ):
            raise InventoryError(f"{place}, geometry.coordinates", "must be [longitude, latitude]")
        properties = feature.get("properties")
        if not isinstance(properties, dict):
            raise InventoryError(f"{place}, properties", "must be an object")
        for column in ("latitude", "longitude"):
            if column in properties:
                raise InventoryError(f"{place}, {column}", "the position is the geometry's")
        cells = {**properties, "longitude": coordinates[0], "latitude": coordinates[1]}
        assets.append(_asset_from_cells(cells, place))
        where.append(place)
    return assets, where


def read_inventory(name: str, text: str) -> tuple[list[Asset], list[str]]:
    """By the file's name: ``.csv`` or ``.geojson``/``.json``."""
    lower = name.lower()
    if lower.endswith(".csv"):
        return read_csv(text)
    if lower.endswith((".geojson", ".json")):
        return read_geojson(text)
    raise InventoryError("file", f"{name!r}: an inventory is a .csv or a .geojson file")


# -- writing --------------------------------------------------------------------------------


def _cells(asset: Asset) -> dict[str, Any]:
    cells: dict[str, Any] = {"kind": asset.kind.value, "id": asset.asset_id}
    for column in COLUMNS[2:]:
        if column not in ALLOWED[asset.kind] and column not in _BASE:
            continue
        value = getattr(asset, _ATTRIBUTE.get(column, column))
        if column == "tags":
            value = ";".join(value)
        cells[column] = value
    if asset.kind is not AssetKind.CABINET:
        cells["cabinet"] = asset.gateway_id
    return cells


def to_csv(assets: Iterable[Asset]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for asset in assets:
        writer.writerow(_cells(asset))
    return out.getvalue()


def to_geojson(assets: Iterable[Asset]) -> str:
    features = []
    for asset in assets:
        cells = _cells(asset)
        lat, lon = cells.pop("latitude"), cells.pop("longitude")
        if asset.kind is AssetKind.CABINET:
            cells["tags"] = list(asset.tags)
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [lon, lat]},
                "properties": cells,
            }
        )
    return json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False)


# -- comparing ------------------------------------------------------------------------------

_COMPARED = tuple(f.name for f in dataclasses.fields(Asset) if f.name not in ("kind", "asset_id"))


def diff(current: Mapping[tuple[str, str], Asset], incoming: Sequence[Asset]) -> Diff:
    """What importing ``incoming`` over the register ``current`` (keyed by
    :attr:`Asset.key`) changes, among the kinds ``incoming`` holds."""
    result = Diff()
    kinds = {a.kind.value for a in incoming}
    keys = set()
    for asset in incoming:
        keys.add(asset.key)
        old = current.get(asset.key)
        if old is None:
            result.added.append(asset)
        elif old != asset:
            fields = tuple(f for f in _COMPARED if getattr(old, f) != getattr(asset, f))
            result.changed.append((old, asset, fields))
    result.removed = [
        a for key, a in sorted(current.items()) if key[0] in kinds and key not in keys
    ]
    return result


def register_digest(assets: Iterable[Asset]) -> str:
    """A digest of a whole register, whatever the order: an import applies only to the
    register its diff was shown for."""
    hasher = hashlib.sha256()
    for asset in sorted(assets, key=lambda a: a.key):
        hasher.update(repr(dataclasses.astuple(asset)).encode())
    return hasher.hexdigest()
