"""How an event is recorded: exactly the wire Event, sequence included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from edge.events import EquipmentEvent, Priority
from edge.storage.errors import OutboxError
from edge.storage.record import batch_entry_bytes, record, sequence_field
from protos.ondijon.v1 import link_pb2

AT = datetime(2026, 3, 1, 18, 30, 15, 250000, tzinfo=UTC)


@pytest.mark.parametrize("sequence", [1, 127, 128, 16_383, 16_384, 2**32 + 7, 2**64 - 1])
def test_the_stored_body_is_the_standard_serialization(sequence: int) -> None:
    event = EquipmentEvent("lamp-7", "lamp.failure", Priority.ALARM, AT, "open", {"a": "b"})
    stored = record(event, "events[0]").stored_body(sequence)
    expected = link_pb2.Event(
        sequence=sequence,
        priority=link_pb2.EVENT_PRIORITY_ALARM,
        device_id="lamp-7",
        type="lamp.failure",
        message="open",
        attributes={"a": "b"},
    )
    expected.at.FromDatetime(AT)
    parsed = link_pb2.Event.FromString(stored)
    assert parsed == expected
    assert sequence_field(sequence) == link_pb2.Event(sequence=sequence).SerializeToString()


def test_a_local_time_is_stored_as_the_same_instant() -> None:
    paris = timezone(timedelta(hours=1))
    event = EquipmentEvent("lamp-7", "lamp.switched", Priority.EVENT, AT.astimezone(paris))
    parsed = link_pb2.Event.FromString(record(event, "e").stored_body(1))
    assert parsed.at.ToDatetime(tzinfo=UTC) == AT


def test_batch_entry_bytes_match_a_serialized_event_batch() -> None:
    for size in (0, 1, 126, 127, 128, 300, 20_000):
        event = link_pb2.Event(message="x" * size)
        body = event.SerializeToString()
        assert batch_entry_bytes(len(body)) == link_pb2.EventBatch(events=[event]).ByteSize()


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (EquipmentEvent("d", "t", Priority.EVENT, datetime(2026, 3, 1)), "events[4].at"),
        (EquipmentEvent("d", "", Priority.EVENT, AT), "events[4].type"),
        (EquipmentEvent("d", "t", 0, AT), "events[4].priority"),  # type: ignore[arg-type]
        (EquipmentEvent(7, "t", Priority.EVENT, AT), "events[4].device_id"),  # type: ignore[arg-type]
        (EquipmentEvent("d", "t", Priority.EVENT, AT, "", {"k": 2}), "events[4].attributes"),  # type: ignore[dict-item]
        ("not an event", "events[4]"),
    ],
    ids=["naive-time", "no-type", "priority", "device-id", "attribute", "not-an-event"],
)
def test_a_malformed_event_names_its_field(event: EquipmentEvent, field: str) -> None:
    with pytest.raises(OutboxError) as caught:
        record(event, "events[4]")
    assert caught.value.field == field
