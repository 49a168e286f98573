"""What the outbox does when its disk budget is full (pure: no I/O, no clock).

The policy, stated once:

- The outbox has a disk budget (:class:`OutboxLimits`, 64 MiB by default) covering the
  database, its write-ahead log and slack. Events are only dropped when an append would
  take the database over its high-water mark.
- Then room is made down to a low-water mark (one eviction chunk below it), so a full outbox
  drops in chunks of about 1/64 of the budget and records one gap event per chunk, not one
  per append.
- What goes, in order: the oldest METERING readings; only when no metering is left, the
  oldest EVENTs. ALARMs are never dropped, nor gap events (the only record of what was),
  nor anything in flight (sent, awaiting its acknowledgement). If nothing else can go,
  the new events are stored anyway: the overshoot is at most one append, since the next
  append drops that metering first.
- Each chunk dropped is recorded by gap events (:func:`gap_events`: type ``outbox.gap``,
  priority EVENT, device ``outbox``) saying exactly what was lost: how many, the sequence
  ranges (every one of them: a chunk whose ranges would not fit one event is split over
  several), the first and last sequence and time, overall and by priority.
- Only events never sent can go: one sent and not yet acknowledged may be stored by the
  orchestrator already (its acknowledgement lost with the connection), and a gap event
  must never list what the orchestrator holds. The outbox keeps, per lane, the highest
  sequence it ever handed out, durably, and drops only above it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

# The gap events' wire format lives in domain.sequences (the orchestrator reads it too).
from domain.sequences import GAP_EVENT_TYPE as GAP_EVENT_TYPE
from domain.sequences import parse_sequence_list as parse_sequence_list
from domain.sequences import sequence_list as sequence_list
from edge.events import EquipmentEvent, Priority
from edge.storage.errors import OutboxError

MIB = 1024 * 1024
GAP_DEVICE_ID = "outbox"
# Ranges listed in one gap event; more are split over several events (each complete).
MAX_LISTED_RANGES = 64
_FILE_SLACK = 128 * 1024  # in-memory WAL index aside, page rounding and the meta table


@dataclass(frozen=True)
class OutboxLimits:
    """The outbox's disk budget and what follows from it.

    Attributes:
        max_disk_bytes: database plus write-ahead log never exceed this (default 64 MiB),
            except for alarms when nothing else is left to drop.
    """

    max_disk_bytes: int = 64 * MIB

    def __post_init__(self) -> None:
        if self.max_disk_bytes < MIB:
            raise OutboxError("limits.max_disk_bytes", "must be at least 1 MiB")

    @property
    def wal_bytes(self) -> int:
        """Room kept for the write-ahead log (checkpoint threshold plus one append)."""
        return self.max_disk_bytes // 8

    @property
    def checkpoint_bytes(self) -> int:
        """The log is folded into the database once it holds this much."""
        return self.max_disk_bytes // 32

    @property
    def max_append_bytes(self) -> int:
        """The largest single append (one transaction); bigger ones are refused."""
        return self.max_disk_bytes // 16

    @property
    def eviction_bytes(self) -> int:
        """How far below the high-water mark a full outbox makes room (one gap event)."""
        return self.max_disk_bytes // 64

    @property
    def high_water_bytes(self) -> int:
        """The database size that triggers dropping."""
        return self.max_disk_bytes - self.wal_bytes - _FILE_SLACK


def bytes_to_free(used: int, incoming: int, limits: OutboxLimits) -> int:
    """How many bytes to drop before storing ``incoming`` bytes (0: none).

    Args:
        used: bytes the database uses now.
        incoming: estimated bytes of the events about to be stored.
        limits: the budget.
    """
    if used + incoming <= limits.high_water_bytes:
        return 0
    return used + incoming - (limits.high_water_bytes - limits.eviction_bytes)


@dataclass(frozen=True)
class Dropped:
    """One event the outbox dropped to stay within its budget."""

    sequence: int
    priority: Priority
    at: datetime


def sequence_ranges(sequences: Iterable[int]) -> list[tuple[int, int]]:
    """Inclusive ranges covering exactly ``sequences``: ``[1, 2, 3, 7] -> [(1, 3), (7, 7)]``."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(sequences)):
        if ranges and ranges[-1][1] == seq - 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


def _describe(prefix: str, dropped: Sequence[Dropped]) -> dict[str, str]:
    sequences = [d.sequence for d in dropped]
    times = [d.at for d in dropped]
    return {
        f"{prefix}dropped": str(len(dropped)),
        f"{prefix}first_sequence": str(min(sequences)),
        f"{prefix}last_sequence": str(max(sequences)),
        f"{prefix}first_at": min(times).isoformat(),
        f"{prefix}last_at": max(times).isoformat(),
    }


def gap_events(dropped: Sequence[Dropped], at: datetime) -> list[EquipmentEvent]:
    """Gap events listing every one of ``dropped``, each with at most
    :data:`MAX_LISTED_RANGES` ranges (so none is ever truncated)."""
    groups: list[list[Dropped]] = []
    ranges = 0
    previous = None
    for d in sorted(dropped, key=lambda d: d.sequence):
        starts_range = previous is None or d.sequence != previous + 1
        if not groups or (starts_range and ranges == MAX_LISTED_RANGES):
            groups.append([])
            ranges = 0
        if starts_range or not groups[-1]:
            ranges += 1
        groups[-1].append(d)
        previous = d.sequence
    return [gap_event(group, at) for group in groups]


def gap_event(dropped: Sequence[Dropped], at: datetime) -> EquipmentEvent:
    """The event recording that ``dropped`` were dropped, at ``at``.

    Raises:
        OutboxError: ``dropped`` is empty.
    """
    if not dropped:
        raise OutboxError("dropped", "a gap event records at least one dropped event")
    attributes = _describe("", dropped)
    parts = []
    for priority in Priority:
        of_priority = [d for d in dropped if d.priority is priority]
        if of_priority:
            name = priority.name.lower()
            attributes.update(_describe(f"{name}.", of_priority))
            parts.append(f"{len(of_priority)} {name}")
    ranges = sequence_ranges(d.sequence for d in dropped)
    listed = ranges[:MAX_LISTED_RANGES]
    attributes["sequences"] = sequence_list(listed)
    if len(ranges) > len(listed):
        attributes["sequences_truncated"] = "true"
    attributes["policy"] = "oldest metering first, then oldest events; alarms never dropped"
    return EquipmentEvent(
        device_id=GAP_DEVICE_ID,
        type=GAP_EVENT_TYPE,
        priority=Priority.EVENT,
        at=at,
        message=(
            f"outbox full: dropped {' and '.join(parts)}, sequences "
            f"{attributes['first_sequence']}..{attributes['last_sequence']}"
        ),
        attributes=attributes,
    )
