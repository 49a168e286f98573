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
log index lives in memory (no ``-shm`` file). Not for concurrent use by several threads at
once (a lock serialises them, so ``asyncio.to_thread`` is fine).

Damage: a database found corrupt on open (after a crash, that is a write-ahead log left
behind, ``PRAGMA quick_check`` is run first: a disk that lost log frames a checkpoint had
already copied leaves pages of two commits side by side, which no ordinary query notices),
or one whose pages turn out unreadable while running (any operation that meets SQLite's
"malformed", "not a database" or an I/O error), is set aside as ``<name>.corrupt`` after
every readable row was copied out (:mod:`edge.storage.salvage`), and a new one continues
with those rows, under their own sequences, from the same last sequence. The recovery is reported in
:attr:`Outbox.recovered` and to the :attr:`Outbox.on_recovery` listeners (the link closes
its stream and reconnects); a recovery while running also records a ``storage.recovered``
alarm itself. An append that met the damage is retried on the new database: the event is
not lost. Sequences that could not be read are kept as candidates until the orchestrator
says which of them it holds (:meth:`Outbox.settle_losses`, :mod:`edge.storage.loss`); the
rest are listed exactly in an ``outbox.gap`` alarm. A recovery cut short by a kill is done
again at the next start, from the set-aside file (a durable marker says it is unfinished).
When the last sequence itself was unreadable, the link calls
:meth:`Outbox.raise_sequence_floor` with the orchestrator's stored sequence so new events
are not mistaken for ones already stored.

Sent marks after a start: a disk that drops its last transactions (or a state directory
restored from an image) can forget that events were sent, and the orchestrator may hold
them; dropped for room they would be listed lost. The first hello after a start asks which
of the events not known as sent the orchestrator holds (:meth:`Outbox.held_after`): a gap
event that lists one of them (dropped for room before the welcome) is corrected by the
answer, and :meth:`Outbox.settle_losses` raises the marks over what it holds (over
everything up to its stored sequence when the answer is incomplete or the outbox went
back), so that none is dropped afterwards.

Numbers given again: after a disk went back, a run numbers new events from the last
sequence it finds, numbers the lost run had given too (to events the orchestrator stores,
or that a gap event of that run listed as lost). The last sequence found at a start is
kept on disk until a welcome (across runs that end before one); the first hello asks what
the orchestrator holds above it and what its gap events list as lost. If it heard of any
number above it: events under numbers listed lost are numbered again past what it heard of;
under held numbers they are sent as they are (the same event, delivered by the lost life,
is acknowledged; another is reported conflicting and numbered again); those dropped for
room before the welcome are listed under fresh numbers; the lost life's numbers nobody
holds, lists or has pending are listed in an ``outbox.gap`` alarm; and an
``outbox.rewound`` alarm says so: one number never names a lost event and a stored one.
Every event numbered again says the number it was first recorded under
(``Event.first_sequence``): an image put back later can bring an event back after the lost
life delivered a copy of it, and the orchestrator keeps that one as a copy, not twice.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType

from edge.events import EquipmentEvent, Priority
from edge.storage import loss
from edge.storage.atomic import PathLike, RecoveryOutcome, StorageRecovery
from edge.storage.errors import OutboxError, OutboxRecovered
from edge.storage.overflow import (
    GAP_DEVICE_ID,
    MAX_LISTED_RANGES,
    Dropped,
    OutboxLimits,
    bytes_to_free,
    gap_events,
    sequence_list,
)
from edge.storage.record import (
    EPOCH,
    MICROSECOND,
    ROW_OVERHEAD,
    Record,
    batch_entry_bytes,
    record,
)
from edge.storage.salvage import Salvage, salvage
from foundation.clock import Clock
from foundation.files import fsync_dir, private_directory, private_file, write_atomic
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
# What SQLite says when the file under it is damaged (not: busy, full, misuse).
_DAMAGE = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_IOERR")
# A write the disk refused (full: ENOSPC is SQLITE_FULL, but EFBIG, a file-size limit,
# is this one): the transaction is rolled back and the database intact, so nothing is set
# aside; the caller holds what it could not write (edge.storage.unwritten). A medium
# that is really failing shows on the next read.
_REFUSED_WRITE = ("SQLITE_IOERR_WRITE",)


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    name = str(getattr(exc, "sqlite_errorname", ""))
    if name:
        return name.startswith(_DAMAGE) and not name.startswith(_REFUSED_WRITE)
    return isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc)


