"""The fleet tables: gateways, and which replica holds each gateway's stream."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa

from orchestrator.store.documents import set_held
from orchestrator.store.records import (
    Conflict,
    GatewayRecord,
    HeldRecord,
    NotFound,
    Tables,
    _gateway,
    _insert,
    _inserted,
    gateway_record,
)
from orchestrator.store.schema import (
    gateway_streams,
    gateways,
)


class FleetTables(Tables):
    """The fleet tables: gateways, and which replica holds each gateway's stream."""

    def add_gateway(
        self,
        conn: sa.Connection,
        *,
        gateway_id: str,
        serial: str,
        commune: str,
        latitude: float,
        longitude: float,
        time_zone: str,
        tags: Sequence[str],
        now: datetime,
    ) -> GatewayRecord:
        added = _inserted(
            conn,
            gateways,
            ["gateway_id"],
            gateway_id=gateway_id,
            serial=serial,
            commune=commune,
            latitude=latitude,
            longitude=longitude,
            time_zone=time_zone,
            tags=list(tags),
            created_at=now,
        )
        if not added:
            raise Conflict("gateway_id", f"{gateway_id!r} is already registered")
        return gateway_record(conn, gateway_id)

    def get_gateway(self, conn: sa.Connection, gateway_id: str) -> GatewayRecord:
        row = conn.execute(sa.select(gateways).where(gateways.c.gateway_id == gateway_id)).first()
        if row is None:
            raise NotFound("gateway_id", f"no gateway {gateway_id!r}")
        return _gateway(row)

    def list_gateways(self, conn: sa.Connection, commune: str = "") -> list[GatewayRecord]:
        query = sa.select(gateways).order_by(gateways.c.gateway_id)
        if commune:
            query = query.where(gateways.c.commune == commune)
        return [_gateway(r) for r in conn.execute(query)]

    def record_hello(
        self,
        conn: sa.Connection,
        gateway_id: str,
        *,
        firmware_version: str,
        reported_sequence: int,
        held: Iterable[HeldRecord],
        now: datetime,
    ) -> None:
        conn.execute(
            gateways.update()
            .where(gateways.c.gateway_id == gateway_id)
            .values(
                firmware_version=firmware_version,
                reported_sequence=reported_sequence,
                last_seen=now,
            )
        )
        for doc in held:
            set_held(conn, gateway_id, doc, now=now)

    def touch(self, conn: sa.Connection, gateway_id: str, now: datetime) -> None:
        conn.execute(
            gateways.update().where(gateways.c.gateway_id == gateway_id).values(last_seen=now)
        )

    # -- which replica holds each gateway's stream ---------------------------------------------

    def open_stream(
        self, conn: sa.Connection, gateway_id: str, *, replica: str, stream: str, now: datetime
    ) -> None:
        """Record ``stream`` on ``replica`` as the gateway's stream, replacing any other."""
        stmt = _insert(conn, gateway_streams).values(
            gateway_id=gateway_id, replica=replica, stream=stream, opened_at=now, seen_at=now
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["gateway_id"],
                set_={"replica": replica, "stream": stream, "opened_at": now, "seen_at": now},
            )
        )

    def refresh_streams(
        self, conn: sa.Connection, replica: str, streams: Sequence[str], *, now: datetime
    ) -> set[str]:
        """Mark ``replica``'s ``streams`` seen at ``now``; returns those still recorded (the
        others were replaced by a newer stream of their gateway, or expired)."""
        c = gateway_streams.c
        kept: set[str] = set()
        for i in range(0, len(streams), 500):
            chunk = list(streams[i : i + 500])
            conn.execute(
                gateway_streams.update()
                .where(c.replica == replica)
                .where(c.stream.in_(chunk))
                .values(seen_at=now)
            )
            rows = conn.execute(
                sa.select(c.stream).where(c.replica == replica).where(c.stream.in_(chunk))
            )
            kept |= {r.stream for r in rows}
        return kept

    def close_stream(self, conn: sa.Connection, gateway_id: str, stream: str) -> None:
        """Forget ``stream`` unless a newer stream of the gateway replaced it already."""
        conn.execute(
            gateway_streams.delete()
            .where(gateway_streams.c.gateway_id == gateway_id)
            .where(gateway_streams.c.stream == stream)
        )

    def stream_of(self, conn: sa.Connection, gateway_id: str) -> str | None:
        """The stream recorded as ``gateway_id``'s, if any."""
        c = gateway_streams.c
        value = conn.execute(sa.select(c.stream).where(c.gateway_id == gateway_id)).scalar()
        return None if value is None else str(value)

    def release_replica(self, conn: sa.Connection, replica: str) -> None:
        """Forget every stream recorded for ``replica`` (it is stopping)."""
        conn.execute(gateway_streams.delete().where(gateway_streams.c.replica == replica))

    def quiet_gateways(
        self, conn: sa.Connection, *, last_seen_before: datetime, live_since: datetime
    ) -> dict[str, str]:
        """Gateway id -> commune of the enrolled gateways last seen at or before
        ``last_seen_before`` with no stream seen since ``live_since``: one query, the store
        doing the scan (a fleet of 10,000 is not read into Python to find the few)."""
        g, s = gateways.c, gateway_streams.c
        live = sa.select(s.gateway_id).where(s.gateway_id == g.gateway_id, s.seen_at >= live_since)
        rows = conn.execute(
            sa.select(g.gateway_id, g.commune)
            .where(g.enrolled_at.is_not(None))
            .where(g.last_seen <= last_seen_before)
            .where(~live.exists())
        )
        return {r.gateway_id: r.commune for r in rows}

    def live_streams(self, conn: sa.Connection, *, seen_since: datetime) -> dict[str, str]:
        """Gateway id -> replica, for streams seen since ``seen_since``."""
        c = gateway_streams.c
        rows = conn.execute(sa.select(c.gateway_id, c.replica).where(c.seen_at >= seen_since))
        return {r.gateway_id: r.replica for r in rows}
