"""The wire contract: generated code matches the .proto sources, and bytes that agents in
the field send today keep parsing the same way.

Old agents stay on street cabinets for years. Here the bytes are written by hand from
field numbers (independently of the generated code), so renumbering or re-typing a field
fails a test even where ``buf breaking`` has no previous commit to compare against.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor

from protos.ondijon.v1 import control_pb2, enrollment_pb2, link_pb2, state_pb2

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date() -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, "-m", "protos.generate", "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- a protobuf encoder written from the spec, not from the generated code ------------------

VARINT, LEN = 0, 2


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return varint(number << 3 | VARINT) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | LEN) + varint(len(data)) + data


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a message, varints and length-delimited only."""
    out: list[tuple[int, int | bytes]] = []
    i = 0

    def read_varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            byte = data[i]
            i += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while i < len(data):
        key = read_varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            out.append((number, read_varint()))
        elif wire_type == LEN:
            length = read_varint()
            out.append((number, data[i : i + length]))
            i += length
        else:
            raise AssertionError(f"field {number}: unexpected wire type {wire_type}")
    return out


DIGEST = bytes(range(32))


def test_a_hello_as_agents_send_it_parses() -> None:
    held = field(1, 1) + field(2, 3) + field(3, DIGEST)  # kind SCHEDULE, version 3
    hello = field(1, "1.0.0") + field(2, held) + field(3, 42) + field(4, 1)
    request = link_pb2.ConnectRequest.FromString(field(1, hello))
    assert request.WhichOneof("body") == "hello"
    assert request.hello.firmware_version == "1.0.0"
    assert request.hello.last_sequence == 42 and request.hello.protocol_revision == 1
    assert [(h.kind, h.version, h.digest) for h in request.hello.held] == [
        (link_pb2.DOCUMENT_KIND_SCHEDULE, 3, DIGEST)
    ]


def test_state_reports_and_events_as_agents_send_them_parse() -> None:
    lamp = field(1, 40) + field(2, 1) + field(7, "driver_fault")
    device = field(1, "lamp-001") + field(2, 1) + field(4, lamp) + field(8, "program:night")
    report = link_pb2.ConnectRequest.FromString(field(2, field(1, 9) + field(2, device)))
    state = report.state.devices[0]
    assert report.state.batch_id == 9
    assert (state.device_id, state.kind, state.source) == ("lamp-001", 1, "program:night")
    assert (state.lamp.level, state.lamp.lit, list(state.lamp.faults)) == (
        40,
        True,
        ["driver_fault"],
    )

    attribute = field(1, "volts") + field(2, "0")
    event = (
        field(1, 17)
        + field(2, field(1, 1_780_000_000))  # google.protobuf.Timestamp seconds
        + field(3, 1)
        + field(4, "lamp-001")
        + field(5, "lamp.failure")
        + field(6, "no current")
        + field(7, attribute)
    )
    batch = link_pb2.ConnectRequest.FromString(field(3, field(1, event))).events.events[0]
    assert (batch.sequence, batch.priority, batch.device_id, batch.type, batch.message) == (
        17,
        link_pb2.EVENT_PRIORITY_ALARM,
        "lamp-001",
        "lamp.failure",
        "no current",
    )
    assert batch.at.seconds == 1_780_000_000 and dict(batch.attributes) == {"volts": "0"}

    ack = field(1, 2) + field(2, 3) + field(3, DIGEST) + field(4, 1) + field(5, "")
    document_ack = link_pb2.ConnectRequest.FromString(field(5, ack)).document_ack
    assert (document_ack.kind, document_ack.version, document_ack.accepted) == (2, 3, True)
    result = link_pb2.ConnectRequest.FromString(field(4, field(1, "c-1") + field(2, 4)))
    assert result.command_result.status == link_pb2.COMMAND_STATUS_REFUSED


def test_what_the_orchestrator_sends_keeps_its_field_numbers() -> None:
    document = link_pb2.ConnectResponse(
        document=link_pb2.DesiredDocument(
            kind=link_pb2.DOCUMENT_KIND_SCHEDULE, version=5, digest=DIGEST, payload=b"\x0a\x00"
        )
    ).SerializeToString()
    [(number, body)] = fields(document)
    assert number == 2 and isinstance(body, bytes)
    assert fields(body) == [(1, 1), (2, 5), (3, DIGEST), (4, b"\x0a\x00")]

    welcome = link_pb2.ConnectResponse(
        welcome=link_pb2.Welcome(gateway_id="dj-001", stored_sequence=12, event_window=1000)
    ).SerializeToString()
    assert fields(welcome) == [(1, field(1, "dj-001") + field(3, 12) + field(4, 1000))]

    ack = link_pb2.ConnectResponse(
        event_ack=link_pb2.EventAck(stored=[link_pb2.SequenceRange(first=1, last=5)])
    ).SerializeToString()
    assert ack == field(3, field(1, field(1, 1) + field(2, 5)))


