"""Alarms as states, not event lines (ISA-18.2 / IEC 62682 alarm management): the pure core.

An alarm is one per (gateway, device, type) while it is *open*. Inputs are occurrences
(a condition raised or returned to normal, from an agent's event or from the orchestrator
itself) and operators' actions; outputs are the alarm's next state. No I/O, no clock: the
instant is part of every input.

Life of an alarm:

- a raise opens it (unacknowledged, active), or, on an open one, counts one more
  occurrence (``count``, ``last_at``) and makes it unacknowledged again if it had cleared
  (a condition that comes back must be seen again);
- a return to normal clears it (``active`` false); a clear older than the last raise is
  stale (events arrive late after an outage) and changes nothing;
- an operator acknowledges it (with a comment), shelves it until a time (no reminder, not
  listed by default, still counted), assigns it to a crew, and closes it with a repair note
  (``closed_at - first_at`` is the time to repair);
- an alarm that is both cleared and acknowledged and assigned to nobody closes by itself
  (back to normal, nothing left to do); one assigned to a crew waits for the repair note;
- an active alarm unacknowledged for longer than a delay is due a reminder, again every
  delay, unless shelved.

Flood control: a cabinet that loses mains, or a gateway gone silent, darkens every lamp it
feeds; those lamps' alarms are grouped under that root cause (``root``) instead of a hundred
lines (:func:`is_root_type`, :func:`groups_under`).

The view an operator gets (:func:`view_state`): ``unacknowledged``, ``acknowledged``,
``cleared`` (returned to normal, acknowledged or not: ``acknowledged`` says), ``shelved`` or
``closed``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from foundation.errors import FieldError

MAX_SHELVE = timedelta(days=30)
MAX_TEXT = 1024


class AlarmError(FieldError):
    """An action on an alarm was refused (the field named, nothing changed)."""


class Severity(enum.IntEnum):
    """How urgent: the control room works from the top."""

    WARNING = 1
    MINOR = 2
    MAJOR = 3
    CRITICAL = 4


class ViewState(enum.StrEnum):
    UNACKNOWLEDGED = "unacknowledged"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"
    SHELVED = "shelved"
    CLOSED = "closed"


# Alarm types raised by the orchestrator itself.
GATEWAY_SILENT = "gateway.silent"
# A citizen reported a lamp out or a damaged bollard the system did not know about
# (orchestrator.public): a crew goes and looks, and closes it with a repair note.
REPORTED = "reported"
# Types whose alarm, while open, groups the alarms of the lamps of the same gateway.
ROOT_TYPES = frozenset({"mains_lost", GATEWAY_SILENT})
# Lamp alarms a lost feed or link explains (the lamps go dark, or cannot be heard).
GROUPED_TYPES = frozenset(
    {"lamp_failure", "dimming_failure", "driver_failure", "equipment.failed", REPORTED}
)

SEVERITY: Mapping[str, Severity] = {
    "signal.conflict_fault": Severity.CRITICAL,
    "signal.communication_lost": Severity.CRITICAL,
    "bollard.fault": Severity.CRITICAL,
    "bollard.locked_out": Severity.CRITICAL,
    "mains_lost": Severity.CRITICAL,
    GATEWAY_SILENT: Severity.MAJOR,
    "lamp_failure": Severity.MAJOR,
    "relay_failure": Severity.MAJOR,
    "door_open": Severity.MAJOR,
    "signal.door_opened": Severity.MAJOR,
    "signal.agent_lost": Severity.MAJOR,
    "equipment.failed": Severity.MAJOR,
    "document.refused": Severity.MAJOR,
    "day_burner": Severity.MINOR,
    REPORTED: Severity.MINOR,
    "dimming_failure": Severity.MINOR,
    "driver_failure": Severity.MINOR,
    "over_temperature": Severity.MINOR,
}

# Event type -> (alarm type, raised) for events whose type says which way they go.
_PAIRS: Mapping[str, tuple[str, bool]] = {
    "signal.conflict_fault": ("signal.conflict_fault", True),
    "signal.conflict_cleared": ("signal.conflict_fault", False),
    "signal.communication_lost": ("signal.communication_lost", True),
    "signal.communication_restored": ("signal.communication_lost", False),
    "signal.door_opened": ("signal.door_opened", True),
    "signal.door_closed": ("signal.door_opened", False),
    "signal.agent_lost": ("signal.agent_lost", True),
    "signal.agent_heard": ("signal.agent_lost", False),
    "equipment.failed": ("equipment.failed", True),
    "equipment.recovered": ("equipment.failed", False),
    "document.refused": ("document.refused", True),
    "document.invalid": ("document.refused", True),
    "document.applied": ("document.refused", False),
    # The bollard: a fault or a lockout holds until the reset (key or command).
    "fault": ("bollard.fault", True),
    "locked_out": ("bollard.locked_out", True),
}
# A bollard's reset clears both of its latching alarms.
_RESETS = {"reset": ("bollard.fault", "bollard.locked_out")}
# Lamps and cabinets say raised/cleared in the event's "state" attribute.
_STATEFUL = frozenset(
    {
        "lamp_failure",
        "relay_failure",
        "day_burner",
        "dimming_failure",
        "driver_failure",
        "door_open",
        "mains_lost",
        "over_temperature",
    }
)
ALARM_PRIORITY = 1  # link.proto EVENT_PRIORITY_ALARM


def severity_of(alarm_type: str) -> Severity:
    return SEVERITY.get(alarm_type, Severity.WARNING)


def classify(
    event_type: str, priority: int, attributes: Mapping[str, str]
) -> list[tuple[str, bool]]:
    """What an agent's event means for alarms: ``[(alarm type, raised)]``, empty if nothing.

    Any other event of alarm priority opens an alarm of its own type (warning, closed by an
    operator: nothing tells when it is over).
    """
    if event_type in _STATEFUL:
        state = attributes.get("state", "")
        if state in ("raised", "cleared"):
            return [(event_type, state == "raised")]
        return [(event_type, priority == ALARM_PRIORITY)]
    if event_type in _PAIRS:
        return [_PAIRS[event_type]]
    if event_type in _RESETS:
        return [(t, False) for t in _RESETS[event_type]]
    if priority == ALARM_PRIORITY:
        return [(event_type, True)]
    return []


def is_root_type(alarm_type: str) -> bool:
    return alarm_type in ROOT_TYPES


def groups_under(alarm_type: str) -> bool:
    """Whether an alarm of this type goes under an open root cause of its gateway."""
    return alarm_type in GROUPED_TYPES


@dataclass(frozen=True)
class Occurrence:
    """A condition raised, or returned to normal, at an instant."""

    gateway_id: str
    device_id: str
    type: str
    raised: bool
    at: datetime
    message: str = ""


@dataclass(frozen=True)
class Alarm:
    """One alarm; ``closed_at`` set: history (another raise opens a new one)."""

    gateway_id: str
    device_id: str
    type: str
    severity: Severity
    active: bool
    acknowledged: bool
    count: int
    first_at: datetime
    last_at: datetime
    message: str = ""
    cleared_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str = ""
    comment: str = ""
    shelved_until: datetime | None = None
    assigned_to: str = ""
    closed_at: datetime | None = None
    closed_by: str = ""
    repair_note: str = ""
    reminded_at: datetime | None = None
    reminders: int = 0
    root_id: int | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.gateway_id, self.device_id, self.type)

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def repair_time(self) -> timedelta | None:
        """Time to repair: from the first occurrence to the close."""
        return None if self.closed_at is None else self.closed_at - self.first_at


def on_occurrence(alarm: Alarm | None, occ: Occurrence) -> Alarm | None:
    """The alarm after ``occ``; ``alarm`` is the open one of its key, or None.

    Returns None when nothing is to be stored (a return to normal with no open alarm).
    """
    if alarm is not None and not alarm.open:
        alarm = None
    if not occ.raised:
        if alarm is None or not alarm.active or occ.at < alarm.last_at:
            return alarm  # nothing open, already clear, or a stale clear
        return _settle(replace(alarm, active=False, cleared_at=occ.at))
    if alarm is None:
        return Alarm(
            gateway_id=occ.gateway_id,
            device_id=occ.device_id,
            type=occ.type,
            severity=severity_of(occ.type),
            active=True,
            acknowledged=False,
            count=1,
            first_at=occ.at,
            last_at=occ.at,
            message=occ.message,
        )
    if occ.at < alarm.last_at:
        # A late raise (sent from an outbox after a newer one): counted, nothing else.
        return replace(alarm, count=alarm.count + 1, first_at=min(alarm.first_at, occ.at))
    came_back = not alarm.active
    return replace(
        alarm,
        active=True,
        count=alarm.count + 1,
        last_at=occ.at,
        message=occ.message or alarm.message,
        cleared_at=None,
        acknowledged=alarm.acknowledged and not came_back,
    )


def _settle(alarm: Alarm) -> Alarm:
    """Close an alarm with nothing left to do: cleared, acknowledged, nobody assigned."""
    if alarm.open and not alarm.active and alarm.acknowledged and not alarm.assigned_to:
        closed_at = max(t for t in (alarm.cleared_at, alarm.acknowledged_at) if t is not None)
        return replace(alarm, closed_at=closed_at, closed_by="return to normal")
    return alarm


def _text(field: str, value: str, *, required: bool = False) -> str:
    if required and not value.strip():
        raise AlarmError(field, "must not be empty")
    if len(value) > MAX_TEXT:
        raise AlarmError(field, f"at most {MAX_TEXT} characters")
    if not value.isprintable():
        raise AlarmError(field, "must be printable text (no control characters)")
    return value


def _open(alarm: Alarm) -> None:
    if not alarm.open:
        raise AlarmError("alarm_id", "the alarm is closed")


def acknowledge(alarm: Alarm, *, by: str, comment: str, now: datetime) -> Alarm:
    """The operator has seen it; the comment says what is done about it."""
    _open(alarm)
    comment = _text("comment", comment)
    if alarm.acknowledged:
        raise AlarmError("alarm_id", "already acknowledged")
    return _settle(
        replace(alarm, acknowledged=True, acknowledged_at=now, acknowledged_by=by, comment=comment)
    )


def shelve(alarm: Alarm, *, until: datetime, now: datetime) -> Alarm:
    """Out of the list and of the reminders until ``until`` (at most 30 days ahead)."""
    _open(alarm)
    if until <= now:
        raise AlarmError("until", "must be in the future")
    if until - now > MAX_SHELVE:
        raise AlarmError("until", "at most 30 days ahead")
    return replace(alarm, shelved_until=until)


def unshelve(alarm: Alarm) -> Alarm:
    _open(alarm)
    return replace(alarm, shelved_until=None)


def assign(alarm: Alarm, *, crew: str) -> Alarm:
    """Send a crew; the alarm then waits for their repair note to close."""
    _open(alarm)
    return replace(alarm, assigned_to=_text("crew", crew, required=True)[:128])


def close(alarm: Alarm, *, by: str, note: str, now: datetime) -> Alarm:
    """Closed with what was repaired; acknowledges it too if nobody had."""
    _open(alarm)
    note = _text("note", note, required=True)
    if now < alarm.first_at:
        raise AlarmError("now", "before the alarm's first occurrence")
    acked = (
        alarm
        if alarm.acknowledged
        else replace(alarm, acknowledged=True, acknowledged_at=now, acknowledged_by=by)
    )
    return replace(acked, closed_at=now, closed_by=by, repair_note=note)


def view_state(alarm: Alarm, now: datetime) -> ViewState:
    return state_of(
        closed=not alarm.open,
        active=alarm.active,
        acknowledged=alarm.acknowledged,
        shelved_until=alarm.shelved_until,
        now=now,
    )


def state_of(
    *, closed: bool, active: bool, acknowledged: bool, shelved_until: datetime | None, now: datetime
) -> ViewState:
    """The view state from the fields it depends on (alarms counted in bulk, without
    reading each whole alarm)."""
    if closed:
        return ViewState.CLOSED
    if shelved_until is not None and now < shelved_until:
        return ViewState.SHELVED
    if not active:
        return ViewState.CLEARED
    return ViewState.ACKNOWLEDGED if acknowledged else ViewState.UNACKNOWLEDGED


def reminder_due(alarm: Alarm, now: datetime, delay: timedelta) -> bool:
    """Whether an unacknowledged alarm has waited ``delay`` since it was raised (or since
    its last reminder) and is not shelved."""
    if view_state(alarm, now) is not ViewState.UNACKNOWLEDGED:
        return False
    since = alarm.reminded_at or alarm.last_at
    return now - since >= delay


def remind(alarm: Alarm, now: datetime) -> Alarm:
    return replace(alarm, reminded_at=now, reminders=alarm.reminders + 1)