def _log_left(path: Path) -> bool:
    """A non-empty write-ahead log next to ``path``: the last owner did not close it."""
    try:
        return os.path.getsize(f"{path}-wal") > 0
    except FileNotFoundError:
        return False


def _structure_damage(conn: sqlite3.Connection) -> str | None:
    """What ``PRAGMA quick_check`` finds wrong with the file, or None.

    Run after a crash (a disk that lost log frames the checkpoint had already copied into
    the database leaves pages of two commits side by side, rows above the last sequence,
    out of key order, which no ordinary query reports and every later one trusts; one read
    of the file, at start), and before a loss is settled.
    """
    lines = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)")]
    if lines == ["ok"]:
        return None
    return "database inconsistent after a crash (" + "; ".join(lines)[:500] + ")"


_SENT_READ = "SELECT value FROM meta WHERE key = 'sent.{lane}'"


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


def _rewound(last: int, stored: int, settlement: loss.Settlement, at: datetime) -> EquipmentEvent:
    lost = loss.count(settlement.lost)
    return EquipmentEvent(
        device_id=GAP_DEVICE_ID,
        type="outbox.rewound",
        priority=Priority.ALARM,
        at=at,
        message=(
            f"the orchestrator holds sequences up to {stored} but this outbox started from "
            f"{last}: it went back to an older state (a restored image, or a disk that lost "
            f"its last writes); {lost} sequence(s) it had given since are lost, events "
            f"recorded since are numbered again past {stored}"
        ),
        attributes={"last_sequence": str(last), "stored_sequence": str(stored), "lost": str(lost)},
    )


