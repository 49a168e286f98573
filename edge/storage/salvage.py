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

A walk can also miss rows without any sign: a seek into a garbled page binary-searches
keys that are noise and may step past the whole page, and the next key it returns is real
and in order. So when the integrity check finds the file damaged, every sequence up to
the last one given that was not read back is a candidate (:attr:`Salvage.suspect_up_to`).

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

from edge.events import Priority
from edge.storage.loss import OPEN_END, Ranges, subtract
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
    #: Where the runs since the last welcome started numbering (None: unreadable or none).
    start_mark: int | None = None
    integrity: str = "not checked"
    #: The file is damaged: any sequence up to this one not read back may be lost (0: the
    #: structure is sound, the walks found every row they did not report unreadable).
    suspect_up_to: int = 0


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
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'unwelcomed_after'").fetchone()
        found.start_mark = int(row[0]) if row and int(row[0]) >= 0 else None
    except (sqlite3.DatabaseError, TypeError, ValueError):
        found.start_mark = None
    # The last sequence the file says may be older than rows it holds (a disk that lost
    # the commit's meta page but not its leaves): rows found above it, each verified, are
    # kept and the last raised over them; their numbers are never given again.
    for priority, table in tables.items():
        rows, unreadable = _lane(conn, priority, table, known_last)
        found.rows += rows
        found.unreadable += unreadable
    upper = known_last
    if upper is None and found.last_sequence is not None:
        upper = max(
            found.last_sequence,
            max((r.seq for r in found.rows), default=0),
            *(_verified_top(conn, priority, table) for priority, table in tables.items()),
        )
        found.last_sequence = upper
    if upper is not None:
        found.unreadable = [(a, min(b, upper)) for a, b in found.unreadable if a <= upper]
    if found.integrity != "ok":
        found.suspect_up_to = (
            upper if upper is not None else max((r.seq for r in found.rows), default=0)
        )
        found.rows += _rescue(conn, tables, found.suspect_up_to, {r.seq for r in found.rows})
    # A sequence read from its own lane was not lost in another's suspect span.
    found.unreadable = subtract(found.unreadable, [(r.seq, r.seq) for r in found.rows])
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
    """The verified rows of one lane, and the sequences that may be rows but cannot be read.

    The lane's index is walked in order; a walk that errors or returns keys that are not
    rows (a garbled page's cells can parse as any key, out of order) marks the span
    between the verified rows on either side as suspect, and every sequence of a suspect
    span is then looked up on its own. One found and verified is kept; any other is a
    candidate: a lookup that lands on a garbled page may well answer "no such row", so
    "absent" cannot be told from "unreadable" here (the caller removes what another lane
    holds; the orchestrator, what it holds).
    """
    rows: dict[int, Row] = {}
    suspect: list[tuple[int, int | None]] = []  # exclusive bounds between verified rows
    after = good = 0
    trouble = False
    skip = 1
    ceiling = upper if upper is not None else OPEN_END
    while after < ceiling:
        try:
            # Table names come from the outbox's fixed mapping, never from input.
            keys = [
                int(k)
                for (k,) in conn.execute(
                    f"SELECT seq FROM {table} WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
                    (after, _BATCH),
                )
            ]
        except sqlite3.DatabaseError:
            keys, trouble = None, True
        if keys == []:
            break
        progress = after
        for key in keys or []:
            if key <= progress or (upper is not None and key > upper):
                trouble = True  # not where an index walk puts a real key
                continue
            row = _row(conn, priority, table, key)
            progress = key
            if row is None:
                trouble = True
                continue
            if trouble:
                suspect.append((good, key))
                trouble = False
            rows[key] = row
            good = key
        if progress > after:
            after, skip = progress, 1
        else:  # the walk is stuck on damage: step over it, looking closer afterwards
            trouble = True
            after, skip = min(after + skip, ceiling), skip * 2
    if trouble:
        suspect.append((good, None))
    unreadable: Ranges = []
    for low, high in suspect:
        top = high - 1 if high is not None else upper
        if top is None:
            unreadable.append((low + 1, OPEN_END))  # nothing bounds it: left to the orchestrator
            continue
        if top - low > _MAX_LOOKUPS:
            unreadable.append((low + 1, top))
            continue
        for seq in range(low + 1, top + 1):
            found = rows.get(seq) or _row(conn, priority, table, seq)
            if found is None:
                unreadable.append((seq, seq))
            else:
                rows[seq] = found
    return sorted(rows.values(), key=lambda r: r.seq), unreadable


# A suspect span longer than this is not looked up row by row (it stays a candidate).
_MAX_LOOKUPS = 1_000_000
# In a damaged file, the sequences under the last one looked up one by one for rows the
# walks stepped over (about what a 64 MiB outbox holds); below, the orchestrator decides.
_RESCUE_LOOKUPS = 300_000


def _rescue(
    conn: sqlite3.Connection, tables: Mapping[Priority, str], top: int, read: set[int]
) -> list[Row]:
    """Rows a walk stepped over without a sign (a seek's binary search through a garbled
    page can land past it), found by looking each sequence up on its own: a lookup
    descends from the root and reaches the sound pages whatever the walk did."""
    found = []
    for seq in range(top, max(0, top - _RESCUE_LOOKUPS), -1):
        if seq in read:
            continue
        for priority, table in tables.items():
            row = _row(conn, priority, table, seq)
            if row is not None:
                found.append(row)
                break
    return found


def _verified_top(conn: sqlite3.Connection, priority: Priority, table: str) -> int:
    """The lane's highest key, if a row under it reads back as its own (the B-tree's
    right edge is reached by a descent from the root, whatever a walk stepped over)."""
    try:
        # Table names come from the outbox's fixed mapping, never from input.
        top = conn.execute(f"SELECT max(seq) FROM {table}").fetchone()[0]  # noqa: S608
    except (sqlite3.DatabaseError, TypeError):
        return 0
    return int(top) if top is not None and _row(conn, priority, table, int(top)) else 0


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
