"""Checks on what gateways send, and conversions between store records and messages.

Every field a gateway sends is checked before anything is stored; a refused message raises
:class:`WireError` naming the field and the reason, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from orchestrator.store.store import DocumentRecord
from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2

MAX_ID = 128
MAX_TEXT = 1024
MAX_ATTRIBUTES = 32


class WireError(Exception):
    """A message from a peer is malformed."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


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
_DOCUMENT_KINDS = frozenset(k for k in link_pb2.DocumentKind.values() if k)
_PRIORITIES = frozenset(p for p in link_pb2.EventPriority.values() if p)


def _check_stored_int(field: str, value: int) -> None:
    if value > MAX_STORED_INT:
        raise WireError(field, f"at most {MAX_STORED_INT}")


def check_hello(hello: link_pb2.Hello) -> None:
    if len(hello.firmware_version) > 64:
        raise WireError("hello.firmware_version", "longer than 64 characters")
    _check_stored_int("hello.last_sequence", hello.last_sequence)
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


def check_state_report(report: link_pb2.StateReport, max_devices: int) -> set[str]:
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
    return ids


def check_event_batch(batch: link_pb2.EventBatch, max_events: int) -> None:
    if len(batch.events) > max_events:
        raise WireError("events.events", f"more than {max_events} events in one batch")
    for i, event in enumerate(batch.events):
        where = f"events.events[{i}]"
        if event.sequence < 1:
            raise WireError(f"{where}.sequence", "must be at least 1")
        _check_stored_int(f"{where}.sequence", event.sequence)
        if event.priority not in _PRIORITIES:
            raise WireError(f"{where}.priority", "unknown priority")
        if event.device_id:  # empty: an event of the cabinet itself
            _check_id(f"{where}.device_id", event.device_id)
        _check_id(f"{where}.type", event.type)
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
    gateway_id: str, event: link_pb2.Event, received: datetime
) -> control_pb2.StoredEvent:
    return control_pb2.StoredEvent(
        gateway_id=gateway_id, event=event, received_at=timestamp(received)
    )
