"""Checks on what gateways send: every refusal names the field, good messages pass."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.ingest.checks import (
    TimeWindow,
    WireError,
    check_command_result,
    check_document_ack,
    check_event_batch,
    check_hello,
    check_state_report,
    document_message,
    sequence_ranges,
    stored_event,
)
from orchestrator.store.database import DocumentRecord
from protos.ondijon.v1 import link_pb2, schedule_pb2, state_pb2

DIGEST = b"\x5a" * 32
SCHEDULE = link_pb2.DOCUMENT_KIND_SCHEDULE
ALARM = link_pb2.EVENT_PRIORITY_ALARM
UNSPECIFIED = link_pb2.DOCUMENT_KIND_UNSPECIFIED
UNKNOWN_KIND = link_pb2.DocumentKind.ValueType(99)
NOW = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
AHEAD, BEHIND = timedelta(days=7), timedelta(days=3653)
WINDOW = TimeWindow.around(NOW, behind=BEHIND, ahead=AHEAD)


def stamp(when: datetime | None = None, *, seconds: int = 0, nanos: int = 0) -> Timestamp:
    if when is not None:
        ts = Timestamp()
        ts.FromDatetime(when)
        return ts
    return Timestamp(seconds=seconds, nanos=nanos)


def hello(*held: link_pb2.HeldDocument, firmware: str = "1.2.0") -> Callable[[], None]:
    message = link_pb2.Hello(firmware_version=firmware, held=list(held), last_sequence=7)
    return lambda: check_hello(message)


def state(*devices: state_pb2.DeviceState, limit: int = 10) -> Callable[[], None]:
    message = link_pb2.StateReport(batch_id=1, devices=list(devices))
    return lambda: check_state_report(message, limit, WINDOW)


def lamp(
    device_id: str = "lamp-001", kind: int = schedule_pb2.DEVICE_KIND_LAMP
) -> state_pb2.DeviceState:
    return state_pb2.DeviceState(device_id=device_id, kind=kind)  # type: ignore[arg-type]


def event(**fields: object) -> link_pb2.Event:
    values: dict[str, object] = {
        "sequence": 1,
        "priority": ALARM,
        "type": "lamp.failure",
        "at": stamp(NOW),
    }
    values.update(fields)
    return link_pb2.Event(**values)  # type: ignore[arg-type]


def observed(device: state_pb2.DeviceState, at: Timestamp) -> state_pb2.DeviceState:
    device.observed_at.CopyFrom(at)
    return device


def events(*batch: link_pb2.Event, limit: int = 10) -> Callable[[], None]:
    message = link_pb2.EventBatch(events=list(batch))
    return lambda: check_event_batch(message, limit, WINDOW)


def ack(**fields: object) -> Callable[[], None]:
    values: dict[str, object] = {"kind": SCHEDULE, "version": 3, "digest": DIGEST, "accepted": True}
    values.update(fields)
    message = link_pb2.DocumentAck(**values)  # type: ignore[arg-type]
    return lambda: check_document_ack(message)


def result(**fields: object) -> Callable[[], None]:
    values: dict[str, object] = {"command_id": "c-1", "status": link_pb2.COMMAND_STATUS_DONE}
    values.update(fields)
    message = link_pb2.CommandResult(**values)  # type: ignore[arg-type]
    return lambda: check_command_result(message)


def test_good_messages_pass() -> None:
    hello(link_pb2.HeldDocument(kind=SCHEDULE, version=2, digest=DIGEST))()
    hello()()
    state(lamp("lamp-001"), lamp("bollard-1", schedule_pb2.DEVICE_KIND_BOLLARD))()
    state()()
    events(event(sequence=1), event(sequence=2, device_id="", attributes={"a": "b"}))()
    ack()()
    ack(accepted=False, error="program 'night' has no points")()
    for status in (
        link_pb2.COMMAND_STATUS_DONE,
        link_pb2.COMMAND_STATUS_REFUSED,
        link_pb2.COMMAND_STATUS_EXPIRED,
    ):
        result(status=status)()


def test_instants_at_the_edges_of_the_window_pass() -> None:
    events(
        event(at=stamp(NOW + AHEAD)),
        event(sequence=2, at=stamp(NOW - BEHIND + timedelta(seconds=1))),
        event(sequence=3, at=stamp(seconds=int(NOW.timestamp()), nanos=999_999_999)),
    )()
    state(observed(lamp("a"), stamp(NOW)), lamp("b"))()  # observed_at is optional


@given(seconds=st.integers(-(2**63), 2**63 - 1), nanos=st.integers(-(2**31), 2**31 - 1))
def test_an_instant_passes_only_inside_the_window(seconds: int, nanos: int) -> None:
    at = Timestamp(seconds=seconds, nanos=nanos)
    # The reference: whole seconds against the window's ends computed with datetimes.
    earliest, latest = NOW - BEHIND, NOW + AHEAD
    inside = 0 <= nanos < 10**9 and earliest.timestamp() <= seconds <= latest.timestamp()
    try:
        events(event(at=at))()
    except WireError as exc:
        assert not inside, exc
        assert exc.field in {"events.events[0].at", "events.events[0].at.nanos"}
    else:
        assert inside
        when = at.ToDatetime(tzinfo=UTC)  # and the store can hold it
        assert earliest - timedelta(seconds=1) <= when <= latest + timedelta(seconds=1)


@pytest.mark.parametrize(
    ("check", "field"),
    [
        (hello(firmware="1" * 65), "hello.firmware_version"),
        (hello(link_pb2.HeldDocument(kind=UNSPECIFIED, digest=DIGEST)), "hello.held[0].kind"),
        (hello(link_pb2.HeldDocument(kind=UNKNOWN_KIND, digest=DIGEST)), "hello.held[0].kind"),
        (
            hello(
                link_pb2.HeldDocument(kind=SCHEDULE, digest=DIGEST),
                link_pb2.HeldDocument(kind=SCHEDULE, digest=DIGEST),
            ),
            "hello.held[1].kind",
        ),
        (hello(link_pb2.HeldDocument(kind=SCHEDULE, digest=b"short")), "hello.held[0].digest"),
        (state(*[lamp(f"l{i}") for i in range(11)]), "state.devices"),
        (state(lamp("ok"), lamp("")), "state.devices[1].device_id"),
        (state(lamp("x" * 129)), "state.devices[0].device_id"),
        (state(lamp("ok"), lamp("lamp-1\nforged log line")), "state.devices[1].device_id"),
        (state(lamp("ok"), lamp("ok2", kind=0)), "state.devices[1].kind"),
        (state(lamp("ok", kind=42)), "state.devices[0].kind"),
        (events(*[event(sequence=i) for i in range(1, 12)]), "events.events"),
        (events(event(), event(sequence=0)), "events.events[1].sequence"),
        # A copy is numbered after the event it copies.
        (events(event(sequence=5, first_sequence=5)), "events.events[0].first_sequence"),
        (events(event(sequence=5, first_sequence=9)), "events.events[0].first_sequence"),
        (events(event(priority=0)), "events.events[0].priority"),
        (events(event(priority=9)), "events.events[0].priority"),
        (events(event(device_id="d" * 129)), "events.events[0].device_id"),
        (events(event(device_id="lamp\x1b[2J")), "events.events[0].device_id"),
        (events(event(type="")), "events.events[0].type"),
        (events(event(type="lamp\nfailure")), "events.events[0].type"),
        (events(event(message="m" * 1025)), "events.events[0].message"),
        (events(event(at=None)), "events.events[0].at"),
        (
            events(event(), event(at=stamp(seconds=1, nanos=2_000_000_000))),
            "events.events[1].at.nanos",
        ),
        (
            events(event(at=stamp(seconds=int(NOW.timestamp()), nanos=-1))),
            "events.events[0].at.nanos",
        ),
        (events(event(at=stamp(seconds=253_402_300_800))), "events.events[0].at"),  # year 10000
        (events(event(at=stamp(seconds=-62_135_596_801))), "events.events[0].at"),  # year 0
        (events(event(at=stamp(NOW + AHEAD + timedelta(seconds=1)))), "events.events[0].at"),
        (events(event(at=stamp(NOW - BEHIND - timedelta(seconds=1)))), "events.events[0].at"),
        (events(event(at=stamp(seconds=0))), "events.events[0].at"),  # a clock at 1970
        (
            state(lamp("ok"), observed(lamp("ok2"), stamp(seconds=253_433_923_200))),  # 10001
            "state.devices[1].observed_at",
        ),
        (
            state(observed(lamp("ok"), stamp(seconds=int(NOW.timestamp()), nanos=10**9))),
            "state.devices[0].observed_at.nanos",
        ),
        (
            events(event(attributes={str(i): "" for i in range(33)})),
            "events.events[0].attributes",
        ),
        (ack(kind=0), "document_ack.kind"),
        (ack(kind=17), "document_ack.kind"),
        (ack(digest=b""), "document_ack.digest"),
        (ack(error="e" * 1025), "document_ack.error"),
        (result(command_id=""), "command_result.command_id"),
        (result(status=link_pb2.COMMAND_STATUS_PENDING), "command_result.status"),
        (result(status=link_pb2.COMMAND_STATUS_DELIVERED), "command_result.status"),
        (result(detail="d" * 1025), "command_result.detail"),
    ],
)
def test_every_refusal_names_the_field(check: Callable[[], None], field: str) -> None:
    with pytest.raises(WireError) as caught:
        check()
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ") and caught.value.reason


def test_acknowledged_sequences_are_compressed_into_ranges() -> None:
    ranges = sequence_ranges([7, 3, 4, 5, 5, 9, 10, 1])
    assert [(r.first, r.last) for r in ranges] == [(1, 1), (3, 5), (7, 7), (9, 10)]
    assert sequence_ranges([]) == []


def test_store_records_become_messages_with_their_instants() -> None:
    issued = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    document = DocumentRecord("dj-001", SCHEDULE, 4, DIGEST, b"payload", issued, "ana")
    message = document_message(document)
    assert (message.kind, message.version, message.digest, message.payload) == (
        SCHEDULE,
        4,
        DIGEST,
        b"payload",
    )
    assert message.issued_at.ToDatetime(tzinfo=UTC) == issued
    stored = stored_event("dj-001", event(sequence=5), issued)
    assert (stored.gateway_id, stored.event.sequence) == ("dj-001", 5)
    assert stored.received_at.ToDatetime(tzinfo=UTC) == issued


def _reference_state_error(devices: list[state_pb2.DeviceState]) -> str | None:
    """The field the first wrong device's error names, device by device (the reference)."""
    for i, d in enumerate(devices):
        if not d.device_id or len(d.device_id) > 128 or not d.device_id.isprintable():
            return f"state.devices[{i}].device_id"
        if d.kind == 0 or d.kind not in schedule_pb2.DeviceKind.values():
            return f"state.devices[{i}].kind"
        if d.HasField("observed_at"):
            at = d.observed_at
            if not 0 <= at.nanos < 10**9:
                return f"state.devices[{i}].observed_at.nanos"
            if not (NOW - BEHIND).timestamp() <= at.seconds <= (NOW + AHEAD).timestamp():
                return f"state.devices[{i}].observed_at"
    return None


