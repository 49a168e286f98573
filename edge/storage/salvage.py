"""Reading back what can be read of a damaged outbox database.

A page garbled by a failing SD card (or a bit flipped on the way) leaves a database that
opens, counts its rows, and then fails the first query that walks over the damage. The
outbox then sets the file aside and starts a new one; before that, :func:`salvage` reads
every row it still can, lane by lane and row by row, so one bad page costs the events on
that page, not the whole queue, and says which sequences it could not read:

- rows are listed by walking each lane's index in order; when the walk hits a damaged
  page it probes forward (doubling, then bisecting) for the first sequence it can reach
  again, and the span in between is *unreadable*;
- each row is then read on its own and checked (the body must parse as the event whose
  sequence and priority the row claims); a row that fails is unreadable too;
- the last sequence ever given is read from the meta table if it can be.

Unreadable spans are candidates, not losses: they may hold sequences of other lanes
(read from their own lanes) or of events already acknowledged (held by the orchestrator);
:mod:`edge.storage.loss` turns them into the exact loss once the orchestrator has said
what it holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from edge.equipment.base import Priority
from edge.storage.loss import OPEN_END, Ranges, normalise
from protos.ondijon.v1 import link_pb2

_WIRE_PRIORITY = {
    Priority.ALARM: link_pb2.EVENT_PRIORITY_ALARM,
    Priority.EVENT: link_pb2.EVENT_PRIORITY_EVENT,
    Priority.METERING: link_pb2.EVENT_PRIORITY_METERING,
}
_BATCH = 256


@dataclass(frozen=True)
class Row:
    """One readable row, as stored."""

    priority: Priority
    seq: int
    at_us: int
    body: bytes
    pinned: bool


@dataclass
class Salvage:
    """What could be read back."""

    rows: list[Row] = field(default_factory=list)
    unreadable: Ranges = field(default_factory=list)
    last_sequence: int | None = None  # None: unreadable
    integrity: str = "not checked"


def salvage(
    conn: sqlite3.Connection, tables: Mapping[Priority, str], *, known_last: int | None
) -> Salvage:
    """Every readable row of ``tables`` and the spans that could not be read.

    Args:
        conn: a connection to the damaged database.
        tables: the lane tables, by priority.
        known_last: the last sequence given, if the caller knows it (bounds the probing).
    """
    found = Salvage(integrity=_integrity(conn))
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'last_sequence'").fetchone()
        found.last_sequence = int(row[0]) if row else None
    except (sqlite3.DatabaseError, TypeError, ValueError):
        found.last_sequence = None
    upper = known_last if known_last is not None else found.last_sequence
    for priority, table in tables.items():
        rows, unreadable = _lane(conn, priority, table, upper)
        found.rows += rows
        found.unreadable += unreadable
    if upper is not None:
        found.unreadable = [(a, min(b, upper)) for a, b in found.unreadable if a <= upper]
    found.unreadable = normalise(found.unreadable)
    return found


def _integrity(conn: sqlite3.Connection) -> str:
    try:
        lines = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(5)")]
    except sqlite3.DatabaseError as exc:
        return f"integrity check failed ({exc})"
    return "ok" if lines == ["ok"] else "; ".join(lines)


def _lane(
    conn: sqlite3.Connection, priority: Priority, table: str, upper: int | None
) -> tuple[list[Row], Ranges]:
    rows: list[Row] = []
    unreadable: Ranges = []
    after = 0
    while True:
        try:
            # Table names come from the outbox's fixed mapping, never from input.
            batch = conn.execute(
                f"SELECT seq FROM {table} WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
                (after, _BATCH),
            ).fetchall()
        except sqlite3.DatabaseError:
            batch = _one_by_one(conn, table, after)
            if batch:
                pass  # read up to the damage; the next round meets it alone
            else:
                resumed = _next_readable(conn, table, after, upper)
                unreadable.append((after + 1, (resumed - 1) if resumed else OPEN_END))
                if resumed is None:
                    break
                batch = [(resumed,)]
        if not batch:
            break
        for (seq,) in batch:
            row = _row(conn, priority, table, int(seq))
            if row is None:
                unreadable.append((int(seq), int(seq)))
            else:
                rows.append(row)
        after = int(batch[-1][0])
    return rows, unreadable


def _one_by_one(conn: sqlite3.Connection, table: str, after: int) -> list[tuple[int]]:
    """Sequences after ``after`` read one at a time, up to the first that fails."""
    found: list[tuple[int]] = []
    while len(found) < _BATCH:
        try:
            row = conn.execute(
                f"SELECT seq FROM {table} WHERE seq > ? ORDER BY seq LIMIT 1",  # noqa: S608
                (found[-1][0] if found else after,),
            ).fetchone()
        except sqlite3.DatabaseError:
            break
        if row is None:
            break
        found.append((int(row[0]),))
    return found


def _first_after(conn: sqlite3.Connection, table: str, position: int) -> int | bool | None:
    """The first sequence above ``position``; None if there is none; False if unreadable."""
    try:
        row = conn.execute(
            f"SELECT seq FROM {table} WHERE seq > ? ORDER BY seq LIMIT 1",  # noqa: S608
            (position,),
        ).fetchone()
    except sqlite3.DatabaseError:
        return False
    return None if row is None else int(row[0])


def _next_readable(
    conn: sqlite3.Connection, table: str, after: int, upper: int | None
) -> int | None:
    """The first sequence above ``after`` whose lookup works again, past a damaged page;
    None when nothing readable follows."""
    ceiling = upper if upper is not None else OPEN_END
    bad, step = after, 1
    while True:
        probe = min(after + step, ceiling)
        result = _first_after(conn, table, probe)
        if result is not False:
            break
        bad = probe
        if probe >= ceiling:
            return None
        step *= 2
    good = probe
    while good - bad > 1:  # the lowest position from which the walk works again
        middle = (bad + good) // 2
        if _first_after(conn, table, middle) is False:
            bad = middle
        else:
            good = middle
    resumed = _first_after(conn, table, good)
    assert resumed is not False
    return resumed


def _row(conn: sqlite3.Connection, priority: Priority, table: str, seq: int) -> Row | None:
    try:
        found = conn.execute(
            f"SELECT at_us, body, pinned FROM {table} WHERE seq = ?",  # noqa: S608
            (seq,),
        ).fetchone()
        if found is None:
            return None
        at_us, body, pinned = int(found[0]), bytes(found[1]), bool(found[2])
        event = link_pb2.Event.FromString(body)
    except (sqlite3.DatabaseError, DecodeError, TypeError, ValueError):
        return None
    if event.sequence != seq or event.priority != _WIRE_PRIORITY[priority] or not event.type:
        return None  # a garbled cell that happens to parse
    return Row(priority, seq, at_us, body, pinned)
