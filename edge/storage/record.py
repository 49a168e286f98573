"""How an event is recorded in the outbox: the wire ``Event``, serialized once.

An :class:`~edge.events.EquipmentEvent` is checked and serialized as a
``link_pb2.Event`` when it is appended, without its sequence number; the sequence field is
prepended as raw bytes once the transaction knows it (protobuf fields may come in any order),
so each row holds exactly the bytes that are sent, and sending only parses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from edge.events import EquipmentEvent, Priority
from edge.storage.errors import OutboxError
from protos.ondijon.v1 import link_pb2

_WIRE_PRIORITY = {
    Priority.ALARM: link_pb2.EVENT_PRIORITY_ALARM,
    Priority.EVENT: link_pb2.EVENT_PRIORITY_EVENT,
    Priority.METERING: link_pb2.EVENT_PRIORITY_METERING,
}
# Bytes a row costs beyond its body: SQLite cell header and pointer, rowid, at_us column.
ROW_OVERHEAD = 24
SEQUENCE_FIELD_BYTES = 11  # tag plus the largest varint of a uint64
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Record:
    """An event ready to be stored, waiting for its sequence number."""

    priority: Priority
    at_us: int  # microseconds since the epoch, for the gap events' time ranges
    body: bytes  # the serialized Event without its sequence
    pinned: bool = False  # never dropped (gap events: the only record of what was)

    @property
    def estimate(self) -> int:
        """Bytes the stored row takes on disk, roughly."""
        return len(self.body) + SEQUENCE_FIELD_BYTES + ROW_OVERHEAD

    def stored_body(self, sequence: int) -> bytes:
        """The serialized Event with its sequence number."""
        return sequence_field(sequence) + self.body


def sequence_field(sequence: int) -> bytes:
    """``Event.sequence`` encoded on its own: field 1, wire type varint."""
    out = bytearray(b"\x08")
    while sequence > 0x7F:
        out.append((sequence & 0x7F) | 0x80)
        sequence >>= 7
    out.append(sequence)
    return bytes(out)


def batch_entry_bytes(body_bytes: int) -> int:
    """Bytes an event of ``body_bytes`` adds to a serialized ``EventBatch``."""
    return 1 + max(1, (body_bytes.bit_length() + 6) // 7) + body_bytes


def record(event: EquipmentEvent, where: str) -> Record:
    """Check and serialize ``event``.

    Args:
        event: what to record.
        where: its place in the caller's input, for errors (``events[3]``).

    Raises:
        OutboxError: naming the field (``events[3].at``) and why.
    """
    if not isinstance(event, EquipmentEvent):
        raise OutboxError(where, f"expected an EquipmentEvent, got {type(event).__name__}")
    try:
        priority = Priority(event.priority)
    except ValueError:
        raise OutboxError(f"{where}.priority", f"unknown priority {event.priority!r}") from None
    if not isinstance(event.at, datetime) or event.at.tzinfo is None:
        raise OutboxError(f"{where}.at", "must be a timezone-aware datetime")
    if not event.type:
        raise OutboxError(f"{where}.type", "must not be empty")
    for name in ("device_id", "type", "message"):
        if not isinstance(getattr(event, name), str):
            raise OutboxError(f"{where}.{name}", "must be a string")
    try:
        message = link_pb2.Event(
            priority=_WIRE_PRIORITY[priority],
            device_id=event.device_id,
            type=event.type,
            message=event.message,
            attributes=event.attributes,
        )
    except (TypeError, ValueError) as exc:
        raise OutboxError(
            f"{where}.attributes", f"keys and values must be strings ({exc})"
        ) from exc
    at_us = (event.at - EPOCH) // MICROSECOND
    seconds, micros = divmod(at_us, 1_000_000)
    message.at.seconds = seconds
    message.at.nanos = micros * 1000
    return Record(priority, at_us, message.SerializeToString())
