"""Events the outbox could not take (a full or failing disk), held in memory until it can.

A full disk must not reach the street: the agent never lets a failed write of the outbox
escape into a controller (which would stop it and re-open its outputs). The events wait
here, in order and bounded (:attr:`Unwritten.limit`: the oldest metering dropped first,
then the oldest events, alarms last), behind one ``storage.full`` alarm raised at the
first failure. Once the outbox takes them again they are written in that order under new
sequences, then the alarm's ``cleared`` event; what was dropped is counted in it. Pure:
the agent does the writing (:meth:`edge.agent.Agent.record`).

The control centre hears of the full disk when it is written, i.e. once space returns
(or after a restart on a freed disk): events live in memory only until then, and a power
cut loses them, as it would on any cabinet whose disk is full.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime

from edge.events import EquipmentEvent, Priority
from edge.storage.errors import OutboxRecovered

# What a write to the outbox raises when the disk under it is full or failing (a full
# disk that SQLite reports as an I/O error, as RLIMIT_FSIZE does, included).
DISK_FAILURES: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, OutboxRecovered)
FULL = "storage.full"


@dataclass
class Unwritten:
    """The events waiting for the outbox, and the ``storage.full`` alarm's state."""

    limit: int = 10_000
    held: list[EquipmentEvent] = field(default_factory=list)
    failing_since: datetime | None = None
    dropped: int = 0

    def hold(self, events: list[EquipmentEvent], reason: str, now: datetime) -> None:
        """Keep ``events`` (the outbox refused them with ``reason``)."""
        if self.failing_since is None:
            self.failing_since = now
            self.held.insert(
                0,
                EquipmentEvent(
                    "", FULL, Priority.ALARM, now,
                    "the outbox cannot write: events held in memory until it can",
                    {"state": "raised", "reason": reason[:200]},
                ),
            )  # fmt: skip
        self.held.extend(events)
        for priority in (Priority.METERING, Priority.EVENT, Priority.ALARM):
            while len(self.held) > self.limit:
                oldest = next(
                    (i for i, e in enumerate(self.held) if i and e.priority is priority), None
                )
                if oldest is None:
                    break
                del self.held[oldest]
                self.dropped += 1

    def cleared(self, now: datetime) -> EquipmentEvent:
        """The alarm's end, once everything held is written."""
        assert self.failing_since is not None
        held_s = (now - self.failing_since).total_seconds()
        event = EquipmentEvent(
            "", FULL, Priority.EVENT, now, "the outbox writes again",
            {"state": "cleared", "held_s": f"{held_s:g}", "dropped": str(self.dropped)},
        )  # fmt: skip
        self.failing_since = None
        self.dropped = 0
        return event
