"""The agent's state file: documents with stale versions refused, overrides, counters."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.storage.atomic import RecoveryOutcome, StorageRecovery
from edge.storage.errors import DocumentRefusedError, StateError
from edge.storage.state import (
    AgentState,
    DeviceCounters,
    DocumentVerdict,
    StoredDocument,
    judge_document,
)
from protos.ondijon.v1 import link_pb2, schedule_pb2

SCHEDULE = link_pb2.DOCUMENT_KIND_SCHEDULE
PLANS = link_pb2.DOCUMENT_KIND_SIGNAL_PLANS
T0 = datetime(2026, 3, 1, 18, 0, tzinfo=UTC)


def _doc(version: int, payload: bytes, kind: int = SCHEDULE) -> link_pb2.DesiredDocument:
    return link_pb2.DesiredDocument(
        kind=kind,  # type: ignore[arg-type]
        version=version,
        digest=hashlib.sha256(payload).digest(),
        payload=payload,
    )


def _stored(version: int, payload: bytes) -> StoredDocument:
    return StoredDocument(SCHEDULE, version, hashlib.sha256(payload).digest(), payload)


def _override(override_id: str, expiry: datetime) -> schedule_pb2.Override:
    message = schedule_pb2.Override(id=override_id, priority=5, lamp_level=100)
    message.start.FromDatetime(T0)
    message.expiry.FromDatetime(expiry)
    return message


@pytest.fixture
def state(tmp_path: Path) -> AgentState:
    return AgentState(tmp_path / "state.json")


# judge_document (pure) --------------------------------------------------------------------


def test_a_first_or_newer_document_is_new() -> None:
    assert judge_document(None, _stored(1, b"a")) is DocumentVerdict.NEW
    assert judge_document(_stored(1, b"a"), _stored(2, b"b")) is DocumentVerdict.NEW


def test_the_same_document_re_delivered_is_already_held() -> None:
    assert judge_document(_stored(4, b"a"), _stored(4, b"a")) is DocumentVerdict.ALREADY_HELD
    # An older version with the held content changes nothing either.
    assert judge_document(_stored(4, b"a"), _stored(3, b"a")) is DocumentVerdict.ALREADY_HELD


@pytest.mark.parametrize(
    ("incoming", "field", "reason"),
    [
        (_stored(3, b"old"), "documents[schedule].version", "not newer than the held version 4"),
        (_stored(4, b"other"), "documents[schedule].version", "stale or replayed"),
        (_stored(0, b"x"), "documents[schedule].version", "must be 1 or more"),
        (
            StoredDocument(SCHEDULE, 5, b"\x00" * 32, b"payload"),
            "documents[schedule].digest",
            "SHA-256",
        ),
        (
            StoredDocument(0, 5, hashlib.sha256(b"x").digest(), b"x"),  # type: ignore[arg-type]
            "documents[unspecified].kind",
            "unknown",
        ),
        (
            StoredDocument(99, 5, hashlib.sha256(b"x").digest(), b"x"),  # type: ignore[arg-type]
            "documents[99].kind",
            "unknown",
        ),
    ],
    ids=["stale", "replayed-same-version", "version-zero", "bad-digest", "unspecified", "99"],
)
def test_stale_replayed_or_corrupt_documents_are_refused_naming_the_field(
    incoming: StoredDocument, field: str, reason: str
) -> None:
    with pytest.raises(DocumentRefusedError) as caught:
        judge_document(_stored(4, b"held"), incoming)
    assert caught.value.field == field
    assert reason in caught.value.reason


# Documents -------------------------------------------------------------------------------


def test_documents_are_stored_and_survive_a_restart(tmp_path: Path) -> None:
    with AgentState(tmp_path / "state.json") as state:
        assert state.accept_document(_doc(1, b"schedule v1")) is DocumentVerdict.NEW
        assert state.accept_document(_doc(7, b"plans v7", PLANS)) is DocumentVerdict.NEW
        assert state.accept_document(_doc(2, b"schedule v2")) is DocumentVerdict.NEW
    with AgentState(tmp_path / "state.json") as state:
        held = state.document(SCHEDULE)
        assert held is not None and held.version == 2 and held.payload == b"schedule v2"
        assert [(h.kind, h.version) for h in state.held_documents()] == [(SCHEDULE, 2), (PLANS, 7)]
        assert state.held_documents()[0].digest == hashlib.sha256(b"schedule v2").digest()
        assert state.document(link_pb2.DOCUMENT_KIND_ACCESS_LIST) is None
    # Payload bytes are base64 in the JSON file, readable by an operator's tools.
    raw = json.loads((tmp_path / "state.json").read_text())
    assert "c2NoZWR1bGUgdjI=" in json.dumps(raw)


def test_a_refused_document_changes_nothing(state: AgentState, tmp_path: Path) -> None:
    state.accept_document(_doc(5, b"current"))
    before = (tmp_path / "state.json").read_bytes()
    with pytest.raises(DocumentRefusedError):
        state.accept_document(_doc(4, b"replayed old"))
    with pytest.raises(DocumentRefusedError):
        state.accept_document(_doc(5, b"same version, other content"))
    assert (tmp_path / "state.json").read_bytes() == before
    held = state.document(SCHEDULE)
    assert held is not None and held.payload == b"current"


def test_a_re_delivered_document_is_not_written_again(state: AgentState, tmp_path: Path) -> None:
    state.accept_document(_doc(1, b"a"))
    state.accept_document(_doc(2, b"b"))
    backup_before = (tmp_path / "state.json.bak").read_bytes()
    assert state.accept_document(_doc(2, b"b")) is DocumentVerdict.ALREADY_HELD
    # A write would have rotated the backup.
    assert (tmp_path / "state.json.bak").read_bytes() == backup_before


# Overrides -------------------------------------------------------------------------------


def test_overrides_are_kept_replaced_removed_and_expired(tmp_path: Path) -> None:
    with AgentState(tmp_path / "state.json") as state:
        state.put_override(_override("fire-brigade", T0 + timedelta(hours=1)))
        state.put_override(_override("festival", T0 + timedelta(hours=5)))
        state.put_override(_override("fire-brigade", T0 + timedelta(hours=2)))
    with AgentState(tmp_path / "state.json") as state:
        overrides = state.overrides()
        assert [o.id for o in overrides] == ["festival", "fire-brigade"]
        assert overrides[1].expiry.ToDatetime(tzinfo=UTC) == T0 + timedelta(hours=2)
        assert overrides[1].lamp_level == 100
        assert state.drop_expired_overrides(T0 + timedelta(hours=2)) == ["fire-brigade"]
        assert [o.id for o in state.overrides()] == ["festival"]
        assert state.remove_override("festival") is True
        assert state.remove_override("festival") is False
        assert state.overrides() == []


def test_an_override_without_id_or_expiry_is_refused(state: AgentState) -> None:
    with pytest.raises(StateError, match=r"overrides\[\]\.id"):
        state.put_override(_override("", T0))
    with pytest.raises(StateError) as caught:
        state.put_override(schedule_pb2.Override(id="forever"))
    assert caught.value.field == "overrides[forever].expiry"
    assert state.overrides() == []


def test_expiry_needs_an_aware_time(state: AgentState) -> None:
    with pytest.raises(StateError, match="now"):
        state.drop_expired_overrides(datetime(2026, 3, 1))


# Counters --------------------------------------------------------------------------------


def test_counters_add_up_across_restarts(tmp_path: Path) -> None:
    with AgentState(tmp_path / "state.json") as state:
        assert state.counters("lamp-1") == DeviceCounters()
        state.add_counters(
            {"lamp-1": DeviceCounters(0.25, 1, 12.5), "lamp-2": DeviceCounters(0.25, 0, 11.0)}
        )
        new = state.add_counters({"lamp-1": DeviceCounters(0.25, 2, 12.5)})
        assert new == {"lamp-1": DeviceCounters(0.5, 3, 25.0)}
    with AgentState(tmp_path / "state.json") as state:
        assert state.all_counters() == {
            "lamp-1": DeviceCounters(0.5, 3, 25.0),
            "lamp-2": DeviceCounters(0.25, 0, 11.0),
        }


def test_a_bad_increment_refuses_the_whole_batch(state: AgentState) -> None:
    state.add_counters({"lamp-1": DeviceCounters(1.0, 1, 1.0)})
    with pytest.raises(StateError) as caught:
        state.add_counters(
            {"lamp-1": DeviceCounters(1.0, 1, 1.0), "lamp-2": DeviceCounters(1.0, 1, -3.0)}
        )
    assert caught.value.field == "counters[lamp-2].energy_wh"
    with pytest.raises(StateError, match=r"counters\[lamp-1\]\.operating_hours"):
        state.add_counters({"lamp-1": DeviceCounters(float("nan"), 0, 0.0)})
    assert state.all_counters() == {"lamp-1": DeviceCounters(1.0, 1, 1.0)}


# Firmware --------------------------------------------------------------------------------


def test_firmware_record_merges_and_removes_keys(tmp_path: Path) -> None:
    with AgentState(tmp_path / "state.json") as state:
        assert state.firmware() == {}
        state.update_firmware({"active_slot": "a", "pending": "1.4.0", "attempts": 0})
        state.update_firmware({"pending": None, "attempts": 1})
    with AgentState(tmp_path / "state.json") as state:
        assert state.firmware() == {"active_slot": "a", "attempts": 1}


def test_a_non_json_firmware_value_is_refused(state: AgentState) -> None:
    state.update_firmware({"active_slot": "b"})
    with pytest.raises(StateError) as caught:
        state.update_firmware({"active_slot": "a", "started": T0})
    assert caught.value.field == "firmware.started"
    assert state.firmware() == {"active_slot": "b"}


# Power cuts ------------------------------------------------------------------------------


def test_a_torn_state_file_on_start_is_recovered_from_the_good_copy_and_reported(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    with AgentState(path) as state:
        state.accept_document(_doc(3, b"schedule v3"))
        state.add_counters({"lamp-1": DeviceCounters(1.0, 2, 30.0)})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 17])  # the cut fell inside the last write
    reports: list[StorageRecovery] = []
    with AgentState(path, on_recovery=reports.append) as state:
        assert state.recovered is not None
        assert state.recovered.outcome is RecoveryOutcome.RESTORED_FROM_BACKUP
        # The previous good copy: the document is there, the last counter write is not.
        held = state.document(SCHEDULE)
        assert held is not None and held.version == 3
        assert state.all_counters() == {}
        # Stale protection still holds after the recovery.
        with pytest.raises(DocumentRefusedError):
            state.accept_document(_doc(2, b"schedule v2"))
    assert reports == [state.recovered]


def test_a_hand_edited_malformed_entry_names_its_field(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with AgentState(path) as state:
        state.accept_document(_doc(1, b"x"))
    data = json.loads(path.read_text())
    data["documents"]["1"]["payload"] = "not base64!"
    path.write_text(json.dumps(data))
    with AgentState(path) as state, pytest.raises(StateError) as caught:
        state.document(SCHEDULE)
    assert caught.value.field == "documents[schedule].payload"
