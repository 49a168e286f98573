"""Events: stored once per (gateway, sequence), listed, and their gaps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from orchestrator.store.records import (
    EventRecord,
    NewEvent,
    Tables,
    _event,
    _event_insert,
)
from orchestrator.store.schema import (
    events,
)

# The copies made of a range of numbers (EventTables.copy_family, for every batch stored).
_COPIES_OF_RANGE = (
    sa.select(events.c.sequence, events.c.first_sequence, events.c.copy_of, events.c.payload)
    .where(events.c.gateway_id == sa.bindparam("gateway_id"))
    .where(events.c.first_sequence.between(sa.bindparam("low"), sa.bindparam("high")))
)


class EventTables(Tables):
    """Events: stored once per (gateway, sequence), listed, and their gaps."""

    def add_events(
        self, conn: sa.Connection, gateway_id: str, batch: Sequence[NewEvent], *, now: datetime
    ) -> int:
        """Store events idempotently by (gateway, sequence); returns how many were new."""
        if not batch:
            return 0
        # One prepared statement run with executemany: building a multi-row VALUES
        # statement per batch cost SQLAlchemy more than storing the rows.
        rows = [
            {
                "gateway_id": gateway_id,
                "sequence": e.sequence,
                "at": e.at,
                "priority": e.priority,
                "device_id": e.device_id,
                "type": e.type,
                "payload": e.payload,
                "received_at": now,
                "first_sequence": e.first_sequence,
            }
            for e in batch
        ]
        stmt = _event_insert(conn.dialect.name).execution_options(preserve_rowcount=True)
        return int(conn.execute(stmt, rows).rowcount)

    def copy_family(
        self, conn: sa.Connection, gateway_id: str, stored: Sequence[NewEvent]
    ) -> list[tuple[int, int, int | None, bytes]]:
        """The rows an event of ``stored`` (just stored) may be a copy of, or copied by:
        under the first number of a copy, copies of that first number, and copies of the
        originals' numbers; ``(sequence, first number, copy_of, payload)``, the first number
        being the sequence of an original. Usually none: copies come after a disk went back."""
        if not stored:
            return []
        c = events.c
        numbers = [e.sequence for e in stored]
        firsts = sorted({e.first_sequence for e in stored if e.first_sequence})
        # Each its own indexed search (one OR of them scans the gateway's rows): copies of
        # the originals just stored (the partial index; a batch is one run of numbers;
        # prepared once, as it runs for every batch), then for copies the events under
        # their first numbers and the other copies.
        searches = [
            conn.execute(
                _COPIES_OF_RANGE,
                {"gateway_id": gateway_id, "low": min(numbers), "high": max(numbers)},
            ).all()
        ]
        if firsts:
            columns = sa.select(c.sequence, c.first_sequence, c.copy_of, c.payload)
            for condition in (c.sequence.in_(firsts), c.first_sequence.in_(firsts)):
                searches.append(
                    conn.execute(columns.where(c.gateway_id == gateway_id).where(condition)).all()
                )
        wanted = set(numbers) | set(firsts)
        found: dict[int, tuple[int, int, int | None, bytes]] = {}
        for rows in searches:
            for r in rows:
                first = int(r.sequence if r.first_sequence is None else r.first_sequence)
                if first in wanted:
                    copy_of = None if r.copy_of is None else int(r.copy_of)
                    found[int(r.sequence)] = (int(r.sequence), first, copy_of, bytes(r.payload))
        return [found[s] for s in sorted(found)]

    def mark_copies(self, conn: sa.Connection, gateway_id: str, copies: dict[int, int]) -> None:
        """Mark each sequence of ``copies`` a copy of the sequence it maps to."""
        for sequence, original in copies.items():
            conn.execute(
                events.update()
                .where(events.c.gateway_id == gateway_id)
                .where(events.c.sequence == sequence)
                .values(copy_of=original)
            )

    def list_events(
        self,
        conn: sa.Connection,
        gateway_id: str,
        *,
        after_sequence: int,
        limit: int,
        newest_first: bool = False,
        priorities: Sequence[int] = (),
        types: Sequence[str] = (),
    ) -> list[EventRecord]:
        """Events oldest first (or the ``limit`` latest, newest first); ``types`` ending
        with ``.`` are prefixes."""
        query = sa.select(events).where(events.c.sequence > after_sequence).limit(limit)
        if gateway_id:
            query = query.where(events.c.gateway_id == gateway_id)
        if priorities:
            query = query.where(events.c.priority.in_(list(priorities)))
        if types:
            query = query.where(
                sa.or_(
                    *(
                        events.c.type.startswith(t, autoescape=True)
                        if t.endswith(".")
                        else events.c.type == t
                        for t in types
                    )
                )
            )
        order = (
            [events.c.sequence]
            if gateway_id
            else [events.c.received_at, events.c.gateway_id, events.c.sequence]
        )
        query = query.order_by(*(c.desc() if newest_first else c for c in order))
        return [_event(r) for r in conn.execute(query)]

    def event_payloads(
        self, conn: sa.Connection, gateway_id: str, sequences: Sequence[int]
    ) -> dict[int, bytes]:
        """The stored payloads of ``sequences`` (those held), by sequence."""
        found: dict[int, bytes] = {}
        for i in range(0, len(sequences), 500):
            rows = conn.execute(
                sa.select(events.c.sequence, events.c.payload)
                .where(events.c.gateway_id == gateway_id)
                .where(events.c.sequence.in_(list(sequences[i : i + 500])))
            )
            found.update((int(r.sequence), bytes(r.payload)) for r in rows)
        return found

    def held_ranges(
        self, conn: sa.Connection, gateway_id: str, *, after: int, limit: int
    ) -> list[tuple[int, int]]:
        """The sequences above ``after`` held for ``gateway_id``, as inclusive ranges (at
        most ``limit``, lowest first): what an agent that lost part of its outbox asks."""
        seq = events.c.sequence
        islands = (
            sa.select(
                seq.label("seq"), (seq - sa.func.row_number().over(order_by=seq)).label("grp")
            )
            .where(events.c.gateway_id == gateway_id)
            .where(seq > after)
            .subquery()
        )
        first = sa.func.min(islands.c.seq)
        rows = conn.execute(
            sa.select(first, sa.func.max(islands.c.seq))
            .group_by(islands.c.grp)
            .order_by(first)
            .limit(limit)
        )
        return [(int(a), int(b)) for a, b in rows]

    def event_payloads_of_type(
        self, conn: sa.Connection, gateway_id: str, event_type: str, *, after: int
    ) -> list[bytes]:
        """The stored payloads of ``gateway_id``'s events of ``event_type`` numbered above
        ``after``, in sequence order (the gap events an agent's welcome reads)."""
        rows = conn.execute(
            sa.select(events.c.payload)
            .where(events.c.gateway_id == gateway_id)
            .where(events.c.type == event_type)
            .where(events.c.sequence > after)
            .order_by(events.c.sequence)
        )
        return [bytes(r.payload) for r in rows]

    def events_received_since(
        self, conn: sa.Connection, since: datetime, *, limit: int
    ) -> list[EventRecord]:
        """Events stored at or after ``since``, oldest first, at most ``limit``."""
        query = (
            sa.select(events)
            .where(events.c.received_at >= since)
            .where(events.c.copy_of.is_(None))  # a copy is not news
            .order_by(events.c.received_at, events.c.gateway_id, events.c.sequence)
            .limit(limit)
        )
        return [_event(r) for r in conn.execute(query)]

    def stored_sequence(self, conn: sa.Connection, gateway_id: str) -> int:
        value = conn.execute(
            sa.select(sa.func.max(events.c.sequence)).where(events.c.gateway_id == gateway_id)
        ).scalar()
        return int(value or 0)

    def stored_sequences(self, conn: sa.Connection, gateway_ids: Sequence[str]) -> dict[str, int]:
        """:meth:`stored_sequence` of many gateways in a few queries (listings)."""
        found = dict.fromkeys(gateway_ids, 0)
        c = events.c
        for i in range(0, len(gateway_ids), 500):
            rows = conn.execute(
                sa.select(c.gateway_id, sa.func.max(c.sequence))
                .where(c.gateway_id.in_(list(gateway_ids[i : i + 500])))
                .group_by(c.gateway_id)
            )
            for gateway_id, value in rows:
                found[gateway_id] = int(value or 0)
        return found

    def missing_ranges_of(
        self, conn: sa.Connection, gateway_ids: Sequence[str]
    ) -> dict[str, list[tuple[int, int]]]:
        """:meth:`missing_ranges` of many gateways in a few queries (listings)."""
        found: dict[str, list[tuple[int, int]]] = {g: [] for g in gateway_ids}
        c = events.c
        for i in range(0, len(gateway_ids), 500):
            chunk = list(gateway_ids[i : i + 500])
            ordered = (
                sa.select(
                    c.gateway_id,
                    c.sequence.label("seq"),
                    sa.func.lead(c.sequence)
                    .over(partition_by=c.gateway_id, order_by=c.sequence)
                    .label("nxt"),
                )
                .where(c.gateway_id.in_(chunk))
                .subquery()
            )
            o = ordered.c
            gaps = conn.execute(
                sa.select(o.gateway_id, o.seq, o.nxt)
                .where(o.nxt > o.seq + 1)
                .order_by(o.gateway_id, o.seq)
            )
            for gateway_id, seq, nxt in gaps:
                found[gateway_id].append((int(seq) + 1, int(nxt) - 1))
            firsts = conn.execute(
                sa.select(c.gateway_id, sa.func.min(c.sequence))
                .where(c.gateway_id.in_(chunk))
                .group_by(c.gateway_id)
            )
            for gateway_id, first in firsts:
                if first is not None and first > 1:
                    found[gateway_id].insert(0, (1, int(first) - 1))
        return found

    def missing_ranges(self, conn: sa.Connection, gateway_id: str) -> list[tuple[int, int]]:
        """Sequence ranges below the highest stored one that are not stored (gaps)."""
        seq = events.c.sequence
        ordered = (
            sa.select(seq.label("seq"), sa.func.lead(seq).over(order_by=seq).label("nxt"))
            .where(events.c.gateway_id == gateway_id)
            .subquery()
        )
        rows = conn.execute(
            sa.select(ordered.c.seq, ordered.c.nxt).where(ordered.c.nxt > ordered.c.seq + 1)
        ).all()
        gaps = [(int(r.seq) + 1, int(r.nxt) - 1) for r in rows]
        first = conn.execute(
            sa.select(sa.func.min(seq)).where(events.c.gateway_id == gateway_id)
        ).scalar()
        if first is not None and first > 1:
            gaps.insert(0, (1, int(first) - 1))
        return gaps
