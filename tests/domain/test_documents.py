"""Desired-state documents read once (domain/documents.py): the one table of kinds, the one
parse every program uses, its refusals naming the field, and the CLI's JSON file."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from google.protobuf import json_format

from domain import documents
from domain.access import LocalAccessList, credential_digest
from domain.documents import KINDS, MAX_DOCUMENT_BYTES, DocumentError
from domain.schedule.model import Schedule
from domain.schedule.wire import schedule_from_proto
from domain.signals.plans import SignalPlans, plans_from_proto
from foundation.errors import FieldError
from ondijon.demo import signal_plans
from protos.ondijon.v1 import access_pb2, link_pb2, schedule_pb2

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "schedule.json"
SCHEDULE, PLANS, ACCESS = (
    link_pb2.DOCUMENT_KIND_SCHEDULE,
    link_pb2.DOCUMENT_KIND_SIGNAL_PLANS,
    link_pb2.DOCUMENT_KIND_ACCESS_LIST,
)


def access_list(rng: random.Random, grants: int) -> access_pb2.AccessList:
    return access_pb2.AccessList(
        grants=[
            access_pb2.AccessGrant(
                credential_sha256=credential_digest(f"badge-{rng.randrange(10**9)}"),
                label=f"delivery {i}",
                bollard_ids=[f"bollard-{rng.randrange(4)}"] if rng.random() < 0.5 else [],
            )
            for i in range(grants)
        ]
    )


def test_the_table_has_every_kind_of_the_contract_once() -> None:
    wire = {value for value in link_pb2.DocumentKind.values() if value}
    assert sorted(kind.number for kind in KINDS) == sorted(wire)
    assert [kind.name for kind in KINDS] == ["schedule", "signal-plans", "access-list"]
    for kind in KINDS:
        assert documents.kind_of(kind.number) is kind
        assert documents.kind_named(kind.name) is kind


def test_an_operators_schedule_file_becomes_the_value_the_agent_applies() -> None:
    kind = documents.kind_named("schedule")
    text = EXAMPLE.read_text()
    payload = documents.payload_from_json(kind, text, source=str(EXAMPLE))
    parsed = documents.parse(SCHEDULE, payload)
    # Checked against the schedule engine's own converter, not against parse itself.
    expected = schedule_from_proto(json_format.Parse(text, schedule_pb2.Schedule()))
    assert isinstance(parsed.value, Schedule) and parsed.value == expected
    assert parsed.payload is payload  # the bytes as received are what is stored and sent
    assert parsed.digest == hashlib.sha256(payload).digest()


def test_signal_plans_parse_into_the_validated_model() -> None:
    message = signal_plans()
    parsed = documents.parse(PLANS, message.SerializeToString())
    assert isinstance(parsed.value, SignalPlans)
    assert parsed.value == plans_from_proto(message)


@pytest.mark.parametrize("seed", range(20))
def test_access_lists_parse_into_the_list_the_bollards_check(seed: int) -> None:
    rng = random.Random(seed)
    message = access_list(rng, rng.randrange(0, 40))
    parsed = documents.parse(ACCESS, message.SerializeToString())
    assert isinstance(parsed.value, LocalAccessList)
    assert len(parsed.value) == len(message.grants)


@pytest.mark.parametrize(
    ("kind", "payload", "text"),
    [
        (0, b"", "kind: unknown document kind"),
        (99, b"", "kind: unknown document kind"),
        (
            SCHEDULE,
            b"\x00" * (MAX_DOCUMENT_BYTES + 1),
            f"payload: larger than {MAX_DOCUMENT_BYTES}",
        ),
        (SCHEDULE, b"\xff\xff\xff", "payload: not a valid Schedule"),
        (ACCESS, b"\xff\xff\xff", "payload: not a valid AccessList"),
        (
            SCHEDULE,
            schedule_pb2.Schedule(
                programs=[
                    schedule_pb2.Program(
                        id="p", points=[schedule_pb2.SwitchPoint(local_time="25:00", lamp_level=50)]
                    )
                ]
            ).SerializeToString(),
            "programs[0].points[0].local_time: expected HH:MM or HH:MM:SS, got '25:00'",
        ),
        (
            ACCESS,
            access_pb2.AccessList(
                grants=[access_pb2.AccessGrant(credential_sha256="ABC")]
            ).SerializeToString(),
            "access_list.grants[0].credential_sha256: must be 64 lower-case hex digits",
        ),
    ],
    ids=["kind-0", "kind-99", "too-large", "garbage", "garbage-access", "schedule", "access"],
)
def test_a_refused_document_names_the_field(kind: int, payload: bytes, text: str) -> None:
    with pytest.raises(FieldError) as refused:
        documents.parse(kind, payload)
    assert str(refused.value).startswith(text)


def test_signal_plans_that_break_their_own_cycle_are_refused() -> None:
    message = signal_plans()
    message.plans[0].greens[0].end_s = 999
    with pytest.raises(FieldError, match=r"^plans\[0\]\.greens\[0\]\.end_s: 999 s is beyond"):
        documents.parse(PLANS, message.SerializeToString())


def test_a_json_file_that_is_not_a_document_of_its_kind_names_the_file() -> None:
    kind = documents.kind_named("signal-plans")
    with pytest.raises(DocumentError) as refused:
        documents.payload_from_json(kind, '{"programs": []}', source="plans.json")
    assert refused.value.field == "plans.json"
    assert "programs" in refused.value.reason


def test_an_unknown_kind_name_lists_the_known_ones() -> None:
    with pytest.raises(DocumentError, match="kind: must be one of schedule, signal-plans, access"):
        documents.kind_named("schedules")
