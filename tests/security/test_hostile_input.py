"""Random and mutated messages for every RPC, over real mutual TLS (hypothesis).

Whatever arrives, the orchestrator answers with a proper status (never UNKNOWN or
INTERNAL, never a crash: the next call is served), logs no error, and a refused message
changes nothing in the store. Messages are generated from the wire contract's own
descriptors (random values, with a bias towards ids that exist and values at the edges),
then sometimes mutated byte by byte.
"""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from edge.config import AgentConfig
from ondijon.cli import main
from ondijon.client import AdminClient
from protos.ondijon.v1 import control_pb2, enrollment_pb2, link_pb2, schedule_pb2, state_pb2
from tests.conftest import City
from tests.security.conftest import (
    GENEROUS,
    channel,
    enrolled,
    gateway_channel,
    relax,
    snapshot,
    stream,
)
from tests.security.test_roles import schedule as schedule_request

pytestmark = pytest.mark.integration

F = descriptor.FieldDescriptor
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Statuses that say "I understood and refused"; UNKNOWN and INTERNAL mean a bug.
PROPER = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
}

TEXT = st.one_of(
    st.sampled_from(
        [
            "",
            "dj-001",
            "dj-002",
            "Dijon",
            "Talant",
            "*",
            "Europe/Paris",
            "x" * 200,
            "../etc",
            "a\nb",
            "=1+2",
            "\x00",
            "lamp-001",
            "gateway.",
            "ok",
            "refused",
        ]
    ),
    st.text(max_size=12),
)
BYTES = st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"\x00" * 32, b"\xff" * 33]))
# Timestamps within what datetime can hold; the edges of protobuf's range are checked by
# the validation of each field.
SECONDS = st.integers(-62135596800, 253402300799)


def _scalar(field: Any) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == F.TYPE_STRING:
        return TEXT
    if kind == F.TYPE_BYTES:
        return BYTES
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind == F.TYPE_ENUM:
        return st.integers(-2, 12)
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(width=32 if kind == F.TYPE_FLOAT else 64)
    if kind in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return st.one_of(st.sampled_from([0, 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))
    if kind in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return st.one_of(st.sampled_from([0, 1, 2**32 - 1]), st.integers(0, 2**32 - 1))
    if kind in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return st.integers(-(2**63), 2**63 - 1)
    return st.integers(-(2**31), 2**31 - 1)


@st.composite
def message(draw: st.DrawFn, cls: type[Message], depth: int = 0) -> Message:
    """A random message of ``cls``: any subset of its fields, any values."""
    msg = cls()
    if cls.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        msg.seconds = draw(SECONDS)  # type: ignore[attr-defined]
        msg.nanos = draw(st.integers(0, 999_999_999))  # type: ignore[attr-defined]
        return msg
    for field in cls.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        repeated = field.is_repeated
        if field.type == F.TYPE_MESSAGE:
            if depth >= 3:
                continue
            sub = field.message_type._concrete_class
            if field.message_type.GetOptions().map_entry:
                key, value = field.message_type.fields
                entries = draw(st.dictionaries(_scalar(key), _scalar(value), max_size=3))
                getattr(msg, field.name).update(entries)
                continue
            values = draw(st.lists(message(sub, depth + 1), max_size=3 if repeated else 1))
            target = getattr(msg, field.name)
            for value in values:
                if repeated:
                    target.add().CopyFrom(value)
                else:
                    target.CopyFrom(value)
        elif repeated:
            getattr(msg, field.name).extend(draw(st.lists(_scalar(field), max_size=3)))
        else:
            setattr(msg, field.name, draw(_scalar(field)))
    return msg


@st.composite
def wire_bytes(draw: st.DrawFn, cls: type[Message]) -> bytes:
    """The serialized bytes of a random ``cls``, sometimes mutated (flipped, cut, padded)."""
    raw = bytearray(draw(message(cls)).SerializeToString())
    if raw and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 4))):
            where = draw(st.integers(0, len(raw) - 1))
            raw[where] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            raw = raw[: draw(st.integers(0, len(raw)))]
        if draw(st.booleans()):
            raw += draw(st.binary(max_size=8))
    return bytes(raw)


CONTROL = [
    (m.name, m.input_type._concrete_class)
    for m in control_pb2.DESCRIPTOR.services_by_name["ControlCentre"].methods
    if not m.server_streaming
]


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[0].getMessage()


