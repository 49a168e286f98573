"""The durable store-and-forward queue of the agent's events.

Every event or reading the agent records gets the next per-gateway sequence number
(contiguous from 1, never reused, kept across restarts) and stays on disk until the
orchestrator acknowledges it. :meth:`Outbox.next_batch` hands out alarms first, then
events, then metering, each in sequence order; the link sends a window of them, acks come
back as sequence ranges, and on reconnect whatever was in flight is sent again (the
orchestrator stores idempotently by gateway and sequence). The disk budget and what is
dropped when it is full are in :mod:`edge.storage.overflow`.

Storage is SQLite from the standard library, not TinyDB (which rewrites the whole file per
write): one table per priority ("lane"), so dropping the oldest metering frees whole pages.

What survives a power cut: the database runs in WAL mode with ``synchronous=FULL``, so the
log is fsynced before each commit returns. An append that returned (its sequence numbers
in hand) is on the disk and survives a cut at any byte after it; an append cut before its
commit leaves no trace (sequence numbers included, so they stay contiguous); a torn log
tail is discarded by SQLite's checksums on the next open. ``NORMAL`` would only make a cut
lose the last commits, which is exactly what "nothing lost" forbids; the cost is one fsync
per append, which is why readings are batched with :meth:`Outbox.append_many`.
Acknowledgements are committed without waiting for an fsync (``NORMAL`` for that
transaction): a cut may forget the last acks, and those events are simply sent again. What
is in flight is kept in memory only: after a restart everything unacknowledged is sent
again.

The database is opened in exclusive locking mode: one agent owns it, and the write-ahead
log index lives in memory (no ``-shm`` file). A database found corrupt on open is set aside
as ``<name>.corrupt`` and a new one started, reported in :attr:`Outbox.recovered`; the link
then calls :meth:`Outbox.raise_sequence_floor` with the orchestrator's stored sequence so
new events are not mistaken for ones already stored. Not for concurrent use by several
threads at once (a lock serialises them, so ``asyncio.to_thread`` is fine).
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from edge.equipment.base import EquipmentEvent, Priority
from edge.storage.atomic import PathLike, RecoveryOutcome, StorageRecovery
from edge.storage.errors import OutboxError
from edge.storage.overflow import Dropped, OutboxLimits, bytes_to_free, gap_events
from edge.storage.record import (
    EPOCH,
    MICROSECOND,
    ROW_OVERHEAD,
    Record,
    batch_entry_bytes,
    record,
)
from ondijon.clock import Clock
from ondijon.files import private_directory, private_file
from protos.ondijon.v1 import link_pb2

_SCHEMA_VERSION = 1
_LANES = (Priority.ALARM, Priority.EVENT, Priority.METERING)
_DROP_ORDER = (Priority.METERING, Priority.EVENT)
_TABLE = {
    Priority.ALARM: "alarm_lane",
    Priority.EVENT: "event_lane",
    Priority.METERING: "metering_lane",
}
_GAP_EVENT_ESTIMATE = 2048


def _sql(template: str, priority: Priority) -> str:
    # Table names come from the fixed _TABLE mapping, never from input.
    return template.replace("{lane}", _TABLE[priority])


def _range_bounds(item: link_pb2.SequenceRange | tuple[int, int]) -> tuple[int, int]:
    if isinstance(item, link_pb2.SequenceRange):
        return item.first, item.last
    first, last = item
    return int(first), int(last)


def _merge(bounds: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint ranges covering the same sequences (an ack may list them one by one)."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(bounds):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


class Outbox:
    """The durable event queue (see the module docstring)."""

    def __init__(self, path: PathLike, *, clock: Clock, limits: OutboxLimits | None = None) -> None:
        """Open (or create) the outbox database at ``path``.

        Args:
            path: the SQLite file; its directory is created if missing.
            clock: stamps the gap events.
            limits: the disk budget (64 MiB by default).

        Raises:
            OutboxError: another process holds the outbox, or it was written by a newer
                agent.
        """
        self._path = Path(path)
        self._clock = clock
        self._limits = limits if limits is not None else OutboxLimits()
        self._lock = threading.Lock()
        self.recovered: StorageRecovery | None = None
        if not self._path.parent.exists():
            private_directory(self._path.parent)
        # A lane's in-flight events are always its oldest: those at or below its cursor.
        self._cursor = dict.fromkeys(_LANES, 0)
        self._in_flight: set[int] = set()
        try:
            self._conn = self._open()
            self._load()
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorname", "") not in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
                raise
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self._conn.close()
            self._set_aside(str(exc))
            self._conn = self._open()
            self._load()

    def _load(self) -> None:
        self._page_size = self._scalar("PRAGMA page_size")
        self._last = self._scalar("SELECT value FROM meta WHERE key = 'last_sequence'")
        self._pending = {p: self._scalar(_sql("SELECT count(*) FROM {lane}", p)) for p in _LANES}
        # Belt and braces: a sequence on disk is never handed out again.
        for priority in _LANES:
            self._last = max(
                self._last, self._scalar(_sql("SELECT max(seq) FROM {lane}", priority))
            )

    def _open(self) -> sqlite3.Connection:
        # 0600 before SQLite writes a byte (its log takes the same mode), whatever the umask.
        private_file(self._path)
        conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=0.0
        )
        try:
            # Exclusive before WAL: one owner, and the WAL index in memory (no -shm file).
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(str(self._path), f"cannot use a write-ahead log (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            checkpoint_pages = max(16, self._limits.checkpoint_bytes // page_size)
            conn.execute(f"PRAGMA wal_autocheckpoint = {checkpoint_pages}")
            conn.execute(f"PRAGMA journal_size_limit = {self._limits.checkpoint_bytes}")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > _SCHEMA_VERSION:
                raise OutboxError(str(self._path), f"schema {version} is newer than this agent's")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS meta"
                " (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID"
            )
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('last_sequence', 0)")
            for priority in _LANES:
                conn.execute(
                    _sql(
                        "CREATE TABLE IF NOT EXISTS {lane} (seq INTEGER PRIMARY KEY,"
                        " at_us INTEGER NOT NULL, body BLOB NOT NULL,"
                        " pinned INTEGER NOT NULL DEFAULT 0)",
                        priority,
                    )
                )
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc):
                raise OutboxError(str(self._path), "held by another process") from exc
            raise
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_aside(self, reason: str) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            source = Path(f"{self._path}{suffix}")
            with contextlib.suppress(FileNotFoundError):
                os.replace(source, Path(f"{self._path}.corrupt{suffix}"))
        self.recovered = StorageRecovery(
            str(self._path), RecoveryOutcome.STARTED_EMPTY, f"database corrupt ({reason})"
        )

    def _scalar(self, query: str, *params: int) -> int:
        row = self._conn.execute(query, params).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # Recording -------------------------------------------------------------------------

    def append(self, event: EquipmentEvent) -> int:
        """Record one event durably; its sequence number.

        Raises:
            OutboxError: the event is malformed (the field is named); nothing is recorded.
        """
        return self.append_many([event])[0]

    def append_many(self, events: Iterable[EquipmentEvent]) -> list[int]:
        """Record several events in one transaction (one fsync); their sequence numbers.

        If the disk budget is full, older events are dropped first and a gap event is
        recorded in the same transaction (see :mod:`edge.storage.overflow`).

        Raises:
            OutboxError: an event is malformed (``events[3].at``) or the batch is bigger
                than ``limits.max_append_bytes``; nothing is recorded.
        """
        records = [record(e, f"events[{i}]") for i, e in enumerate(events)]
        if not records:
            return []
        incoming = sum(r.estimate for r in records)
        if incoming > self._limits.max_append_bytes:
            raise OutboxError(
                "events",
                f"{incoming} bytes in one append, more than the"
                f" {self._limits.max_append_bytes} allowed: split the batch",
            )
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                dropped = self._make_room(incoming + _GAP_EVENT_ESTIMATE)
                gaps = [
                    dataclasses.replace(record(gap, "gap"), pinned=True)
                    for gap in (gap_events(dropped, self._clock.now()) if dropped else [])
                ]
                records[:0] = gaps
                sequences = self._insert(records)
                self._conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'last_sequence'", (sequences[-1],)
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._last = sequences[-1]
            for d in dropped:
                self._pending[d.priority] -= 1
            for r in records:
                self._pending[r.priority] += 1
        return sequences[len(gaps) :]

    def _insert(self, records: Sequence[Record]) -> list[int]:
        rows: dict[Priority, list[tuple[int, int, bytes, bool]]] = {p: [] for p in _LANES}
        sequences = []
        seq = self._last
        for r in records:
            seq += 1
            rows[r.priority].append((seq, r.at_us, r.stored_body(seq), r.pinned))
            sequences.append(seq)
        for priority, lane_rows in rows.items():
            if lane_rows:
                self._conn.executemany(
                    _sql(
                        "INSERT INTO {lane} (seq, at_us, body, pinned) VALUES (?, ?, ?, ?)",
                        priority,
                    ),
                    lane_rows,
                )
        return sequences

    def _used_bytes(self) -> int:
        pages = self._scalar("PRAGMA page_count") - self._scalar("PRAGMA freelist_count")
        return pages * self._page_size

    def _make_room(self, incoming: int) -> list[Dropped]:
        to_free = bytes_to_free(self._used_bytes(), incoming, self._limits)
        dropped: list[Dropped] = []
        for priority in _DROP_ORDER:
            after = self._cursor[priority]  # never drop what is in flight
            while to_free > 0:
                rows = self._conn.execute(
                    _sql(
                        "SELECT seq, at_us, length(body) FROM {lane}"
                        " WHERE seq > ? AND NOT pinned ORDER BY seq LIMIT 1024",
                        priority,
                    ),
                    (after,),
                ).fetchall()
                if not rows:
                    break
                last = after
                for seq, at_us, size in rows:
                    dropped.append(Dropped(seq, priority, EPOCH + at_us * MICROSECOND))
                    to_free -= size + ROW_OVERHEAD
                    last = seq
                    if to_free <= 0:
                        break
                self._conn.execute(
                    _sql("DELETE FROM {lane} WHERE seq > ? AND seq <= ? AND NOT pinned", priority),
                    (after, last),
                )
                after = last
        return dropped

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")

    # Sending ---------------------------------------------------------------------------

    def next_batch(self, max_events: int, max_bytes: int) -> list[link_pb2.Event]:
        """The next events to send, marked in flight.

        Alarms first, then events, then metering, each in sequence order, skipping those
        already in flight. The batch stops before the first event that would exceed a
        limit (never skipping ahead to a smaller one), but always holds at least one event
        if any is pending, so an oversized event cannot block the queue.

        Args:
            max_events: at most this many (the link's window minus ``in_flight_count``).
            max_bytes: the serialized ``EventBatch`` holding them stays within this.
        """
        if max_events <= 0:
            return []
        batch: list[link_pb2.Event] = []
        total = 0
        with self._lock:
            for priority in _LANES:
                rows = self._conn.execute(
                    _sql(
                        "SELECT seq, body FROM {lane} WHERE seq > ? ORDER BY seq LIMIT ?", priority
                    ),
                    (self._cursor[priority], max_events - len(batch)),
                ).fetchall()
                for seq, body in rows:
                    cost = batch_entry_bytes(len(body))
                    if batch and total + cost > max_bytes:
                        return batch
                    event = link_pb2.Event()
                    event.ParseFromString(body)
                    batch.append(event)
                    total += cost
                    self._cursor[priority] = seq
                    self._in_flight.add(seq)
                if len(batch) >= max_events:
                    break
        return batch

    def ack(self, ranges: Iterable[link_pb2.SequenceRange | tuple[int, int]]) -> int:
        """Forget the events the orchestrator stored (idempotent); how many were deleted.

        Args:
            ranges: inclusive ``SequenceRange`` messages (``EventAck.stored``) or
                ``(first, last)`` pairs.

        Raises:
            OutboxError: a range is empty or reaches past the last sequence recorded
                (``stored[1].last``); nothing is deleted.
        """
        bounds = []
        for i, item in enumerate(ranges):
            first, last = _range_bounds(item)
            if first < 1:
                raise OutboxError(f"stored[{i}].first", "sequences start at 1")
            if last < first:
                raise OutboxError(f"stored[{i}].last", f"{last} is before first {first}")
            if last > self._last:
                raise OutboxError(
                    f"stored[{i}].last", f"{last} was never recorded (last is {self._last})"
                )
            bounds.append((first, last))
        if not bounds:
            return 0
        bounds = _merge(bounds)
        with self._lock:
            deleted = dict.fromkeys(_LANES, 0)
            # An ack lost to a power cut only means those events are sent again (the
            # orchestrator stores by sequence, idempotently): no fsync to wait for. The
            # next append's fsync, or a checkpoint, makes it durable along the way.
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for priority in _LANES:
                    for first, last in bounds:
                        cursor = self._conn.execute(
                            _sql("DELETE FROM {lane} WHERE seq BETWEEN ? AND ?", priority),
                            (first, last),
                        )
                        deleted[priority] += cursor.rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            finally:
                self._conn.execute("PRAGMA synchronous = FULL")
            for priority, count in deleted.items():
                self._pending[priority] -= count
            firsts = [first for first, _ in bounds]
            self._in_flight = {
                s
                for s in self._in_flight
                if (i := bisect.bisect_right(firsts, s) - 1) < 0 or s > bounds[i][1]
            }
        return sum(deleted.values())

    def requeue_in_flight(self) -> int:
        """Make everything in flight sendable again (the link reconnected); how many."""
        with self._lock:
            count = len(self._in_flight)
            self._in_flight.clear()
            self._cursor = dict.fromkeys(_LANES, 0)
        return count

    def raise_sequence_floor(self, stored_sequence: int) -> bool:
        """Make the next sequence exceed ``stored_sequence`` (the orchestrator's Welcome).

        Only matters after the outbox was lost or set aside: the orchestrator stores by
        (gateway, sequence) and would take re-used numbers for events it already holds.

        Returns:
            ``True`` if the sequence moved (a jump the orchestrator will see as a gap).
        """
        with self._lock:
            if stored_sequence <= self._last:
                return False
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'last_sequence'", (stored_sequence,)
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._last = stored_sequence
        return True

    # Figures ---------------------------------------------------------------------------

    @property
    def last_sequence(self) -> int:
        """The highest sequence number ever given (0: none yet); for the Hello."""
        return self._last

    @property
    def pending_count(self) -> int:
        """Events recorded and not yet acknowledged (in flight included)."""
        return sum(self._pending.values())

    def pending_by_priority(self) -> dict[Priority, int]:
        """``pending_count`` split by priority."""
        return dict(self._pending)

    @property
    def in_flight_count(self) -> int:
        """Events handed out by :meth:`next_batch` and not yet acknowledged nor requeued."""
        return len(self._in_flight)

    @property
    def disk_bytes(self) -> int:
        """Bytes the outbox takes on disk (database and write-ahead log)."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                total += os.path.getsize(f"{self._path}{suffix}")
        return total

    @property
    def limits(self) -> OutboxLimits:
        """The disk budget."""
        return self._limits

    def close(self) -> None:
        """Fold the log into the database and close it."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
