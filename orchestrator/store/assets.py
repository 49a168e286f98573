"""SQL of the asset register: load it, apply an import's diff in one transaction, page it.

A cabinet is a gateway: importing one registers the gateway (or updates its commune,
position and tags), so groups and targets see the city the register describes. Removing a
cabinet from the register keeps its gateway (its events, commands and certificates stay;
``ondijon gateway revoke`` retires it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from domain.city.inventory import Asset, AssetKind, Diff
from orchestrator.store.schema import assets, gateways

DEFAULT_TIME_ZONE = "Europe/Paris"
_ATTRIBUTES = (
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
_DEFAULTS = {f: Asset.__dataclass_fields__[f].default for f in _ATTRIBUTES}


def _row(asset: Asset, now: datetime) -> dict[str, Any]:
    attributes = {
        f: (list(v) if f == "tags" else v)
        for f in _ATTRIBUTES
        if (v := getattr(asset, f)) != _DEFAULTS[f]
    }
    return {
        "kind": asset.kind.value,
        "asset_id": asset.asset_id,
        "gateway_id": asset.gateway_id,
        "device_id": asset.device_id,
        "commune": asset.commune,
        "latitude": asset.latitude,
        "longitude": asset.longitude,
        "attributes": attributes,
        "updated_at": now,
    }


def asset_of(row: Any) -> Asset:
    attributes = dict(row.attributes or {})
    if "tags" in attributes:
        attributes["tags"] = tuple(attributes["tags"])
    return Asset(
        kind=AssetKind(row.kind),
        asset_id=row.asset_id,
        gateway_id=row.gateway_id,
        device_id=row.device_id,
        commune=row.commune,
        latitude=row.latitude,
        longitude=row.longitude,
        **attributes,
    )


def load_register(conn: sa.Connection) -> dict[tuple[str, str], Asset]:
    return {(r.kind, r.asset_id): asset_of(r) for r in conn.execute(sa.select(assets))}


def cabinet_communes(conn: sa.Connection) -> dict[str, str]:
    """Gateway id -> commune of every registered gateway (what lamps may refer to)."""
    rows = conn.execute(sa.select(gateways.c.gateway_id, gateways.c.commune))
    return {r.gateway_id: r.commune for r in rows}


def apply_diff(conn: sa.Connection, diff: Diff, *, now: datetime) -> list[str]:
    """Write ``diff`` (a handful of statements, whatever its size); returns the ids of the
    gateways whose commune, position or tags changed or that were registered."""
    if diff.added:
        conn.execute(assets.insert(), [_row(a, now) for a in diff.added])
    if diff.changed:
        rows = [_row(new, now) for _, new, _ in diff.changed]
        conn.execute(
            assets.update()
            .where(assets.c.kind == sa.bindparam("b_kind"))
            .where(assets.c.asset_id == sa.bindparam("b_asset_id")),
            [
                {
                    **{k: v for k, v in r.items() if k not in ("kind", "asset_id")},
                    "b_kind": r["kind"],
                    "b_asset_id": r["asset_id"],
                }
                for r in rows
            ],
        )
    for i in range(0, len(diff.removed), 500):
        chunk = diff.removed[i : i + 500]
        for kind in {a.kind.value for a in chunk}:
            conn.execute(
                assets.delete()
                .where(assets.c.kind == kind)
                .where(assets.c.asset_id.in_([a.asset_id for a in chunk if a.kind.value == kind]))
            )
    cabinets = [a for a in diff.added if a.kind is AssetKind.CABINET] + [
        new for _, new, _ in diff.changed if new.kind is AssetKind.CABINET
    ]
    return _register_gateways(conn, cabinets, now)


def _register_gateways(conn: sa.Connection, cabinets: Sequence[Asset], now: datetime) -> list[str]:
    if not cabinets:
        return []
    ids = [c.asset_id for c in cabinets]
    existing: set[str] = set()
    for i in range(0, len(ids), 500):
        existing |= set(
            conn.execute(
                sa.select(gateways.c.gateway_id).where(gateways.c.gateway_id.in_(ids[i : i + 500]))
            ).scalars()
        )
    new = [c for c in cabinets if c.asset_id not in existing]
    if new:
        conn.execute(
            gateways.insert(),
            [
                {
                    "gateway_id": c.asset_id,
                    "serial": c.serial or f"SN-{c.asset_id}",
                    "commune": c.commune,
                    "latitude": c.latitude,
                    "longitude": c.longitude,
                    "time_zone": DEFAULT_TIME_ZONE,
                    "tags": list(c.tags),
                    "created_at": now,
                }
                for c in new
            ],
        )
    known = [c for c in cabinets if c.asset_id in existing]
    if known:
        conn.execute(
            gateways.update().where(gateways.c.gateway_id == sa.bindparam("b_id")),
            [
                {
                    "b_id": c.asset_id,
                    "commune": c.commune,
                    "latitude": c.latitude,
                    "longitude": c.longitude,
                    "tags": list(c.tags),
                }
                for c in known
            ],
        )
    return ids


def list_assets(
    conn: sa.Connection,
    *,
    kind: str = "",
    commune: str = "",
    gateway_id: str = "",
    after: tuple[str, str] | None = None,
    limit: int = 100,
    communes: Sequence[str] | None = None,
) -> list[Asset]:
    """A page of the register, ordered by (kind, id), after ``after``; ``communes`` limits
    it to an operator's scope (``None``: every commune)."""
    query = sa.select(assets).order_by(assets.c.kind, assets.c.asset_id).limit(limit)
    if kind:
        query = query.where(assets.c.kind == kind)
    if commune:
        query = query.where(assets.c.commune == commune)
    if gateway_id:
        query = query.where(assets.c.gateway_id == gateway_id)
    if communes is not None:
        query = query.where(assets.c.commune.in_(list(communes)))
    if after is not None:
        query = query.where(sa.tuple_(assets.c.kind, assets.c.asset_id) > sa.tuple_(*after))
    return [asset_of(r) for r in conn.execute(query)]


def lamps_of(conn: sa.Connection, gateway_ids: Sequence[str]) -> list[Asset]:
    """The registered lamps of ``gateway_ids``."""
    found: list[Asset] = []
    for i in range(0, len(gateway_ids), 500):
        rows = conn.execute(
            sa.select(assets)
            .where(assets.c.kind == AssetKind.LAMP.value)
            .where(assets.c.gateway_id.in_(list(gateway_ids[i : i + 500])))
        )
        found += [asset_of(r) for r in rows]
    return found