def test_fields_from_a_newer_peer_are_skipped_not_refused() -> None:
    hello = field(1, "9.0.0") + field(99, b"something new") + field(3, 7) + field(100, 5)
    parsed = link_pb2.Hello.FromString(hello)
    assert (parsed.firmware_version, parsed.last_sequence) == ("9.0.0", 7)


_TYPES = {
    value: name[5:].lower()
    for name, value in vars(FieldDescriptor).items()
    if name.startswith("TYPE_")
}

# Field numbers and types agents in the field rely on ("name=number:type"): fields may be
# added to these messages, never renumbered, re-typed or removed.
PINNED: dict[str, str] = {
    "ConnectRequest": (
        "hello=1:message state=2:message events=3:message command_result=4:message "
        "document_ack=5:message firmware_progress=6:message"
    ),
    "ConnectResponse": (
        "welcome=1:message document=2:message event_ack=3:message state_ack=4:message "
        "command=5:message firmware_offer=6:message"
    ),
    "Hello": (
        "firmware_version=1:string held=2:message last_sequence=3:uint64 protocol_revision=4:uint32"
    ),
    "HeldDocument": "kind=1:enum version=2:uint64 digest=3:bytes",
    "Welcome": (
        "gateway_id=1:string server_time=2:message stored_sequence=3:uint64 event_window=4:uint32"
    ),
    "DesiredDocument": (
        "kind=1:enum version=2:uint64 digest=3:bytes payload=4:bytes issued_at=5:message"
    ),
    "DocumentAck": "kind=1:enum version=2:uint64 digest=3:bytes accepted=4:bool error=5:string",
    "StateReport": "batch_id=1:uint64 devices=2:message",
    "StateAck": "batch_id=1:uint64",
    "Event": (
        "sequence=1:uint64 at=2:message priority=3:enum device_id=4:string type=5:string "
        "message=6:string attributes=7:message"
    ),
    "EventBatch": "events=1:message",
    "SequenceRange": "first=1:uint64 last=2:uint64",
    "EventAck": "stored=1:message",
    "Command": (
        "command_id=1:string expires_at=2:message override=3:message "
        "cancel_override=4:string bollard=5:message bus_priority=6:message"
    ),
    "CommandResult": "command_id=1:string status=2:enum detail=3:string",
    "DeviceState": (
        "device_id=1:string kind=2:enum observed_at=3:message lamp=4:message "
        "bollard=5:message signal=6:message cabinet=7:message source=8:string"
    ),
    "LampState": (
        "level=1:uint32 lit=2:bool active_power_w=3:double energy_wh=4:double "
        "operating_hours=5:double switch_count=6:uint64 faults=7:string"
    ),
    "EnrollRequest": "gateway_id=1:string serial=2:string token=3:string csr_pem=4:bytes",
    "EnrollResponse": "certificate_pem=1:bytes ca_chain_pem=2:bytes not_after=3:message",
    "RenewRequest": "csr_pem=1:bytes",
    "RenewResponse": "certificate_pem=1:bytes ca_chain_pem=2:bytes not_after=3:message",
}

PINNED_ENUMS = {
    link_pb2.DocumentKind: {
        "DOCUMENT_KIND_SCHEDULE": 1,
        "DOCUMENT_KIND_SIGNAL_PLANS": 2,
        "DOCUMENT_KIND_ACCESS_LIST": 3,
    },
    link_pb2.EventPriority: {
        "EVENT_PRIORITY_ALARM": 1,
        "EVENT_PRIORITY_EVENT": 2,
        "EVENT_PRIORITY_METERING": 3,
    },
    link_pb2.CommandStatus: {
        "COMMAND_STATUS_PENDING": 1,
        "COMMAND_STATUS_DELIVERED": 2,
        "COMMAND_STATUS_DONE": 3,
        "COMMAND_STATUS_REFUSED": 4,
        "COMMAND_STATUS_EXPIRED": 5,
    },
}

