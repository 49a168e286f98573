"""Checks on what gateways send, and conversions between store records and messages.

Every field a gateway sends is checked before anything is stored; a refused message raises
:class:`WireError` naming the field and the reason, and changes nothing.

Instants a gateway reports (an event's ``at``, a device state's ``observed_at``) must be
valid timestamps inside a window around the orchestrator's own clock
(:class:`TimeWindow`: by default at most 7 days ahead and 10 years behind): a gateway
whose clock is wrong is refused by name, visibly, rather than trusted, and nothing out of
the range the store and the tools can hold ever reaches them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from domain import documents
from foundation.errors import FieldError
from orchestrator.config import Limits
from orchestrator.store.database import DocumentRecord
from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2

MAX_ID = 128
MAX_TEXT = 1024
MAX_ATTRIBUTES = 32


class WireError(FieldError):
    """A message from a peer is malformed."""


def _check_id(field: str, value: str) -> None:
    if not value:
        raise WireError(field, "must not be empty")
    if len(value) > MAX_ID:
        raise WireError(field, f"longer than {MAX_ID} characters")
    if not value.isprintable():
        raise WireError(field, "must be printable text")


# The store's integers are signed 64-bit: larger uint64 values are refused by name here
# rather than failing in the database.
MAX_STORED_INT = 2**63 - 1
_DOCUMENT_KINDS = frozenset(kind.number for kind in documents.KINDS)
_PRIORITIES = frozenset(p for p in link_pb2.EventPriority.values() if p)


def _check_stored_int(field: str, value: int) -> None:
    if value > MAX_STORED_INT:
        raise WireError(field, f"at most {MAX_STORED_INT}")


def check_hello(hello: link_pb2.Hello) -> None:
    if len(hello.firmware_version) > 64:
        raise WireError("hello.firmware_version", "longer than 64 characters")
    _check_stored_int("hello.last_sequence", hello.last_sequence)
    _check_stored_int("hello.held_after", hello.held_after)
    kinds = set()
    for i, held in enumerate(hello.held):
        if held.kind not in _DOCUMENT_KINDS:
            raise WireError(f"hello.held[{i}].kind", "unknown document kind")
        _check_stored_int(f"hello.held[{i}].version", held.version)
        if held.kind in kinds:
            raise WireError(f"hello.held[{i}].kind", "listed twice")
        kinds.add(held.kind)
        if len(held.digest) != 32:
            raise WireError(f"hello.held[{i}].digest", "must be a 32-byte SHA-256")


_DEVICE_KINDS = frozenset(k for k in schedule_pb2.DeviceKind.values() if k)


@dataclass(frozen=True)
class TimeWindow:
    """The instants a gateway may report, in seconds since the epoch (inclusive)."""

    earliest_s: int
    latest_s: int
    behind: timedelta
    ahead: timedelta

    @classmethod
    def around(cls, now: datetime, *, behind: timedelta, ahead: timedelta) -> TimeWindow:
        """From ``behind`` before ``now`` to ``ahead`` after it (``now``: the orchestrator's
        clock), never beyond what a datetime holds."""
        floor = datetime(1, 1, 2, tzinfo=UTC)
        ceiling = datetime(9999, 12, 30, tzinfo=UTC)
        earliest = max(floor, now - behind) if now - floor > behind else floor
        latest = min(ceiling, now + ahead) if ceiling - now > ahead else ceiling
        return cls(int(earliest.timestamp()), int(latest.timestamp()), behind, ahead)

    def check(self, field: str, instant: Timestamp) -> None:
        """Raise :class:`WireError` naming ``field`` unless ``instant`` is inside."""
        if not 0 <= instant.nanos < 1_000_000_000:
            raise WireError(f"{field}.nanos", "must be 0 to 999,999,999")
        if instant.seconds < self.earliest_s:
            raise WireError(
                field,
                f"{self._iso(instant)} is {self._days(self.behind)} or more "
                "behind the orchestrator's clock (is the gateway's clock right?)",
            )
        if instant.seconds > self.latest_s:
            raise WireError(
                field,
                f"{self._iso(instant)} is more than {self._days(self.ahead)} "
                "ahead of the orchestrator's clock (is the gateway's clock right?)",
            )

    @staticmethod
    def _days(span: timedelta) -> str:
        return f"{span / timedelta(days=1):g} days"

    @staticmethod
    def _iso(instant: Timestamp) -> str:
        try:
            return instant.ToDatetime(tzinfo=UTC).isoformat()
        except (ValueError, OverflowError):
            return f"{instant.seconds} s since 1970"


def time_window(limits: Limits, now: datetime) -> TimeWindow:
    """The instants a gateway may report at ``now`` (the orchestrator's clock)."""
    return TimeWindow.around(
        now,
        behind=timedelta(days=limits.max_clock_behind_days),
        ahead=timedelta(seconds=limits.max_clock_ahead_s),
    )


def check_state_report(
    report: link_pb2.StateReport, max_devices: int, window: TimeWindow
) -> set[str]:
    """Check a state report; returns the ids of the devices it holds."""
    # The hot path of ingestion (1,000 reports/s for a city): one cheap pass, and the
    # detailed per-field message only once something is wrong.
    devices = report.devices
    if len(devices) > max_devices:
        raise WireError("state.devices", f"more than {max_devices} devices in one report")
    ids: set[str] = set()
    for i, device in enumerate(devices):
        device_id = device.device_id
        ids.add(device_id)
        # Ids end up in listings and logs: control characters would forge lines there.
        if (
            not device_id
            or len(device_id) > MAX_ID
            or device.kind not in _DEVICE_KINDS
            or not device_id.isprintable()
        ):
            _check_id(f"state.devices[{i}].device_id", device_id)
            raise WireError(f"state.devices[{i}].kind", "unknown device kind")
        if device.HasField("observed_at"):
            window.check(f"state.devices[{i}].observed_at", device.observed_at)
    return ids


def check_event_batch(batch: link_pb2.EventBatch, max_events: int, window: TimeWindow) -> None:
    if len(batch.events) > max_events:
        raise WireError("events.events", f"more than {max_events} events in one batch")
    for i, event in enumerate(batch.events):
        where = f"events.events[{i}]"
        if event.sequence < 1:
            raise WireError(f"{where}.sequence", "must be at least 1")
        _check_stored_int(f"{where}.sequence", event.sequence)
        if event.first_sequence >= event.sequence:
            # A copy is always numbered after the event it copies.
            raise WireError(f"{where}.first_sequence", "must be below the event's sequence")
        if event.priority not in _PRIORITIES:
            raise WireError(f"{where}.priority", "unknown priority")
        if event.device_id:  # empty: an event of the cabinet itself
            _check_id(f"{where}.device_id", event.device_id)
        _check_id(f"{where}.type", event.type)
        if not event.HasField("at"):
            raise WireError(f"{where}.at", "missing (when did it happen?)")
        window.check(f"{where}.at", event.at)
        if len(event.message) > MAX_TEXT:
            raise WireError(f"{where}.message", f"longer than {MAX_TEXT} characters")
        if len(event.attributes) > MAX_ATTRIBUTES:
            raise WireError(f"{where}.attributes", f"more than {MAX_ATTRIBUTES} attributes")


def check_document_ack(ack: link_pb2.DocumentAck) -> None:
    if ack.kind not in _DOCUMENT_KINDS:
        raise WireError("document_ack.kind", "unknown document kind")
    _check_stored_int("document_ack.version", ack.version)
    if len(ack.digest) != 32:
        raise WireError("document_ack.digest", "must be a 32-byte SHA-256")
    if len(ack.error) > MAX_TEXT:
        raise WireError("document_ack.error", f"longer than {MAX_TEXT} characters")


def check_command_result(result: link_pb2.CommandResult) -> None:
    _check_id("command_result.command_id", result.command_id)
    if result.status not in (
        link_pb2.COMMAND_STATUS_DONE,
        link_pb2.COMMAND_STATUS_REFUSED,
        link_pb2.COMMAND_STATUS_EXPIRED,
    ):
        raise WireError("command_result.status", "must be DONE, REFUSED or EXPIRED")
    if len(result.detail) > MAX_TEXT:
        raise WireError("command_result.detail", f"longer than {MAX_TEXT} characters")


def timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def document_message(doc: DocumentRecord) -> link_pb2.DesiredDocument:
    return link_pb2.DesiredDocument(
        kind=doc.kind,  # type: ignore[arg-type]
        version=doc.version,
        digest=doc.digest,
        payload=doc.payload,
        issued_at=timestamp(doc.issued_at),
    )


def sequence_ranges(sequences: Iterable[int]) -> list[link_pb2.SequenceRange]:
    """Compress sequence numbers into inclusive ranges."""
    ranges: list[link_pb2.SequenceRange] = []
    for seq in sorted(set(sequences)):
        if ranges and ranges[-1].last + 1 == seq:
            ranges[-1].last = seq
        else:
            ranges.append(link_pb2.SequenceRange(first=seq, last=seq))
    return ranges


def stored_event(
    gateway_id: str, event: link_pb2.Event, received: datetime, copy_of: int | None = None
) -> control_pb2.StoredEvent:
    return control_pb2.StoredEvent(
        gateway_id=gateway_id, event=event, received_at=timestamp(received), copy_of=copy_of or 0
    )