def _answered_up_to(held: list[tuple[int, int]], stored: int, asked_after: int) -> int:
    """Up to which sequence a welcome's list of held ranges is the whole answer: the
    orchestrator's stored sequence, or less when the list was cut at its length limit (its
    last range then ends below what the orchestrator stores)."""
    if stored <= asked_after or (held and held[-1][1] >= stored):
        return stored
    return held[-1][1] if held else asked_after


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
        self._lock = threading.RLock()
        self.recovered: StorageRecovery | None = None
        # Called (under the outbox's lock) after every recovery while running.
        self.on_recovery: list[Callable[[StorageRecovery], None]] = []
        if not self._path.parent.exists():
            private_directory(self._path.parent)
        # A lane's in-flight events are always its oldest: those at or below its cursor.
        self._cursor = dict.fromkeys(_LANES, 0)
        self._in_flight: set[int] = set()
        # A log left behind: the last run did not close (a kill, a power cut).
        crashed = _log_left(self._path)
        # The disk may have gone back since the marks were written (dropped its last
        # transactions at a crash; a state directory restored from an image of a stopped
        # agent, which nothing here can tell from a plain restart): until the first
        # welcome says which pending events the orchestrator holds, the marks are doubted:
        # the hello asks about every event not known as sent, so that a gap event listing
        # one of them (dropped for room before the welcome) is corrected by the answer.
        self._marks_doubted = True
        # Numbers given above this one before the first welcome (see _note_start).
        self._started_after: int | None = None
        self._found_mark: int | None = None
        damage = None
        if self._recovery_marker.exists():
            # Killed while recovering: the damaged file is set aside and what was read
            # from it may not be in the new one yet. Done again, from the set-aside file.
            damage = "a recovery was interrupted (a kill or a power cut): done again"
        else:
            try:
                self._conn = self._open()
                damage = _structure_damage(self._conn) if crashed else None
                if damage is None:
                    self._load()
            except sqlite3.DatabaseError as exc:
                if not _damaged(exc):
                    raise
                damage = f"database corrupt ({exc})"
        if damage is not None:
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self._conn.close()
            self.recovered = self._start_again(damage, known_last=None)
        try:
            self._note_start()
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self.recovered = self._start_again(f"database corrupt ({exc})", known_last=None)
            self._note_start()

    def _note_start(self) -> None:
        """Keep where this run started numbering until a welcome says what the
        orchestrator heard of.

        If the disk went back (an image put back, a log that lost its last commits), the
        numbers given since the start are numbers the lost run gave too, to events the
        orchestrator stored or a gap event of that run listed as lost: one number for two
        events. Only the first welcome can tell (the orchestrator heard of numbers above the
        start), so the point is kept durably across runs that end before a welcome (a kill,
        no link): :meth:`settle_losses` then numbers those events again past what the
        orchestrator heard of, and lists the numbers they leave that it does not hold.
        """
        mark = self._scalar("SELECT value FROM meta WHERE key = 'unwelcomed_after'")
        if mark < 0 and self._found_mark is not None:
            mark = self._found_mark  # the file was set aside: its mark, if it could be read
        self._started_after = min(mark, self._last) if mark >= 0 else self._last
        if self._started_after != mark:
            self._write_start_mark(self._started_after)

    def _write_start_mark(self, after: int | None) -> None:
        with self._transaction():
            self._conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'unwelcomed_after'",
                (-1 if after is None else after,),
            )

    def _load(self) -> None:
        self._page_size = self._scalar("PRAGMA page_size")
        self._last = self._scalar("SELECT value FROM meta WHERE key = 'last_sequence'")
        self._pending = {p: self._scalar(_sql("SELECT count(*) FROM {lane}", p)) for p in _LANES}
        # Per lane, the highest sequence ever handed out to be sent: never dropped above
        # it (it may be stored already), see edge.storage.overflow.
        self._sent = {p: self._scalar(_sql(_SENT_READ, p)) for p in _LANES}
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
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('lost_open_from', 0)")
            # The last sequence found at the first start since a welcome (-1: welcomed since).
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('unwelcomed_after', -1)")
            # Sequences that may have been lost to damage, until the orchestrator says.
            conn.execute(
                "CREATE TABLE IF NOT EXISTS lost (first INTEGER PRIMARY KEY, last INTEGER NOT NULL)"
            )
            for priority in _LANES:
                conn.execute(_sql("INSERT OR IGNORE INTO meta VALUES ('sent.{lane}', 0)", priority))
                conn.execute(
                    _sql(
                        "CREATE TABLE IF NOT EXISTS {lane} (seq INTEGER PRIMARY KEY,"
                        " at_us INTEGER NOT NULL, body BLOB NOT NULL,"
                        " pinned INTEGER NOT NULL DEFAULT 0)",
                        priority,
                    )
                )
                # The few pinned rows (gap events), found without reading every row.
                conn.execute(
                    _sql(
                        "CREATE INDEX IF NOT EXISTS {lane}_pinned ON {lane} (seq) WHERE pinned",
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

    def _set_aside(self) -> Path:
        corrupt = Path(f"{self._path}.corrupt")
        for suffix in ("", "-wal", "-shm", "-journal"):
            source = Path(f"{self._path}{suffix}")
            with contextlib.suppress(FileNotFoundError):
                os.replace(source, Path(f"{corrupt}{suffix}"))
        return corrupt

    @property
    def _recovery_marker(self) -> Path:
        return Path(f"{self._path}.recovering")

    def _start_again(self, reason: str, *, known_last: int | None) -> StorageRecovery:
        """Set the damaged database aside and continue in a new one with every row that
        could be read; returns the report (see the module docstring).

        A kill at any point of it loses nothing: a marker is made durable before the file
        is set aside and removed once the new one holds what was read; a start that finds
        the marker does it again from the set-aside file (whatever new file it left is
        dropped)."""
        marker = self._recovery_marker
        if marker.exists():
            corrupt = Path(f"{self._path}.corrupt")
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self._path}{suffix}").unlink(missing_ok=True)
        else:
            write_atomic(marker, reason.encode("utf-8", "replace")[:2000])
            corrupt = self._set_aside()
            fsync_dir(self._path.parent)
        found = Salvage(integrity="unreadable")
        with contextlib.suppress(sqlite3.Error, OSError):
            damaged = sqlite3.connect(corrupt, isolation_level=None, timeout=0.0)
            try:
                damaged.execute("PRAGMA locking_mode = EXCLUSIVE")  # no -shm to create
                found = salvage(damaged, _TABLE, known_last=known_last)
            finally:
                damaged.close()
        last = known_last if known_last is not None else found.last_sequence
        salvaged_last = max((r.seq for r in found.rows), default=0)
        self._conn = self._open()
        with self._transaction():
            for r in found.rows:
                self._conn.execute(
                    _sql(
                        "INSERT INTO {lane} (seq, at_us, body, pinned) VALUES (?, ?, ?, ?)",
                        r.priority,
                    ),
                    (r.seq, r.at_us, r.body, r.pinned),
                )
            for priority in _LANES:  # what was read may have been sent: never dropped
                top = max((r.seq for r in found.rows if r.priority is priority), default=0)
                self._conn.execute(
                    _sql("UPDATE meta SET value = ? WHERE key = 'sent.{lane}'", priority), (top,)
                )
            self._conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'last_sequence'",
                (max(last or 0, salvaged_last),),
            )
            candidates = list(found.unreadable)
            if found.suspect_up_to:
                # Damaged: what was not read back may be lost though no walk said so (the
                # orchestrator's answer at the welcome makes it exact).
                candidates.append((1, found.suspect_up_to))
            if last is None:
                # What the old database gave above the rows read is unknown.
                candidates.append((salvaged_last + 1, loss.OPEN_END))
                self._conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'lost_open_from'", (salvaged_last + 1,)
                )
            self._conn.executemany(
                "INSERT OR REPLACE INTO lost (first, last) VALUES (?, ?)",
                loss.normalise(candidates),
            )
        self._load()
        # The new file holds what was read (committed): the recovery is done.
        marker.unlink(missing_ok=True)
        fsync_dir(self._path.parent)
        self._found_mark = found.start_mark
        if self._started_after is not None:  # running: the new file keeps the run's mark
            self._write_start_mark(self._started_after)
        self._cursor = dict.fromkeys(_LANES, 0)
        self._in_flight = set()
        outcome = RecoveryOutcome.SALVAGED if found.rows else RecoveryOutcome.STARTED_EMPTY
        unreadable = loss.count((a, b) for a, b in found.unreadable if b < loss.OPEN_END)
        return StorageRecovery(
            str(self._path),
            outcome,
            f"{reason}; {len(found.rows)} pending event(s) recovered"
            + (f", {unreadable} sequence(s) unreadable" if found.unreadable else "")
            + ("" if last is not None else ", last sequence unknown"),
            {
                "recovered": str(len(found.rows)),
                "unreadable": str(unreadable),
                "integrity": found.integrity[:500],
                "set_aside": corrupt.name,
            },
        )

    def recover(self, reason: str) -> StorageRecovery:
        """Set a damaged database aside and go on in a new one (the module docstring),
        record a ``storage.recovered`` alarm and tell the :attr:`on_recovery` listeners."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            report = self._start_again(reason, known_last=self._last)
            self.recovered = report
            event = record(report.to_event(self._clock.now()), "storage.recovered")
            with self._transaction():
                sequences = self._insert([event])
                self._conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'last_sequence'", (sequences[-1],)
                )
            self._last = sequences[-1]
            self._pending[event.priority] += 1
            for listener in self.on_recovery:
                listener(report)
        return report

    @contextlib.contextmanager
    def _guard(self, operation: str) -> Iterator[None]:
        """Turn damage met by ``operation`` into a recovery and :class:`OutboxRecovered`."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise
            self._rollback()
            report = self.recover(f"{operation}: {exc}")
            raise OutboxRecovered(str(self._path), report.reason) from exc

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
        recorded in the same transaction (see :mod:`edge.storage.overflow`). If the
        database turns out damaged, it is recovered and the append made on the new one.

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
        try:
            return self._append(records, incoming)
        except OutboxRecovered:
            return self._append(records, incoming)  # on the new database: nothing lost

    def parts(self, events: Sequence[EquipmentEvent]) -> list[list[EquipmentEvent]]:
        """``events`` split, in order, into as few appends as :meth:`append_many` takes (a
        monitoring pass that caught up on several intervals after the loop was held up or
        the clock stepped can exceed one).

        Raises:
            OutboxError: an event is malformed (the field is named).
        """
        parts: list[list[EquipmentEvent]] = [[]]
        size = 0
        for i, event in enumerate(events):
            estimate = record(event, f"events[{i}]").estimate
            if parts[-1] and size + estimate > self._limits.max_append_bytes:
                parts.append([])
                size = 0
            parts[-1].append(event)
            size += estimate
        return [part for part in parts if part]

    def _append(self, records: list[Record], incoming: int) -> list[int]:
        with self._lock, self._guard("append"):
            with self._transaction():
                dropped = self._make_room(incoming + _GAP_EVENT_ESTIMATE)
                gaps = [
                    dataclasses.replace(record(gap, "gap"), pinned=True)
                    for gap in (gap_events(dropped, self._clock.now()) if dropped else [])
                ]
                batch = gaps + records
                sequences = self._insert(batch)
                self._conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'last_sequence'", (sequences[-1],)
                )
            self._last = sequences[-1]
            for d in dropped:
                self._pending[d.priority] -= 1
            for r in batch:
                self._pending[r.priority] += 1
        return sequences[len(gaps) :]

    def _insert(self, records: Sequence[Record], *, after: int | None = None) -> list[int]:
        """Insert ``records`` numbered from after the last sequence (or ``after``)."""
        rows: dict[Priority, list[tuple[int, int, bytes, bool]]] = {p: [] for p in _LANES}
        sequences = []
        seq = self._last if after is None else after
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
            # Never what was ever handed out to be sent (in flight, or sent on a stream
            # that broke before its acknowledgement came: maybe stored already).
            after = max(self._cursor[priority], self._sent[priority])
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

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

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

        What it hands out is marked sent, durably, before it is returned (so it is never
        dropped for room: it may be stored by the time it would be).

        Args:
            max_events: at most this many (the link's window minus ``in_flight_count``).
            max_bytes: the serialized ``EventBatch`` holding them stays within this.

        Raises:
            OutboxRecovered: the database was found damaged and recovered; the link starts
                a new stream.
        """
        if max_events <= 0:
            return []
        with self._lock, self._guard("read the next batch"):
            batch, cursor = self._read_batch(max_events, max_bytes)
            self._mark_sent(cursor)
            for priority, seq in cursor.items():
                self._cursor[priority] = seq
            self._in_flight.update(e.sequence for e in batch)
        return batch

    def _read_batch(
        self, max_events: int, max_bytes: int
    ) -> tuple[list[link_pb2.Event], dict[Priority, int]]:
        batch: list[link_pb2.Event] = []
        cursor = dict(self._cursor)
        total = 0
        for priority in _LANES:
            rows = self._conn.execute(
                _sql("SELECT seq, body FROM {lane} WHERE seq > ? ORDER BY seq LIMIT ?", priority),
                (cursor[priority], max_events - len(batch)),
            ).fetchall()
            for seq, body in rows:
                cost = batch_entry_bytes(len(body))
                if batch and total + cost > max_bytes:
                    return batch, cursor
                event = link_pb2.Event()
                event.ParseFromString(body)
                batch.append(event)
                total += cost
                cursor[priority] = seq
            if len(batch) >= max_events:
                break
        return batch, cursor

    def _mark_sent(self, cursor: dict[Priority, int]) -> None:
        """Raise the lanes' sent marks to ``cursor`` (durably: before the bytes leave)."""
        raised = {p: seq for p, seq in cursor.items() if seq > self._sent[p]}
        if not raised:
            return  # a resend after a reconnection: nothing new
        with self._transaction():
            for priority, seq in raised.items():
                self._conn.execute(
                    _sql("UPDATE meta SET value = ? WHERE key = 'sent.{lane}'", priority), (seq,)
                )
        self._sent.update(raised)

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
        with self._lock, self._guard("forget acknowledged events"):
            deleted = dict.fromkeys(_LANES, 0)
            # An ack lost to a power cut only means those events are sent again (the
            # orchestrator stores by sequence, idempotently): no fsync to wait for. The
            # next append's fsync, or a checkpoint, makes it durable along the way.
            self._conn.execute("PRAGMA synchronous = NORMAL")
            try:
                with self._transaction():
                    for priority in _LANES:
                        for first, last in bounds:
                            cursor = self._conn.execute(
                                _sql("DELETE FROM {lane} WHERE seq BETWEEN ? AND ?", priority),
                                (first, last),
                            )
                            deleted[priority] += cursor.rowcount
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
        with self._lock, self._guard("raise the sequence floor"):
            if stored_sequence <= self._last:
                return False
            with self._transaction():
                self._conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'last_sequence'", (stored_sequence,)
                )
            self._last = stored_sequence
        return True

    # Losses and renumbering --------------------------------------------------------------

    def held_after(self) -> int:
        """What the hello asks the orchestrator about (``Hello.held_after``): below the
        lowest sequence that may have been lost or that a gap event still to be sent
        lists, and at the first hello of a run below what it numbered (a disk that went
        back), else the last sequence given (which also shows a counter gone back)."""
        with self._lock, self._guard("read the loss candidates"):
            firsts = [self._scalar("SELECT min(first) FROM lost") or self._last + 1]
            if self._started_after is not None:
                # Did the orchestrator hear of numbers this run gave? (the disk went back)
                firsts.append(self._started_after + 1)
            firsts += [ranges[0][0] for _, _, ranges in self._unsent_gaps() if ranges]
            if self._marks_doubted:
                # Which of the events not known as sent were sent before the crash?
                firsts += [
                    self._scalar(_sql("SELECT min(seq) FROM {lane} WHERE seq > ?", p), sent)
                    or self._last + 1
                    for p, sent in self._sent.items()
                ]
        return min(min(firsts) - 1, self._last)

    def _unsent_gaps(self) -> list[tuple[Priority, link_pb2.Event, loss.Ranges]]:
        """The gap events waiting to be sent (pinned rows) and what each lists."""
        found = []
        for priority in _LANES:
            for (body,) in self._conn.execute(
                _sql("SELECT body FROM {lane} WHERE pinned AND seq > ?", priority),
                (self._cursor[priority],),
            ):
                event = link_pb2.Event.FromString(body)
                ranges = loss.gap_listed(event)
                if ranges:
                    found.append((priority, event, ranges))
        return found

    def _renumber_dropped(self, started_after: int, stored: int) -> None:
        """The disk went back (see :meth:`_note_start`): what this run numbered and then
        dropped for room before the welcome is listed under fresh numbers past ``stored``
        (the numbers it had name the lost life's events), in the same transaction."""
        last = max(self._last, stored)
        for priority, event, ranges in self._unsent_gaps():
            provisional = loss.subtract(ranges, [(0, started_after)])
            if not provisional:
                continue
            fresh = (last + 1, last + loss.count(provisional))
            last = fresh[1]
            corrected = loss.given_again(event, provisional, fresh)
            self._conn.execute(
                _sql("UPDATE {lane} SET body = ? WHERE seq = ?", priority),
                (corrected.SerializeToString(), event.sequence),
            )
        if last > self._last:
            self._conn.execute("UPDATE meta SET value = ? WHERE key = 'last_sequence'", (last,))
            self._last = last

    def _correct_gaps(self, held: list[tuple[int, int]], known_above: int) -> None:
        """Take out of the unsent gap events what the orchestrator says it holds."""
        for priority, event, _ in self._unsent_gaps():
            corrected = loss.corrected_gap(event, held, known_above=known_above)
            if corrected is not None:
                self._conn.execute(
                    _sql("UPDATE {lane} SET body = ? WHERE seq = ?", priority),
                    (corrected.SerializeToString(), event.sequence),
                )

    def settle_losses(
        self,
        *,
        held: Iterable[tuple[int, int]] | None,
        stored_sequence: int,
        hello_last: int,
        asked_after: int | None = None,
        listed_lost: Iterable[tuple[int, int]] = (),
    ) -> loss.Settlement:
        """At a welcome: record exactly what was lost and number new events past what the
        orchestrator holds.

        With ``held`` (the welcome listed what the orchestrator holds above
        :meth:`held_after`), the loss is exact: ``outbox.gap`` alarms list it and the
        candidates are forgotten; an ``outbox.rewound`` alarm says the orchestrator held
        sequences above ``hello_last``. Events this outbox recorded over numbers its lost
        predecessor may have given are renumbered.

        Args:
            held: ``Welcome.held_after``, or None if the orchestrator did not list it (an
                older one): then no exact list can be made, and none is.
            stored_sequence: ``Welcome.stored_sequence``.
            hello_last: the last sequence said in the hello.
            asked_after: ``Hello.held_after`` (by default, ``hello_last``).
            listed_lost: ``Welcome.listed_lost_after``: what gap events the orchestrator
                holds list as lost already (not listed again).
        """
        with self._lock, self._guard("settle losses"):
            after = hello_last if asked_after is None else asked_after
            started_after = self._started_after
            went_back = started_after is not None and stored_sequence > started_after
            if held is not None:
                held = list(held)
                with self._transaction():
                    if went_back:
                        assert started_after is not None
                        self._renumber_dropped(started_after, stored_sequence)
                    self._correct_gaps(held, after)
            self._trust_marks(held, stored_sequence, hello_last, after)
            candidates = [(int(a), int(b)) for a, b in self._conn.execute("SELECT * FROM lost")]
            damaged = bool(candidates)
            open_from = self._scalar("SELECT value FROM meta WHERE key = 'lost_open_from'")
            given_again: loss.Ranges = []
            if went_back and held is not None:
                assert started_after is not None
                # The orchestrator heard of numbers above the start: the disk went back, and
                # what was numbered since may reuse numbers the lost life gave. Pending events
                # under numbers it holds are sent as they are (the same event, delivered by
                # the lost life, is acknowledged; another one is reported conflicting and
                # numbered again); under numbers a gap event listed lost, they are numbered
                # again now (else one number would name a lost event and a stored one). What
                # is neither held, listed nor pending was the lost life's, lost: listed.
                # (Only what the answer covers: the hello asks below the start.)
                mine = self._pending_in([(started_after + 1, stored_sequence)], below=None)
                given_again = loss.subtract(mine, loss.subtract(mine, list(listed_lost)))
                candidates.append((max(started_after, after) + 1, stored_sequence))
            if candidates:
                # What a gap event still here lists is accounted for already (dropped for
                # room, lost before): listed once, not again as lost to the storage.
                candidates = loss.subtract(
                    candidates, [r for _, _, ranges in self._unsent_gaps() for r in ranges]
                )
            if not candidates and stored_sequence <= hello_last:
                self._welcomed()
                return loss.Settlement(lost=[], rewound=False)  # the usual welcome
            if candidates and held is not None:
                # What is pending is read from this file: before anything is declared
                # lost, the file must be sound (a garbled page is stepped over silently
                # by the reads below, and its rows would be listed lost though a
                # recovery still reads them).
                damage = _structure_damage(self._conn)
                if damage is not None:
                    raise sqlite3.DatabaseError(f"database disk image is malformed: {damage}")
            later: loss.Ranges = []  # candidates the answer did not reach: asked again
            if held is None:
                settlement = loss.Settlement(lost=[], rewound=False)
            else:
                wanted = [*candidates, (hello_last + 1, max(hello_last, stored_sequence))]
                settlement = loss.settle(
                    candidates,
                    held=loss.normalise([*held, *listed_lost]),
                    pending=self._pending_in(wanted, below=open_from or None),
                    last_sequence=hello_last,
                    stored_sequence=stored_sequence,
                    open_from=open_from or None,
                )
                reached = _answered_up_to(held, stored_sequence, after)
                if reached < stored_sequence:  # the list was cut short (its length limit)
                    above = [(reached + 1, loss.OPEN_END)]
                    later = loss.subtract(wanted, [(0, reached)])
                    settlement = dataclasses.replace(
                        settlement, lost=loss.subtract(settlement.lost, above)
                    )
            if went_back or stored_sequence > hello_last:
                settlement = dataclasses.replace(settlement, rewound=True)
            now = self._clock.now()
            reason = "damaged storage" if damaged else "the outbox went back to an older state"
            events = loss.loss_events(settlement.lost, reason, now)
            if settlement.rewound:
                known = hello_last if started_after is None else min(hello_last, started_after)
                events.insert(0, _rewound(known, stored_sequence, settlement, now))
            records = [dataclasses.replace(record(e, "loss"), pinned=True) for e in events]
            # New events are numbered past what the orchestrator holds.
            floor = max(self._last, stored_sequence)
            with self._transaction():
                sequences = self._insert(records, after=floor) if records else [floor]
                self._conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'last_sequence'", (sequences[-1],)
                )
                # Settled (or, with an older orchestrator, never to be: the recovery alarm
                # said what it could).
                self._conn.execute("DELETE FROM lost")
                self._conn.executemany("INSERT INTO lost (first, last) VALUES (?, ?)", later)
                self._conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'lost_open_from'",
                    (open_from if later and open_from else 0,),
                )
            self._last = sequences[-1]
            for r in records:
                self._pending[r.priority] += 1
            if open_from and stored_sequence >= open_from:
                # Recorded here over numbers the lost outbox may have given (and the
                # orchestrator may hold for other events): numbered again, past them.
                self.reissue([(open_from, stored_sequence)])
            if given_again:
                self.reissue(given_again)
            # Only now: a run killed before this point does it again at its welcome.
            self._welcomed()
        return settlement

    def _welcomed(self) -> None:
        """What was numbered since the start is settled (see :meth:`_note_start`)."""
        if self._started_after is not None:
            self._write_start_mark(None)
            self._started_after = None

    def _trust_marks(
        self, held: list[tuple[int, int]] | None, stored: int, hello_last: int, after: int
    ) -> None:
        """Make the sent marks cover what the orchestrator may hold, so that no event it
        holds is ever dropped for room (and listed lost): after a crash, the pending events
        the welcome lists as held; if it did not list them all (an older orchestrator, a
        list cut short), or if the outbox went back (the orchestrator holds more than it
        gave), every pending event up to what the orchestrator stores."""
        rewound = stored > hello_last
        if not self._marks_doubted and not rewound:
            return
        complete = held is not None and _answered_up_to(held, stored, after) >= stored
        raised = dict(self._sent)
        for priority in _LANES:
            if not complete or rewound:
                top = self._scalar(
                    _sql("SELECT max(seq) FROM {lane} WHERE seq <= ?", priority), stored
                )
                raised[priority] = max(raised[priority], top)
                continue
            for first, last in held or []:
                top = self._scalar(
                    _sql("SELECT max(seq) FROM {lane} WHERE seq BETWEEN ? AND ?", priority),
                    first,
                    last,
                )
                raised[priority] = max(raised[priority], top)
        self._mark_sent(raised)
        self._marks_doubted = False

    def _pending_in(
        self, ranges: Iterable[tuple[int, int]], *, below: int | None
    ) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        top = loss.OPEN_END if below is None else below - 1
        for first, last in loss.normalise(ranges):
            for priority in _LANES:
                found += [
                    (int(seq), int(seq))
                    for (seq,) in self._conn.execute(
                        _sql("SELECT seq FROM {lane} WHERE seq BETWEEN ? AND ?", priority),
                        (first, min(last, top)),
                    )
                ]
        return loss.normalise(found)

    def reissue(self, ranges: Iterable[tuple[int, int]], *, conflict: bool = False) -> list[int]:
        """Record again, under new sequences, the pending events numbered in ``ranges``
        (the orchestrator holds other events under those numbers), and forget those
        numbers, in one transaction: never both copies, never neither. The new sequences.

        Args:
            ranges: inclusive sequence ranges.
            conflict: the orchestrator reported the conflict (``EventAck.conflicting``):
                an ``outbox.conflict`` alarm is recorded with the copies.
        """
        bounds = loss.normalise(ranges)
        with self._lock, self._guard("renumber events"):
            rows: list[tuple[int, Priority, int, bytes, bool]] = []
            for priority in _LANES:
                for first, last in bounds:
                    rows += [
                        (int(seq), priority, int(at_us), bytes(body), bool(pinned))
                        for seq, at_us, body, pinned in self._conn.execute(
                            _sql(
                                "SELECT seq, at_us, body, pinned FROM {lane}"
                                " WHERE seq BETWEEN ? AND ?",
                                priority,
                            ),
                            (first, last),
                        )
                    ]
            if not rows:
                return []
            rows.sort()
            copies = []
            for seq, priority, at_us, body, pinned in rows:
                event = link_pb2.Event.FromString(body)
                event.ClearField("sequence")
                # The copy says the number it was first recorded under (a copy of a copy
                # keeps the first): the orchestrator tells the same event delivered under
                # another number by a life this disk forgot from a new one.
                event.first_sequence = event.first_sequence or seq
                copies.append(Record(priority, at_us, event.SerializeToString(), pinned))
            if conflict:
                listed = sequence_list(bounds[:MAX_LISTED_RANGES])
                alarm = EquipmentEvent(
                    device_id=GAP_DEVICE_ID,
                    type="outbox.conflict",
                    priority=Priority.ALARM,
                    at=self._clock.now(),
                    message=(
                        f"the orchestrator holds other events under sequences {listed}: "
                        f"{len(rows)} event(s) recorded again under new sequences (this "
                        "outbox's counter went back)"
                    ),
                    attributes={"sequences": listed, "renumbered": str(len(rows))},
                )
                copies.append(record(alarm, "conflict"))
            with self._transaction():
                for seq, priority, *_ in rows:
                    self._conn.execute(_sql("DELETE FROM {lane} WHERE seq = ?", priority), (seq,))
                sequences = self._insert(copies)
                self._conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'last_sequence'", (sequences[-1],)
                )
            self._last = sequences[-1]
            self._in_flight -= {seq for seq, *_ in rows}
            if conflict:
                self._pending[Priority.ALARM] += 1
        return sequences[: len(rows)]

    # Figures ---------------------------------------------------------------------------

    @property
    def last_sequence(self) -> int:
        """The highest sequence number ever given (0: none yet); for the Hello."""
        return self._last

    @property
    def pending_count(self) -> int:
        """Events recorded and not yet acknowledged (in flight included)."""
        return sum(self._pending.values())

    def oldest_recorded_us(self) -> int:
        """When the oldest event held was recorded (µs since the epoch, the agent's clock;
        0: none held)."""
        with self._lock:
            found = [self._scalar(_sql("SELECT MIN(at_us) FROM {lane}", p)) for p in _LANES]
        return min((f for f in found if f), default=0)

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