async def unary(chan: grpc.aio.Channel, method: str, raw: bytes) -> grpc.StatusCode:
    try:
        await chan.unary_unary(method)(raw, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@dataclass
class Fuzzed:
    """A city with a gateway enrolled (dj-002), one registered (dj-001, with its token),
    one in another commune, and limits out of the way."""

    city: City
    config: AgentConfig
    token: str


@pytest.fixture
async def fuzzed(city: City, caplog: pytest.LogCaptureFixture) -> Fuzzed:
    relax(city.running.app, **GENEROUS)
    token = await city.register("dj-001")
    config = await enrolled(city, "dj-002")
    await city.register("ta-001", "Talant")
    caplog.set_level(logging.WARNING)
    return Fuzzed(city, config, token)


@FUZZ
@given(data=st.data())
async def test_the_admin_api_answers_anything_properly(
    fuzzed: Fuzzed, caplog: pytest.LogCaptureFixture, data: st.DataObject
) -> None:
    city, app = fuzzed.city, fuzzed.city.running.app
    name, cls = data.draw(st.sampled_from(CONTROL))
    raw = data.draw(wire_bytes(cls))
    before = snapshot(app)
    async with city.admin.channel() as chan:
        code = await unary(chan, f"/ondijon.v1.ControlCentre/{name}", raw)
        assert code in PROPER, (name, code)
        if code is not grpc.StatusCode.OK:
            assert snapshot(app) == before, name
        no_errors_logged(caplog)
        # Still serving.
        assert (
            await unary(chan, "/ondijon.v1.ControlCentre/ListGateways", b"") is grpc.StatusCode.OK
        )


@FUZZ
@given(
    which=st.sampled_from(["Enroll", "GetCrl", "Renew"]),
    raw=st.one_of(
        wire_bytes(enrollment_pb2.EnrollRequest), wire_bytes(enrollment_pb2.RenewRequest)
    ),
    near=st.booleans(),
)
async def test_enrollment_answers_anything_properly(
    fuzzed: Fuzzed, caplog: pytest.LogCaptureFixture, which: str, raw: bytes, near: bool
) -> None:
    city, app = fuzzed.city, fuzzed.city.running.app
    if near and which == "Enroll":
        # A request with the real gateway, serial and token, then random fields merged in.
        raw = (
            enrollment_pb2.EnrollRequest(
                gateway_id="dj-001", serial="SN-dj-001", token=fuzzed.token
            ).SerializeToString()
            + raw
        )
    before = snapshot(app)
    if which == "Renew":
        async with gateway_channel(city, fuzzed.config) as chan:
            code = await unary(chan, "/ondijon.v1.Enrollment/Renew", raw)
    else:
        async with channel(city.enroll_address, city.ca.root_pem) as chan:
            code = await unary(chan, f"/ondijon.v1.Enrollment/{which}", raw)
    assert code in PROPER, (which, code)
    if code is not grpc.StatusCode.OK or which == "GetCrl":
        assert snapshot(app) == before
    no_errors_logged(caplog)


BODIES = [f.name for f in link_pb2.ConnectRequest.DESCRIPTOR.oneofs_by_name["body"].fields]
INT64_MAX = 2**63 - 1


# Sent after the message under test: its acknowledgement means that message was handled.
PROBE_ID = 2**62 + 7
PROBE = link_pb2.ConnectRequest(state=link_pb2.StateReport(batch_id=PROBE_ID))


@FUZZ
@given(body=st.sampled_from(BODIES), data=st.data(), mutate=st.booleans())
async def test_the_link_answers_anything_properly(
    fuzzed: Fuzzed, caplog: pytest.LogCaptureFixture, body: str, data: st.DataObject, mutate: bool
) -> None:
    city, app = fuzzed.city, fuzzed.city.running.app
    field = link_pb2.ConnectRequest.DESCRIPTOR.fields_by_name[body]
    request = link_pb2.ConnectRequest()
    getattr(request, body).CopyFrom(data.draw(message(field.message_type._concrete_class)))
    raw = data.draw(wire_bytes(link_pb2.ConnectRequest)) if mutate else request.SerializeToString()
    note(f"raw message: {raw.hex()}")
    async with gateway_channel(city, fuzzed.config) as chan, stream(chan) as s:
        await s.hello()
        before = snapshot(app)
        s.send_raw(raw)
        s.send(PROBE)  # answered only once the message before it was handled
        try:
            while (await s.recv()).state_ack.batch_id != PROBE_ID:
                pass
            accepted = True
        except (grpc.aio.AioRpcError, EOFError):
            accepted = False
        if not accepted:
            code = await s.call.code()
            assert code is grpc.StatusCode.INVALID_ARGUMENT, (body, code, await s.call.details())
            assert snapshot(app) == before, body
    no_errors_logged(caplog)


async def test_numbers_the_store_cannot_hold_are_refused_by_name(city: City) -> None:
    config = await enrolled(city, "dj-001")
    event = link_pb2.Event(sequence=2**63, priority=link_pb2.EVENT_PRIORITY_EVENT, type="x")
    async with gateway_channel(city, config) as chan, stream(chan) as s:
        await s.hello()
        s.send(link_pb2.ConnectRequest(events=link_pb2.EventBatch(events=[event])))
        assert await s.closing_status() is grpc.StatusCode.INVALID_ARGUMENT


async def test_the_admin_api_refuses_numbers_beyond_the_store(city: City) -> None:
    async with city.admin.channel() as chan:
        for name, request in (
            ("ListEvents", control_pb2.ListEventsRequest(after_sequence=2**64 - 1)),
            ("ListAudit", control_pb2.ListAuditRequest(after_id=2**64 - 1)),
        ):
            code = await unary(
                chan, f"/ondijon.v1.ControlCentre/{name}", request.SerializeToString()
            )
            assert code is grpc.StatusCode.INVALID_ARGUMENT, name


def timestamped_event(sequence: int, **fields: Any) -> link_pb2.ConnectRequest:
    event = link_pb2.Event(sequence=sequence, priority=link_pb2.EVENT_PRIORITY_EVENT, type="x")
    for name, value in fields.items():
        setattr(event.at, name, value)
    return link_pb2.ConnectRequest(events=link_pb2.EventBatch(events=[event]))


def devices_report(seconds: int) -> link_pb2.ConnectRequest:
    device = state_pb2.DeviceState(device_id="lamp-001", kind=schedule_pb2.DEVICE_KIND_LAMP)
    device.observed_at.seconds = seconds
    return link_pb2.ConnectRequest(state=link_pb2.StateReport(batch_id=1, devices=[device]))


async def test_instants_out_of_range_are_refused_by_name_and_reach_nothing(
    city: City, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    config = await enrolled(city, "dj-001")
    year_10000, year_10001 = 253_402_300_800, 253_433_923_200
    now = int(time.time())
    cases = [
        (timestamped_event(1, seconds=year_10000), "events.events[0].at: "),
        (timestamped_event(1, seconds=now, nanos=2_000_000_000), "events.events[0].at.nanos: "),
        (timestamped_event(1, seconds=now + 30 * 86400), "events.events[0].at: "),
        (devices_report(year_10001), "state.devices[0].observed_at: "),
    ]
    before = snapshot(city.running.app)
    for request, field in cases:
        async with gateway_channel(city, config) as chan, stream(chan) as s:
            await s.hello()
            s.send(request)
            assert await s.closing_status() is grpc.StatusCode.INVALID_ARGUMENT, field
            details = await s.call.details()
            assert details.startswith(field), details
    no_errors_logged(caplog)
    assert snapshot(city.running.app, skip=("audit_log", "gateways")) == {
        k: v
        for k, v in before.items()
        if k != "gateways"  # last_seen moved, nothing else
    }
    # The tools read what was stored without tripping.
    argv = ["devices", "dj-001", "--profile", str(city.admin.directory)]
    assert await asyncio.to_thread(main, argv) == 0


HOSTILE = "ok\n2026-12-07 09:00:00 CRITICAL forged line\x1b]0;owned\x07\x1b[2J\x9b31m\u202egnp.exe"


def raw_controls(text: str) -> list[str]:
    return [c for c in text if c != "\n" and unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"}]


async def test_gateway_text_never_forges_a_log_line_nor_reaches_a_terminal_raw(
    city: City, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO)
    config = await enrolled(city, "dj-001")
    put = await AdminClient(city.admin).put_desired_state(schedule_request("dj-001"))
    event = link_pb2.Event(
        sequence=1, priority=link_pb2.EVENT_PRIORITY_ALARM, type="lamp.failed", message=HOSTILE
    )
    event.at.FromDatetime(datetime.now(UTC))
    async with gateway_channel(city, config) as chan, stream(chan) as s:
        await s.hello(firmware_version="1.0\x1b[5m\u202e")
        s.send(
            link_pb2.ConnectRequest(
                document_ack=link_pb2.DocumentAck(
                    kind=put.document.kind,
                    version=put.document.version,
                    digest=put.document.digest,
                    accepted=False,
                    error=HOSTILE,
                )
            )
        )
        s.send(link_pb2.ConnectRequest(events=link_pb2.EventBatch(events=[event])))
        while (await s.recv()).WhichOneof("body") != "event_ack":
            pass
        capsys.readouterr()
        profile = ["--profile", str(city.admin.directory)]
        for argv in (["events", "dj-001", *profile], ["gateway", "list", *profile]):
            assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    assert "forged line" in out and "\\x1b]0;owned" in out and "\\u202egnp.exe" in out
    assert raw_controls(out) == []
    # Two headers, one event, one gateway: no line added.
    assert len(out.splitlines()) == 4
    refused = [r.getMessage() for r in caplog.records if "refused document" in r.getMessage()]
    assert refused and "forged line" in refused[0]
    for record in caplog.records:
        message = record.getMessage()
        assert "\n" not in message and raw_controls(message) == [], message
