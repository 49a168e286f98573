"""The outbox's disk budget and the gap event recording what a full outbox dropped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edge.events import Priority
from edge.storage.errors import OutboxError
from edge.storage.overflow import (
    MAX_LISTED_RANGES,
    MIB,
    Dropped,
    OutboxLimits,
    bytes_to_free,
    gap_event,
    gap_events,
    sequence_ranges,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_default_budget_is_64_mib_with_room_for_the_log() -> None:
    limits = OutboxLimits()
    assert limits.max_disk_bytes == 64 * MIB
    assert limits.high_water_bytes + limits.wal_bytes < limits.max_disk_bytes
    # The log holds a checkpoint's worth plus the largest append.
    assert limits.checkpoint_bytes + limits.max_append_bytes < limits.wal_bytes


def test_a_budget_below_one_mib_is_refused() -> None:
    with pytest.raises(OutboxError) as caught:
        OutboxLimits(max_disk_bytes=MIB - 1)
    assert caught.value.field == "limits.max_disk_bytes"


def test_nothing_is_freed_below_the_high_water_mark() -> None:
    limits = OutboxLimits(max_disk_bytes=4 * MIB)
    assert bytes_to_free(limits.high_water_bytes - 100, 100, limits) == 0


def test_a_full_outbox_frees_a_whole_chunk_not_just_the_incoming_bytes() -> None:
    limits = OutboxLimits(max_disk_bytes=4 * MIB)
    used = limits.high_water_bytes - 10
    freed = bytes_to_free(used, 100, limits)
    assert freed == 90 + limits.eviction_bytes
    assert used + 100 - freed == limits.high_water_bytes - limits.eviction_bytes


def test_sequence_ranges_cover_exactly_the_given_sequences() -> None:
    assert sequence_ranges([7, 1, 2, 3, 9, 8, 12]) == [(1, 3), (7, 9), (12, 12)]
    assert sequence_ranges([]) == []


def test_the_gap_event_says_what_was_dropped_by_priority() -> None:
    dropped = [Dropped(s, Priority.METERING, T0 + timedelta(minutes=15 * s)) for s in (3, 4, 5)]
    dropped += [Dropped(9, Priority.EVENT, T0 + timedelta(hours=9))]
    event = gap_event(dropped, T0 + timedelta(days=3))
    assert event.type == "outbox.gap"
    assert event.priority is Priority.EVENT
    assert event.device_id == "outbox"
    assert event.at == T0 + timedelta(days=3)
    a = event.attributes
    assert (a["dropped"], a["first_sequence"], a["last_sequence"]) == ("4", "3", "9")
    assert a["first_at"] == (T0 + timedelta(minutes=45)).isoformat()
    assert a["last_at"] == (T0 + timedelta(hours=9)).isoformat()
    assert (a["metering.dropped"], a["metering.first_sequence"]) == ("3", "3")
    assert a["metering.last_sequence"] == "5"
    assert (a["event.dropped"], a["event.first_sequence"], a["event.last_sequence"]) == (
        "1",
        "9",
        "9",
    )
    assert "alarm.dropped" not in a
    assert a["sequences"] == "3-5,9"
    assert "sequences_truncated" not in a
    assert "dropped 1 event and 3 metering" in event.message


def test_a_long_range_list_is_truncated_but_counts_stay_exact() -> None:
    dropped = [Dropped(2 * s, Priority.METERING, T0) for s in range(1, 201)]
    a = gap_event(dropped, T0).attributes
    assert a["dropped"] == "200"
    assert len(a["sequences"].split(",")) == MAX_LISTED_RANGES
    assert a["sequences_truncated"] == "true"


def test_a_drop_of_many_ranges_is_listed_in_full_over_several_gap_events() -> None:
    dropped = [Dropped(s, Priority.METERING, T0) for s in range(2, 800, 3)]  # 266 ranges
    events = gap_events(dropped, T0)
    assert len(events) == -(-266 // MAX_LISTED_RANGES)
    listed: list[int] = []
    for e in events:
        parts = e.attributes["sequences"].split(",")
        assert len(parts) <= MAX_LISTED_RANGES and "sequences_truncated" not in e.attributes
        assert int(e.attributes["dropped"]) == len(parts)
        listed += [int(p) for p in parts]
    assert listed == [d.sequence for d in dropped]
    # Contiguous runs are not split needlessly: one range, one event.
    assert len(gap_events([Dropped(s, Priority.METERING, T0) for s in range(1, 5000)], T0)) == 1


def test_a_gap_event_needs_something_dropped() -> None:
    with pytest.raises(OutboxError):
        gap_event([], T0)