MODULES = (link_pb2, state_pb2, enrollment_pb2)


@pytest.mark.parametrize("message", sorted(PINNED))
def test_pinned_fields_keep_their_numbers_and_types(message: str) -> None:
    [descriptor] = [
        m.DESCRIPTOR.message_types_by_name[message]
        for m in MODULES
        if message in m.DESCRIPTOR.message_types_by_name
    ]
    current = {f"{f.name}={f.number}:{_TYPES[f.type]}" for f in descriptor.fields}
    missing = set(PINNED[message].split()) - current
    assert not missing, f"{message}: changed or removed: {sorted(missing)}"


def test_pinned_enum_values_keep_their_numbers() -> None:
    for enum, values in PINNED_ENUMS.items():
        assert {name: enum.Value(name) for name in values} == values


# -- the Operations RPCs that once shared messages -------------------------------------------

# AlarmActionRequest, which AcknowledgeAlarm, ShelveAlarm, AssignAlarm and CloseAlarm took
# before each had its own message: alarm_id=1, text=2, until=3 (Timestamp), crew=4.
SHARED_ALARM_ACTION = (
    field(1, 7) + field(2, "LED driver replaced") + field(3, field(1, 1_780_000_000))
)


def test_each_alarm_action_reads_the_bytes_of_the_shared_request() -> None:
    ack = control_pb2.AcknowledgeAlarmRequest.FromString(SHARED_ALARM_ACTION)
    assert (ack.alarm_id, ack.text) == (7, "LED driver replaced")
    close = control_pb2.CloseAlarmRequest.FromString(SHARED_ALARM_ACTION)
    assert (close.alarm_id, close.text) == (7, "LED driver replaced")
    shelve = control_pb2.ShelveAlarmRequest.FromString(SHARED_ALARM_ACTION)
    assert (shelve.alarm_id, shelve.until.seconds) == (7, 1_780_000_000)
    assign = control_pb2.AssignAlarmRequest.FromString(field(1, 7) + field(4, "east-2"))
    assert (assign.alarm_id, assign.crew) == (7, "east-2")
    for answer in (
        control_pb2.AcknowledgeAlarmResponse,
        control_pb2.ShelveAlarmResponse,
        control_pb2.AssignAlarmResponse,
        control_pb2.CloseAlarmResponse,
    ):
        record = field(1, 7) + field(2, "al-001") + field(7, "acknowledged")
        parsed = answer.FromString(field(1, record))
        assert (parsed.alarm.alarm_id, parsed.alarm.gateway_id, parsed.alarm.state) == (
            7,
            "al-001",
            "acknowledged",
        )
        assert parsed.SerializeToString() == field(1, record)


# PlaybookRunResponse, which the four playbook RPCs answered: run_id=1, name=2, version=3,
# status=4, requested_by=5, confirmed_by=6, started_at=7, ends_at=8, ended_at=9, steps=10.
SHARED_RUN = (
    field(1, "r-1")
    + field(2, "storm")
    + field(3, 2)
    + field(4, "running")
    + field(5, "alice")
    + field(6, "bob")
    + field(7, field(1, 1_780_000_000))
    + field(8, field(1, 1_780_003_600))
    + field(10, field(1, "dj-001") + field(3, "lamps 100%") + field(6, "DONE"))
)


@pytest.mark.parametrize(
    "answer",
    [
        control_pb2.StartPlaybookResponse,
        control_pb2.ConfirmPlaybookResponse,
        control_pb2.EndPlaybookResponse,
        control_pb2.GetPlaybookRunResponse,
    ],
)
def test_each_playbook_answer_keeps_the_bytes_of_the_shared_run(answer: type[Any]) -> None:
    run = answer.FromString(SHARED_RUN)
    assert (run.run_id, run.name, run.version, run.status) == ("r-1", "storm", 2, "running")
    assert (run.requested_by, run.confirmed_by) == ("alice", "bob")
    assert (run.started_at.seconds, run.ends_at.seconds) == (1_780_000_000, 1_780_003_600)
    assert [(s.gateway_id, s.action, s.status) for s in run.steps] == [
        ("dj-001", "lamps 100%", "DONE")
    ]
    assert run.SerializeToString() == SHARED_RUN
    for request in (
        control_pb2.ConfirmPlaybookRequest,
        control_pb2.EndPlaybookRequest,
        control_pb2.GetPlaybookRunRequest,
    ):
        assert request.FromString(field(1, "r-1")).run_id == "r-1"