def test_state_reports_are_refused_by_the_first_wrong_field_whatever_it_is() -> None:
    """Many random reports of up to 120 devices, each with at most a few faults anywhere:
    refused exactly when the reference finds a fault, naming the same field; else the ids
    of the devices come back."""
    rng = random.Random(7)
    kinds = list(schedule_pb2.DeviceKind.values())
    faults = ["empty", "long", "control", "kind", "nanos", "early", "late", "none"]
    for _ in range(400):
        devices = []
        for i in range(rng.randint(0, 120)):
            d = state_pb2.DeviceState(device_id=f"lamp-{i:03d}", kind=rng.choice(kinds[1:]))
            if rng.random() < 0.7:
                d.observed_at.CopyFrom(stamp(NOW - timedelta(seconds=rng.randint(0, 10**6))))
            devices.append(d)
        for _ in range(rng.choice([0, 0, 1, 2])):
            if not devices:
                break
            d = rng.choice(devices)
            fault = rng.choice(faults)
            if fault == "empty":
                d.device_id = ""
            elif fault == "long":
                d.device_id = "x" * rng.choice([128, 129, 300])
            elif fault == "control":
                d.device_id += rng.choice(["\n", "\x1b[2J", "\u2028", " ok"])
            elif fault == "kind":
                d.kind = rng.choice([0, 99])  # type: ignore[assignment]
            elif fault == "nanos":
                d.observed_at.nanos = rng.choice([-1, 10**9, 999_999_999])
            elif fault == "early":
                d.observed_at.seconds = int((NOW - BEHIND).timestamp()) - rng.randint(0, 2)
            elif fault == "late":
                d.observed_at.seconds = int((NOW + AHEAD).timestamp()) + rng.randint(-1, 2)
        expected = _reference_state_error(devices)
        report = link_pb2.StateReport(batch_id=1, devices=devices)
        try:
            ids = check_state_report(report, 200, WINDOW)
        except WireError as exc:
            assert exc.field == expected, (exc, expected)
        else:
            assert expected is None
            assert ids == {d.device_id for d in devices}
