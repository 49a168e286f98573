"""The durable outbox: sequences, priorities, acks, the disk budget and power cuts."""

from __future__ import annotations

import random
import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.events import EquipmentEvent, Priority
from edge.storage import loss
from edge.storage.atomic import RecoveryOutcome, StorageRecovery
from edge.storage.errors import OutboxError, OutboxRecovered
from edge.storage.outbox import Outbox
from edge.storage.overflow import MIB, OutboxLimits
from foundation.clock import ManualClock
from protos.ondijon.v1 import link_pb2
from tests.nothing_lost.damage import cut_wal, garble_leaf, leaf_pages, page_size
from tests.nothing_lost.harness import listed_lost

T0 = datetime(2026, 3, 1, tzinfo=UTC)
QUARTER = timedelta(minutes=15)
LAMPS = [f"lamp-{n:03d}" for n in range(100)]


def reading(device_id: str, end: datetime) -> EquipmentEvent:
    """A lamp's quarter-hour metering record, shaped like the lamp controller's."""
    return EquipmentEvent(
        device_id=device_id,
        type="energy_interval",
        priority=Priority.METERING,
        at=end,
        attributes={
            "interval_start": (end - QUARTER).isoformat(),
            "interval_end": end.isoformat(),
            "wh": "9.375",
            "on_seconds": "900",
            "covered_seconds": "900",
        },
    )


def alarm(device_id: str, at: datetime, message: str = "driver open circuit") -> EquipmentEvent:
    return EquipmentEvent(device_id, "lamp.failure", Priority.ALARM, at, message)


def event(device_id: str, at: datetime, message: str = "") -> EquipmentEvent:
    return EquipmentEvent(device_id, "lamp.switched", Priority.EVENT, at, message, {"level": "100"})


WORDY = "a long diagnostic text, so that a few appends fill a small budget " * 8


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def outbox(tmp_path: Path, clock: ManualClock) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db", clock=clock) as box:
        yield box


def everything(box: Outbox) -> list[link_pb2.Event]:
    """Every pending event (in send order), leaving none in flight."""
    events = box.next_batch(10**9, 10**12)
    box.requeue_in_flight()
    return events


def welcomed(box: Outbox, stored: int = 0) -> None:
    """The first welcome of a run, before it sends anything (the orchestrator stores up to
    ``stored``): what the run numbers from then on is known to be its own."""
    box.settle_losses(
        held=[], stored_sequence=stored, hello_last=box.last_sequence, asked_after=box.held_after()
    )


def gaps(events: list[link_pb2.Event]) -> list[link_pb2.Event]:
    return [e for e in events if e.type == "outbox.gap"]


# Sequences -------------------------------------------------------------------------------


def test_sequences_are_contiguous_from_one_and_survive_a_restart(
    tmp_path: Path, clock: ManualClock
) -> None:
    with Outbox(tmp_path / "outbox.db", clock=clock) as box:
        assert box.last_sequence == 0
        assert box.append(alarm("lamp-001", T0)) == 1
        assert box.append_many([reading(d, T0) for d in LAMPS[:3]]) == [2, 3, 4]
    with Outbox(tmp_path / "outbox.db", clock=clock) as box:
        assert box.last_sequence == 4
        assert box.pending_count == 4
        assert box.append(event("lamp-002", T0)) == 5
        assert [e.sequence for e in everything(box)] == [1, 5, 2, 3, 4]


def test_sequences_are_never_reused_once_everything_is_acknowledged(
    tmp_path: Path, clock: ManualClock
) -> None:
    with Outbox(tmp_path / "outbox.db", clock=clock) as box:
        box.append_many([reading(d, T0) for d in LAMPS[:10]])
        assert box.ack([(1, 10)]) == 10
        assert box.pending_count == 0
    with Outbox(tmp_path / "outbox.db", clock=clock) as box:
        assert box.append(reading("lamp-000", T0)) == 11


def test_the_stored_event_is_what_was_recorded(outbox: Outbox) -> None:
    at = datetime(2026, 3, 1, 18, 30, 15, 123456, tzinfo=UTC)
    outbox.append(EquipmentEvent("bollard-3", "bollard.reversal", Priority.ALARM, at, "obstacle"))
    (sent,) = everything(outbox)
    assert sent.sequence == 1
    assert sent.priority == link_pb2.EVENT_PRIORITY_ALARM
    assert (sent.device_id, sent.type, sent.message) == (
        "bollard-3",
        "bollard.reversal",
        "obstacle",
    )
    assert sent.at.ToDatetime(tzinfo=UTC) == at


def test_append_many_records_all_or_nothing(outbox: Outbox) -> None:
    outbox.append(alarm("lamp-001", T0))
    naive = EquipmentEvent("lamp-002", "lamp.switched", Priority.EVENT, datetime(2026, 3, 1))
    with pytest.raises(OutboxError) as caught:
        outbox.append_many([reading("lamp-001", T0), reading("lamp-002", T0), naive])
    assert caught.value.field == "events[2].at"
    assert outbox.last_sequence == 1
    assert outbox.pending_count == 1


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (EquipmentEvent("lamp-1", "", Priority.EVENT, T0), "events[0].type"),
        (EquipmentEvent("lamp-1", "x", 7, T0), "events[0].priority"),  # type: ignore[arg-type]
        (EquipmentEvent("lamp-1", "x", Priority.EVENT, T0, "", {"k": 1}), "events[0].attributes"),  # type: ignore[dict-item]
    ],
    ids=["no-type", "unknown-priority", "non-string-attribute"],
)
def test_a_malformed_event_is_refused_naming_its_field(
    outbox: Outbox, bad: EquipmentEvent, field: str
) -> None:
    with pytest.raises(OutboxError) as caught:
        outbox.append(bad)
    assert caught.value.field.startswith(field)
    assert outbox.last_sequence == 0


# Sending ---------------------------------------------------------------------------------


def test_alarms_go_first_then_events_then_metering_each_in_sequence_order(
    outbox: Outbox,
) -> None:
    outbox.append_many([reading("lamp-000", T0), reading("lamp-001", T0)])  # 1, 2
    outbox.append(event("lamp-000", T0))  # 3
    outbox.append(alarm("lamp-007", T0))  # 4
    outbox.append(reading("lamp-002", T0))  # 5
    outbox.append(event("lamp-001", T0))  # 6
    outbox.append(alarm("lamp-008", T0))  # 7
    batch = outbox.next_batch(max_events=100, max_bytes=1 << 20)
    assert [e.sequence for e in batch] == [4, 7, 3, 6, 1, 2, 5]
    assert outbox.pending_by_priority() == {
        Priority.ALARM: 2,
        Priority.EVENT: 2,
        Priority.METERING: 3,
    }


def test_next_batch_skips_what_is_in_flight_until_requeued(outbox: Outbox) -> None:
    outbox.append_many([reading(d, T0) for d in LAMPS[:5]])
    first = outbox.next_batch(max_events=3, max_bytes=1 << 20)
    assert [e.sequence for e in first] == [1, 2, 3]
    assert outbox.in_flight_count == 3
    outbox.append(alarm("lamp-009", T0))  # 6: an alarm still overtakes what waits
    assert [e.sequence for e in outbox.next_batch(10, 1 << 20)] == [6, 4, 5]
    assert outbox.next_batch(10, 1 << 20) == []
    outbox.ack([(1, 2)])
    assert outbox.in_flight_count == 4
    assert outbox.requeue_in_flight() == 4
    assert outbox.in_flight_count == 0
    assert [e.sequence for e in outbox.next_batch(10, 1 << 20)] == [6, 3, 4, 5]


def test_nothing_is_in_flight_after_a_restart(tmp_path: Path, clock: ManualClock) -> None:
    with Outbox(tmp_path / "outbox.db", clock=clock) as box:
        box.append_many([reading(d, T0) for d in LAMPS[:4]])
        box.next_batch(4, 1 << 20)
    with Outbox(tmp_path / "outbox.db", clock=clock) as box:
        assert [e.sequence for e in box.next_batch(10, 1 << 20)] == [1, 2, 3, 4]


def test_a_batch_fits_max_bytes_as_a_serialized_event_batch(outbox: Outbox) -> None:
    outbox.append_many([reading(d, T0) for d in LAMPS])
    one = outbox.next_batch(1, 1 << 20)[0]
    outbox.requeue_in_flight()
    per_event = link_pb2.EventBatch(events=[one]).ByteSize()
    budget = per_event * 7 + per_event // 2
    batch = outbox.next_batch(max_events=50, max_bytes=budget)
    assert len(batch) == 7
    assert link_pb2.EventBatch(events=batch).ByteSize() <= budget
    assert [e.sequence for e in outbox.next_batch(max_events=3, max_bytes=1 << 20)] == [8, 9, 10]


def test_an_event_larger_than_max_bytes_is_still_sent_alone(outbox: Outbox) -> None:
    outbox.append(EquipmentEvent("cab-1", "cabinet.log", Priority.EVENT, T0, "x" * 5000))
    outbox.append(event("lamp-1", T0))
    assert [e.sequence for e in outbox.next_batch(10, 1000)] == [1]
    assert [e.sequence for e in outbox.next_batch(10, 1000)] == [2]
    assert outbox.next_batch(0, 1000) == []


# Acknowledgements ------------------------------------------------------------------------


def test_ack_forgets_stored_events_and_is_idempotent(outbox: Outbox) -> None:
    outbox.append_many([reading(d, T0) for d in LAMPS[:10]])
    outbox.next_batch(10, 1 << 20)
    ack = link_pb2.EventAck(stored=[link_pb2.SequenceRange(first=1, last=4)])
    assert outbox.ack(ack.stored) == 4
    assert outbox.ack(ack.stored) == 0
    assert outbox.ack([(3, 6), (9, 9)]) == 3
    assert outbox.pending_count == 3
    assert outbox.in_flight_count == 3
    outbox.requeue_in_flight()
    assert [e.sequence for e in everything(outbox)] == [7, 8, 10]


@pytest.mark.parametrize(
    ("ranges", "field"),
    [
        ([(1, 2), (5, 4)], "stored[1].last"),
        ([(0, 3)], "stored[0].first"),
        ([(1, 2), (9, 11)], "stored[1].last"),
    ],
    ids=["reversed", "zero", "never-recorded"],
)
def test_a_bad_ack_changes_nothing(
    outbox: Outbox, ranges: list[tuple[int, int]], field: str
) -> None:
    outbox.append_many([reading(d, T0) for d in LAMPS[:10]])
    with pytest.raises(OutboxError) as caught:
        outbox.ack(ranges)
    assert caught.value.field == field
    assert outbox.pending_count == 10


# Disk budget -----------------------------------------------------------------------------


def _fill(box: Outbox, clock: ManualClock, quarters: int, with_events: bool) -> list[int]:
    """Append a 100-lamp cabinet's readings; check the budget after every append."""
    sequences: list[int] = []
    for q in range(quarters):
        clock.advance(QUARTER.total_seconds())
        batch = [reading(d, clock.now()) for d in LAMPS]
        if with_events and q % 8 == 0:
            batch.append(event(LAMPS[q % 100], clock.now()))
        if with_events and q % 50 == 0:
            batch.append(alarm(LAMPS[q % 100], clock.now()))
        sequences += box.append_many(batch)
        assert box.disk_bytes <= box.limits.max_disk_bytes
    return sequences


def _dropped_by_gaps(gap_events: list[link_pb2.Event]) -> set[int]:
    dropped: set[int] = set()
    for gap in gap_events:
        assert "sequences_truncated" not in gap.attributes
        for part in filter(None, gap.attributes["sequences"].split(",")):
            first, _, last = part.partition("-")
            dropped.update(range(int(first), int(last or first) + 1))
        assert len(dropped) >= int(gap.attributes["dropped"])
    return dropped


def test_a_full_outbox_drops_the_oldest_metering_and_records_exactly_what(
    tmp_path: Path, clock: ManualClock
) -> None:
    limits = OutboxLimits(max_disk_bytes=MIB)
    with Outbox(tmp_path / "outbox.db", clock=clock, limits=limits) as box:
        _fill(box, clock, quarters=80, with_events=True)
        kept = everything(box)
        last = box.last_sequence
    kept_sequences = {e.sequence for e in kept}
    gap_events = gaps(kept)
    assert gap_events, "the budget should have been exceeded"
    dropped = _dropped_by_gaps(gap_events)
    # Every sequence is either still here or accounted for by exactly one gap event.
    assert kept_sequences | dropped == set(range(1, last + 1))
    assert not kept_sequences & dropped
    assert sum(int(g.attributes["dropped"]) for g in gap_events) == len(dropped)
    # Only metering went, the oldest first; every alarm and event is still here.
    by_sequence = {e.sequence: e for e in kept}
    kept_metering = sorted(
        s for s, e in by_sequence.items() if e.priority == link_pb2.EVENT_PRIORITY_METERING
    )
    assert min(kept_metering) > max(dropped)
    assert all("metering.dropped" in g.attributes for g in gap_events)
    assert not any("event.dropped" in g.attributes for g in gap_events)
    types = Counter(e.type for e in kept)
    assert types["lamp.failure"] == 2  # quarters 0 and 50
    assert types["lamp.switched"] == 10  # every 8th quarter of 80
    # The gap event's time range is the dropped readings' own.
    first_gap = gap_events[0].attributes
    assert first_gap["first_at"] == (T0 + QUARTER).isoformat()
    assert first_gap["first_sequence"] == "1"


def test_events_go_only_once_no_metering_is_left_and_alarms_never(
    tmp_path: Path, clock: ManualClock
) -> None:
    limits = OutboxLimits(max_disk_bytes=MIB)
    with Outbox(tmp_path / "outbox.db", clock=clock, limits=limits) as box:
        box.append_many([reading(d, T0) for d in LAMPS])
        alarms = box.append_many([alarm(d, T0) for d in LAMPS[:20]])
        for _ in range(30):
            box.append_many([event(d, T0, WORDY) for d in LAMPS])
            assert box.disk_bytes <= limits.max_disk_bytes
        kept = everything(box)
    kept_sequences = {e.sequence for e in kept}
    gap_events = gaps(kept)
    assert len(gap_events) >= 2
    assert set(alarms) <= kept_sequences
    assert not any(e.priority == link_pb2.EVENT_PRIORITY_METERING for e in kept)
    # No event went while a metering reading was left.
    metering_dropped = 0
    for gap in gap_events:
        if "event.dropped" in gap.attributes:
            assert metering_dropped + int(gap.attributes.get("metering.dropped", "0")) == 100
        metering_dropped += int(gap.attributes.get("metering.dropped", "0"))
    assert metering_dropped == 100
    assert any("event.dropped" in g.attributes for g in gap_events)
    assert not any("alarm.dropped" in g.attributes for g in gap_events)


def test_alarms_are_kept_even_past_the_budget(tmp_path: Path, clock: ManualClock) -> None:
    limits = OutboxLimits(max_disk_bytes=MIB)
    with Outbox(tmp_path / "outbox.db", clock=clock, limits=limits) as box:
        for _ in range(25):
            box.append_many([alarm(d, T0, WORDY) for d in LAMPS])
        assert box.disk_bytes > limits.max_disk_bytes
        assert box.pending_count == 2500
        assert not gaps(everything(box))


def test_events_in_flight_are_not_dropped(tmp_path: Path, clock: ManualClock) -> None:
    limits = OutboxLimits(max_disk_bytes=MIB)
    with Outbox(tmp_path / "outbox.db", clock=clock, limits=limits) as box:
        box.append_many([reading(d, T0) for d in LAMPS])
        in_flight = box.next_batch(10, 1 << 20)
        _fill(box, clock, quarters=45, with_events=False)
        assert gaps(box.next_batch(10**6, 10**9))
        assert box.ack([(e.sequence, e.sequence) for e in in_flight]) == 10


def test_an_append_bigger_than_the_limit_is_refused(tmp_path: Path, clock: ManualClock) -> None:
    limits = OutboxLimits(max_disk_bytes=MIB)
    with Outbox(tmp_path / "outbox.db", clock=clock, limits=limits) as box:
        with pytest.raises(OutboxError) as caught:
            box.append_many([reading(d, T0) for d in LAMPS] * 5)
        assert caught.value.field == "events"
        assert box.last_sequence == 0


@pytest.mark.slow
def test_a_week_offline_for_a_100_lamp_cabinet_loses_nothing(
    tmp_path: Path, clock: ManualClock
) -> None:
    with Outbox(tmp_path / "outbox.db", clock=clock) as box:
        recorded = _fill(box, clock, quarters=4 * 24 * 7, with_events=True)
        readings = 100 * 4 * 24 * 7
        assert readings == 67_200
        assert len(recorded) == readings + 84 + 14  # switch events, alarms
        assert recorded == list(range(1, len(recorded) + 1))
        assert box.pending_count == len(recorded)
        assert box.disk_bytes <= 64 * MIB
        # The link comes back: a window of 500 events, 256 KiB messages.
        sent: list[link_pb2.Event] = []
        while batch := box.next_batch(max_events=500, max_bytes=256 * 1024):
            sent += batch
            box.ack([(batch[0].sequence, batch[0].sequence)])
            box.ack([(e.sequence, e.sequence) for e in batch[1:]])
        assert box.pending_count == 0
    assert sorted(e.sequence for e in sent) == recorded
    assert not gaps(sent)
    priorities = [e.priority for e in sent]
    assert priorities == sorted(priorities)  # alarms, then events, then metering
    meters = {(e.device_id, e.at.ToDatetime()) for e in sent if e.type == "energy_interval"}
    assert len(meters) == readings


# Recovery and ownership ------------------------------------------------------------------


def test_a_corrupt_database_is_set_aside_and_reported(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not a database, the SD card returned garbage" * 100)
    with Outbox(path, clock=clock) as box:
        assert box.recovered is not None
        assert box.recovered.outcome is RecoveryOutcome.STARTED_EMPTY
        assert "corrupt" in box.recovered.reason
        # The orchestrator already stored up to 812: new events must not collide.
        assert box.raise_sequence_floor(812) is True
        assert box.raise_sequence_floor(5) is False
        assert box.append(alarm("lamp-1", T0)) == 813
    assert (tmp_path / "outbox.db.corrupt").exists()
    with Outbox(path, clock=clock) as box:
        assert box.recovered is None and box.last_sequence == 813


def cabinet_backlog(
    path: Path, clock: ManualClock, quarters: int = 30
) -> tuple[list[int], list[int]]:
    """Five alarms and ``quarters`` quarters of 100 lamps' metering, then closed (the log
    folded into the database); their sequences."""
    with Outbox(path, clock=clock) as box:
        welcomed(box)
        alarms = box.append_many([alarm(d, T0) for d in LAMPS[:5]])
        metering: list[int] = []
        for q in range(quarters):
            metering += box.append_many([reading(d, T0 + q * QUARTER) for d in LAMPS])
    return alarms, metering


def test_a_page_garbled_under_a_running_outbox_costs_that_page_and_is_listed_exactly(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "outbox.db"
    alarms, metering = cabinet_backlog(path, clock)
    garble_leaf(path, "metering_lane", index=3)
    with Outbox(path, clock=clock) as box:
        assert box.recovered is None  # opening does not notice the damage
        last = box.last_sequence
        reports: list[StorageRecovery] = []
        box.on_recovery.append(reports.append)
        with pytest.raises(OutboxRecovered):
            box.next_batch(10**6, 10**12)
        assert [r.outcome for r in reports] == [RecoveryOutcome.SALVAGED]
        kept = everything(box)
        kept_sequences = {e.sequence for e in kept}
        unreadable = (set(alarms) | set(metering)) - kept_sequences
        assert set(alarms) <= kept_sequences
        assert 0 < len(unreadable) < 100, "one page's worth, not the whole queue"
        recovered = [e for e in kept if e.type == "storage.recovered"]
        assert len(recovered) == 1 and recovered[0].priority == link_pb2.EVENT_PRIORITY_ALARM
        assert recovered[0].sequence == last + 1  # numbering goes on: nothing reused
        assert recovered[0].attributes["unreadable"] == str(len(unreadable))
        # The orchestrator holds some of those (sent before the damage): only the others
        # are listed as lost, each exactly once.
        held = sorted(unreadable)[::3]
        hello_last = box.last_sequence
        settlement = box.settle_losses(
            held=[(s, s) for s in held], stored_sequence=last, hello_last=hello_last
        )
        assert not settlement.rewound
        assert listed_lost(everything(box)) == unreadable - set(held)
        # Settled once: the next welcome lists nothing more.
        again = box.settle_losses(held=[], stored_sequence=0, hello_last=box.last_sequence)
        assert again.lost == []
    assert (tmp_path / "outbox.db.corrupt").exists()


def test_rows_above_the_last_sequence_the_file_says_are_kept_and_never_numbered_again(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The long storm: a log cut left the meta page of an older commit beside the leaves of
    a newer one (the file says its last sequence is 60, it holds rows up to 100). The
    recovery dropped the rows above 60 as untrustworthy and numbered new events from 61:
    promised events lost unlisted, their numbers given again. Each row is verified (its
    body names its sequence), so they are kept, and numbering goes on past them."""
    path = tmp_path / "outbox.db"
    with Outbox(path, clock=clock) as box:
        welcomed(box)
        made = box.append_many([reading(d, T0) for d in LAMPS])
    conn = sqlite3.connect(path)  # the older meta page, in a log the kill leaves behind
    conn.execute(f"UPDATE meta SET value = {made[59]} WHERE key = 'last_sequence'")
    conn.commit()
    left = files_left_by_a_kill(path, tmp_path / "killed")
    conn.close()
    garble_leaf(left, "metering_lane", index=0)  # damage, found at the start
    with Outbox(left, clock=clock) as box:
        assert box.recovered is not None
        kept = {e.sequence for e in everything(box)}
        new = box.append(reading("lamp-new", T0))
    above = {s for s in made if s > made[59]}
    # All kept but what the garbled page held (a page holds ~20 of these), and never given
    # again.
    assert len(above - kept) < 25, f"{len(above - kept)} rows above the file's last dropped"
    assert new > max(made)


class Killed(BaseException):
    """The process dies here (nothing after it runs, nothing catches it)."""


def test_a_kill_during_a_recovery_loses_nothing_it_had_read(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The long storm's "hello said 0": an agent killed while it salvaged a damaged outbox
    (a large one takes seconds) left the file set aside and no new one; the next start
    began an empty outbox, and every pending event was lost, none listed. A start that
    finds the recovery unfinished does it again from the set-aside file."""
    path = tmp_path / "outbox.db"
    alarms, metering = cabinet_backlog(path, clock)
    garble_leaf(path, "metering_lane", index=3)

    def killed(*_: object, **__: object) -> None:
        raise Killed

    box = Outbox(path, clock=clock)
    monkeypatch.setattr("edge.storage.outbox.salvage", killed)
    with pytest.raises(Killed):  # the damage is met, and the recovery dies in its salvage
        box.next_batch(10**6, 10**12)
    monkeypatch.undo()
    with Outbox(path, clock=clock) as box:
        assert box.recovered is not None and "interrupted" in box.recovered.reason
        kept = {e.sequence for e in everything(box)}
        last = box.last_sequence
    assert set(alarms) <= kept
    assert 0 < len((set(alarms) | set(metering)) - kept) < 100, "one page lost, not the outbox"
    assert last >= max(metering)  # numbering goes on


def test_a_loss_is_not_settled_on_a_file_damaged_since_unnoticed(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The long storm's "stored and listed as lost": a recovery left loss candidates to
    settle at the next welcome; before it, another page was garbled (a clean restart does
    not check the file). The settlement read what is pending from the damaged file, whose
    reads step over the garbled page: its rows were listed lost, then a later recovery read
    them back and they were delivered. The file is checked before a loss is declared."""
    path = tmp_path / "outbox.db"
    cabinet_backlog(path, clock)
    garble_leaf(path, "metering_lane", index=3)
    # Found while running: candidates to settle at the next welcome.
    with Outbox(path, clock=clock) as box, pytest.raises(OutboxRecovered):
        box.next_batch(10**6, 10**12)
    garble_leaf(path, "metering_lane", index=8, seed=2)  # unnoticed at the next start
    with Outbox(path, clock=clock) as box:
        for _ in range(3):
            try:
                asked = box.held_after()
                box.settle_losses(
                    held=[], stored_sequence=0, hello_last=box.last_sequence, asked_after=asked
                )
                kept = everything(box)
                break
            except OutboxRecovered:
                continue  # the link reconnects, and the next welcome settles
    lost = listed_lost(kept)
    assert lost and not lost & {e.sequence for e in kept}, "listed lost, and still here"


@pytest.mark.parametrize("seed", range(12))
def test_a_garbled_page_the_index_walk_steps_over_silently_is_still_listed_exactly(
    tmp_path: Path, clock: ManualClock, seed: int
) -> None:
    """A seek into a garbled page binary-searches noise and may step past the whole page
    without an error: the rows on it (hundreds) were neither recovered nor listed (the
    kill storm's "unexplained gap"). The orchestrator's answer makes the list exact."""
    rng = random.Random(seed)
    path = tmp_path / "outbox.db"
    acked: list[tuple[int, int]] = []

    def quarter(q: int) -> list[EquipmentEvent]:
        at = T0 + (q + 1) * QUARTER
        kinds = [Priority.METERING] * 100 + ([Priority.EVENT] if q % 3 == 0 else [])
        return [
            EquipmentEvent(
                f"lamp-{(q if p is Priority.EVENT else i) % 100:03d}",
                "energy_interval" if p is Priority.METERING else "x",
                p,
                at,
                "m" * 20,
                {"wh": str(q if p is Priority.EVENT else i)},
            )
            for i, p in enumerate(kinds)
        ]

    limits = OutboxLimits(max_disk_bytes=MIB)  # full: some dropped for room, and listed
    with Outbox(path, clock=clock, limits=limits) as box:
        welcomed(box)
        for q in range(rng.randint(20, 60)):
            box.append_many(quarter(q))
        for _ in range(rng.randint(0, 5)):  # what the orchestrator stored and acknowledged
            first = rng.randint(1, box.last_sequence)
            acked.append((first, min(box.last_sequence, first + rng.randint(0, 300))))
            box.ack([acked[-1]])
        before = {e.sequence for e in everything(box)}
    leaves = len(leaf_pages(path, "metering_lane"))
    garble_leaf(path, "metering_lane", index=rng.randrange(leaves), seed=seed)
    with Outbox(path, clock=clock, limits=limits) as box:
        if box.recovered is None:
            with pytest.raises(OutboxRecovered):
                box.next_batch(10**6, 10**12)
        hello_last = box.last_sequence
        asked = box.held_after()
        held = [r for r in loss.normalise(acked) if r[1] > asked]
        stored = max((b for _, b in acked), default=0)
        box.settle_losses(
            held=held, stored_sequence=stored, hello_last=hello_last, asked_after=asked
        )
        kept = everything(box)
    recovered = {e.sequence for e in kept if e.type not in ("outbox.gap", "storage.recovered")}
    assert listed_lost(kept) == before - recovered
    assert 0 < len(before - recovered) < 100, "one page's worth, not what the walk stepped over"


def test_a_damaged_file_does_not_list_again_what_its_gap_events_listed(
    tmp_path: Path, clock: ManualClock
) -> None:
    limits = OutboxLimits(max_disk_bytes=MIB)
    path = tmp_path / "outbox.db"
    with Outbox(path, clock=clock, limits=limits) as box:
        _fill(box, clock, quarters=80, with_events=False)  # full: drops listed
    garble_leaf(path, "metering_lane", index=2)
    with Outbox(path, clock=clock, limits=limits) as box:
        if box.recovered is None:
            with pytest.raises(OutboxRecovered):
                box.next_batch(10**6, 10**12)
        asked = box.held_after()
        box.settle_losses(
            held=[], stored_sequence=0, hello_last=box.last_sequence, asked_after=asked
        )
        kept = gaps(everything(box))
    dropped = listed_lost(e for e in kept if e.message.startswith("outbox full"))
    damaged = listed_lost(e for e in kept if "to its storage" in e.message)
    assert dropped and damaged
    assert not dropped & damaged, "listed twice"


def test_a_damaged_file_does_not_list_again_what_delivered_gap_events_listed(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Dropped for room and listed by a gap event the orchestrator stored, then the file is
    damaged: the welcome says which numbers delivered gap events list as lost, and the
    loss alarm lists only what the damage took (an older orchestrator does not say: the
    alarm then lists the dropped ones a second time, the count overstated)."""
    limits = OutboxLimits(max_disk_bytes=MIB)
    path = tmp_path / "outbox.db"
    with Outbox(path, clock=clock, limits=limits) as box:
        welcomed(box)
        _fill(box, clock, quarters=80, with_events=False)  # full: drops listed
        delivered = everything(box)[:2000]  # the gap events among them
        box.ack([(e.sequence, e.sequence) for e in delivered])
        dropped = _dropped_by_gaps(gaps(delivered))
        assert dropped
        pending = [(e.sequence, e.sequence) for e in everything(box)]
        last = box.last_sequence
    garble_leaf(path, "metering_lane", index=2)
    # What the orchestrator holds: every number given, but the dropped and the pending.
    held = loss.subtract([(1, last)], [*((s, s) for s in dropped), *pending])
    listed = {}
    for older in (False, True):
        copy = tmp_path / f"copy-{older}"
        copy.mkdir()
        shutil.copy(path, copy / "outbox.db")
        with Outbox(copy / "outbox.db", clock=clock, limits=limits) as box:
            if box.recovered is None:
                with pytest.raises(OutboxRecovered):
                    box.next_batch(10**6, 10**12)
            asked = box.held_after()
            box.settle_losses(
                held=[r for r in held if r[1] > asked],
                stored_sequence=last,
                hello_last=box.last_sequence,
                asked_after=asked,
                listed_lost=[] if older else loss.normalise((s, s) for s in dropped),
            )
            listed[older] = listed_lost(e for e in gaps(everything(box)) if "storage" in e.message)
    assert listed[False] and not listed[False] & dropped
    assert listed[True] >= dropped | listed[False]


def test_a_held_list_cut_at_its_length_limit_settles_what_it_reached_and_asks_again(
    tmp_path: Path, clock: ManualClock
) -> None:
    # The outbox went back to sequence 10; the orchestrator holds 1-10, 12-20 and 22-30,
    # but its welcome's list stops after 12-20 (its length limit): 21-30 are not known lost.
    with Outbox(tmp_path / "outbox.db", clock=clock) as box:
        welcomed(box)
        box.append_many([reading(d, T0) for d in LAMPS[:10]])
        box.ack([(1, 10)])
    with Outbox(tmp_path / "outbox.db", clock=clock) as box:
        first = box.settle_losses(held=[(12, 20)], stored_sequence=30, hello_last=10)
        assert first.lost == [(11, 11)]
        asked = box.held_after()
        assert asked <= 20  # the next hello asks again about what the answer did not reach
        held = [r for r in [(1, 10), (12, 20), (22, 30)] if r[1] > asked]
        second = box.settle_losses(
            held=held, stored_sequence=30, hello_last=box.last_sequence, asked_after=asked
        )
        assert second.lost == [(21, 21)]
        assert listed_lost(everything(box)) == {11, 21}


def files_left_by_a_kill(path: Path, into: Path) -> Path:
    """The outbox's files as a SIGKILL leaves them (the writer's connection still open)."""
    into.mkdir()
    for suffix in ("", "-wal"):
        if Path(f"{path}{suffix}").exists():
            shutil.copy2(f"{path}{suffix}", into / f"{path.name}{suffix}")
    return into / path.name


def quick_check_passes(path: Path, scratch: Path) -> bool:
    """SQLite's own structural check of a file (raw, no outbox), made on a copy: closing
    the connection would fold the log into the database."""
    path = files_left_by_a_kill(path, scratch)
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    except sqlite3.DatabaseError:
        return False
    finally:
        conn.close()


def test_a_log_cut_after_it_was_folded_into_the_database_is_not_trusted(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The kill storm's "wal" fault, at one kill point after another: the log's last
    frames cut after the checkpoint had already copied them into the database (a disk that
    lost writes it acknowledged, but not the later ones). SQLite then reads pages of two
    commits at once: the meta page says the last sequence is N while a leaf holds rows
    above N, out of key order (``PRAGMA quick_check``: "Rowid out of order"). Trusted, the
    outbox numbered new events over those rows and dropped them for room in a gap event
    numbered below them: the orchestrator stored the new events under the numbers the gap
    listed as lost. An outbox found so after a crash is recovered: every row it holds is
    numbered at or below its last sequence, in order, and none of its numbers is given
    again."""
    path = tmp_path / "live" / "outbox.db"
    limits = OutboxLimits(max_disk_bytes=MIB)
    rng = random.Random(6)  # batch sizes; with SQLite 3.4x, out-of-order rows at kill 43
    damaged = 0

    def readings(kill: int) -> list[EquipmentEvent]:  # small ones: many rows a page
        at = T0 + kill * QUARTER
        return [
            EquipmentEvent(
                d,
                "lamp.metering",
                Priority.METERING,
                at,
                "",
                {"power_w": str((kill * 31 + i) % 90), "energy_wh": str(kill * 7 + i)},
            )
            for i, d in enumerate(LAMPS)
        ]

    with Outbox(path, clock=clock, limits=limits) as live:
        for kill in range(60):
            live.append_many(readings(kill))
            sent = sorted(e.sequence for e in live.next_batch(rng.randint(50, 150), 10**9))
            live.ack([(sent[0], sent[-1])])  # pages freed, and reused by the next appends
            copy = files_left_by_a_kill(path, tmp_path / f"kill-{kill}")
            cut_wal(Path(f"{copy}-wal"), page_size(copy), 1 + kill % 3)
            damaged += not quick_check_passes(copy, tmp_path / f"check-{kill}")
            with Outbox(copy, clock=clock, limits=limits) as box:
                held = everything(box)
                for lane in {e.priority for e in held}:
                    in_lane = [e.sequence for e in held if e.priority == lane]
                    assert in_lane == sorted(in_lane), f"kill {kill}: rows out of order"
                top = max((e.sequence for e in held), default=0)
                assert top <= box.last_sequence, (
                    f"kill {kill}: holds {top} above its last sequence {box.last_sequence}"
                )
                given = box.append_many(readings(99)[:5])
                assert not set(given) & {e.sequence for e in held}, f"kill {kill}: reused"
    # The damage this test is about did happen (else it would prove nothing).
    assert damaged > 0


def test_an_append_that_meets_damage_is_made_on_the_recovered_outbox(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "outbox.db"
    alarms, _ = cabinet_backlog(path, clock)
    garble_leaf(path, "metering_lane", index=-1)  # where the next reading goes
    with Outbox(path, clock=clock) as box:
        sequence = box.append(reading("lamp-007", T0 + 40 * QUARTER))
        assert box.recovered is not None and box.recovered.outcome is RecoveryOutcome.SALVAGED
        kept = {e.sequence: e for e in everything(box)}
    assert kept[sequence].device_id == "lamp-007"
    assert set(alarms) <= set(kept)
    assert [e.type for e in kept.values()].count("storage.recovered") == 1


def test_a_counter_that_went_back_is_numbered_past_the_orchestrator_and_the_loss_listed(
    outbox: Outbox, tmp_path: Path, clock: ManualClock
) -> None:
    # A state directory restored from an image: this outbox had given up to 10, the
    # orchestrator holds 11-15 and 18-20 from the lost life; 16 and 17 never arrived.
    welcomed(outbox)
    outbox.append_many([event(d, T0) for d in LAMPS[:10]])
    outbox.close()
    outbox = Outbox(tmp_path / "outbox.db", clock=clock)  # the image's run, started again
    settlement = outbox.settle_losses(held=[(11, 15), (18, 20)], stored_sequence=20, hello_last=10)
    assert settlement.rewound and settlement.lost == [(16, 17)]
    kept = everything(outbox)
    rewound = [e for e in kept if e.type == "outbox.rewound"]
    assert len(rewound) == 1 and rewound[0].priority == link_pb2.EVENT_PRIORITY_ALARM
    assert rewound[0].sequence == 21 and rewound[0].attributes["stored_sequence"] == "20"
    assert listed_lost(kept) == {16, 17}
    assert outbox.append(event("lamp-000", T0)) > 21  # never a number the orchestrator holds
    outbox.close()


@pytest.mark.parametrize("runs_before_the_welcome", [1, 2, 3])
def test_numbers_given_again_after_the_disk_went_back_are_moved_and_the_ones_left_listed(
    tmp_path: Path, clock: ManualClock, runs_before_the_welcome: int
) -> None:
    """The long kill storm's "stored and listed as lost": the disk went back to an image
    taken at sequence 20; the lost life had gone on to 40 (the orchestrator stores 21-25
    and 41, a gap event listing 31-38 dropped for room; 26-30 and 39-40 it never heard of).
    Runs after the image number new events from 21 again, some killed before any welcome.
    At the first welcome: none may stay under a number a gap event listed lost (one number
    would name a lost event and a stored one): numbered again; under a held number they
    are sent as they are (the orchestrator acknowledges the same event, reports another
    as conflicting); numbers nobody holds, lists or has pending are the lost life's, lost:
    listed."""
    path, image = tmp_path / "outbox.db", tmp_path / "image.db"
    with Outbox(path, clock=clock) as box:
        welcomed(box)
        box.append_many([event(f"lamp-{i:03d}", T0) for i in range(20)])
    shutil.copy(path, image)  # an image of the stopped agent's disk
    with Outbox(path, clock=clock) as box:  # the lost life
        welcomed(box, stored=20)
        box.append_many([event(f"lost-{i:03d}", T0) for i in range(21)])
    shutil.copy(image, path)  # the image put back
    made: list[str] = []
    for run in range(runs_before_the_welcome):
        with Outbox(path, clock=clock) as box:  # killed (or cut off) before a welcome
            new = [event(f"new-{run}-{i}", T0) for i in range(15 // runs_before_the_welcome)]
            box.append_many(new)
            made += [e.device_id for e in new]
    with Outbox(path, clock=clock) as box:
        hello_last, asked = box.last_sequence, box.held_after()
        assert asked <= 20  # the hello asks about everything numbered since the image
        settlement = box.settle_losses(
            held=[(21, 25), (41, 41)],
            stored_sequence=41,
            hello_last=hello_last,
            asked_after=asked,
            listed_lost=[(31, 38)],
        )
        kept = everything(box)
        assert box.append(event("after", T0)) > max(e.sequence for e in kept)
    assert settlement.rewound and settlement.lost == [(39, 40)]
    assert listed_lost(kept) == {39, 40}  # 31-38 are listed already
    mine = {e.sequence: e.device_id for e in kept if e.device_id.startswith("new-")}
    assert sorted(mine.values()) == sorted(made)  # every one kept, once
    assert not set(mine) & set(range(31, 39)), "under a number listed lost"
    assert set(range(21, 31)) <= set(mine)  # held or unheard of: sent as they are
    assert min(s for s in mine if s > 30) > 41  # the others, past the lost life
    assert [e.type for e in kept].count("outbox.rewound") == 1


def test_events_dropped_before_the_welcome_after_the_disk_went_back_are_listed_under_new_numbers(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The long storm's "promised and neither stored nor listed": after an image was put
    back, a run offline for long dropped for room events it had numbered over numbers the
    lost life gave; the welcome said the orchestrator holds those numbers (other events),
    so the gap event no longer listed them, and the dropped events were accounted nowhere.
    They are listed under fresh numbers, the old ones kept for the record."""
    limits = OutboxLimits(max_disk_bytes=MIB)
    path, image = tmp_path / "outbox.db", tmp_path / "image.db"
    with Outbox(path, clock=clock, limits=limits) as box:
        welcomed(box)
        box.append_many([event(f"lamp-{i:03d}", T0) for i in range(20)])
        box.ack([(1, 20)])  # delivered: nothing old left to drop first
    shutil.copy(path, image)
    lost_life = (21, 5000)  # what the orchestrator holds from the lost life
    shutil.copy(image, path)
    with Outbox(path, clock=clock, limits=limits) as box:
        _fill(box, clock, quarters=80, with_events=False)  # offline: drops its own
        dropped = _dropped_by_gaps(gaps(everything(box)))
        assert dropped and min(dropped) <= lost_life[1], "dropped numbers the lost life gave"
        pending = len(everything(box))
        settlement = box.settle_losses(
            held=[lost_life],
            stored_sequence=lost_life[1],
            hello_last=box.last_sequence,
            asked_after=box.held_after(),
        )
        kept = everything(box)
    moved = listed_lost(gaps(kept), "numbered_before")
    assert moved == dropped  # every dropped event had a number the lost life gave ...
    listed = listed_lost(gaps(kept))
    fresh = {n for n in listed if n > lost_life[1]}
    assert len(fresh) == len(dropped)  # ... and is listed once, under a fresh number
    assert not listed & set(range(*lost_life)), "a number the orchestrator holds, listed"
    # None lost, one rewound alarm.
    mine = [e for e in kept if e.type == "energy_interval"]
    assert len(mine) + len([e for e in kept if e.device_id == "outbox"]) == len(kept)
    assert len(kept) >= pending
    assert settlement.rewound


def test_a_restart_without_a_disk_going_back_renumbers_nothing(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, clock=clock) as box:
        welcomed(box)
        box.append_many([event(f"lamp-{i:03d}", T0) for i in range(10)])
        box.ack([(1, 6)])  # the orchestrator stores 1-6
    for _ in range(2):  # a kill before the welcome, then a start that gets one
        with Outbox(path, clock=clock) as box:
            box.append(event("lamp-100", T0))
    with Outbox(path, clock=clock) as box:
        before = everything(box)
        settlement = box.settle_losses(
            held=[], stored_sequence=6, hello_last=box.last_sequence, asked_after=box.held_after()
        )
        assert settlement == loss.Settlement(lost=[], rewound=False)
        assert everything(box) == before
    with Outbox(path, clock=clock) as box:  # welcomed: the next start asks from its own last
        assert box.held_after() >= 6


def test_conflicting_sequences_are_recorded_again_under_new_ones_with_an_alarm(
    outbox: Outbox,
) -> None:
    sent = outbox.append_many([event(d, T0, f"#{d}") for d in LAMPS[:5]])
    originals = {e.sequence: e for e in outbox.next_batch(10, 10**6)}
    moved = outbox.reissue([(2, 3)], conflict=True)
    assert moved == [6, 7]
    outbox.ack([(1, 5)])  # the orchestrator's ack covers the conflicting ones too
    kept = {e.sequence: e for e in everything(outbox)}
    assert sorted(kept) == [6, 7, 8]
    for old, new in zip((2, 3), moved, strict=True):
        copy = link_pb2.Event()
        copy.CopyFrom(kept[new])
        # The copy says the number it was first recorded under (so the orchestrator can
        # tell this event from another it may deliver again under that number).
        assert copy.first_sequence == old
        copy.sequence = old
        copy.ClearField("first_sequence")
        assert copy == originals[old]
    assert kept[8].type == "outbox.conflict" and kept[8].attributes["sequences"] == "2-3"
    assert sent == [1, 2, 3, 4, 5]
    # A copy of a copy keeps the first number.
    assert outbox.reissue([(6, 6)]) == [9]
    assert {e.sequence: e.first_sequence for e in everything(outbox)}[9] == 2


def test_what_was_sent_is_never_dropped_even_after_the_stream_broke_and_a_restart(
    tmp_path: Path, clock: ManualClock
) -> None:
    limits = OutboxLimits(max_disk_bytes=MIB)
    path = tmp_path / "outbox.db"
    with Outbox(path, clock=clock, limits=limits) as box:
        _fill(box, clock, quarters=10, with_events=False)
        # Sent on a stream that then broke: the acknowledgements never came back (the
        # orchestrator may well hold these).
        sent = {e.sequence for e in box.next_batch(600, 10**9)}
        box.requeue_in_flight()
    with Outbox(path, clock=clock, limits=limits) as box:  # and the agent restarted
        _fill(box, clock, quarters=70, with_events=False)
        kept = everything(box)
    dropped = _dropped_by_gaps(gaps(kept))
    assert dropped, "the budget should have been exceeded"
    assert not dropped & sent
    assert sent <= {e.sequence for e in kept}


@pytest.mark.parametrize("image_of", ["a crash", "a stopped agent"])
def test_events_sent_since_an_image_of_the_disk_are_never_listed_lost(
    tmp_path: Path, clock: ManualClock, image_of: str
) -> None:
    """The kill storm's "stored and listed as lost": events were sent and stored, then the
    disk went back to an image taken before the send (a crash that dropped the last
    transactions, or a state directory restored from an image of a stopped agent, which
    looks like a plain restart) and forgot that they were sent; a full outbox dropped them
    for room and listed them lost, once between the hello and its welcome, once after."""
    limits = OutboxLimits(max_disk_bytes=MIB)
    path = tmp_path / "outbox.db"
    image = tmp_path / "image"
    image.mkdir()
    with Outbox(path, clock=clock, limits=limits) as box:
        _fill(box, clock, quarters=10, with_events=False)
    with Outbox(path, clock=clock, limits=limits) as box:
        box.append_many([reading(LAMPS[0], clock.now())])
        suffixes = ("", "-wal") if image_of == "a crash" else ("",)
        if image_of == "a stopped agent":
            box.close()  # stopped cleanly: the image has no log
            shutil.copy(path, image / "outbox.db")
            box = Outbox(path, clock=clock, limits=limits)
        else:
            for suffix in suffixes:  # the files as a power cut will leave them
                shutil.copy(f"{path}{suffix}", image / f"outbox.db{suffix}")
        sent = {e.sequence for e in box.next_batch(600, 10**9)}  # delivered and stored
        stored = max(sent)
        box.close()
    Path(f"{path}-wal").unlink(missing_ok=True)
    for suffix in suffixes:
        shutil.copy(image / f"outbox.db{suffix}", f"{path}{suffix}")
    with Outbox(path, clock=clock, limits=limits) as box:
        box.requeue_in_flight()  # a stream starts
        asked = box.held_after()
        assert asked < min(sent)  # the hello asks about the events not known as sent
        hello_last = box.last_sequence
        # Readings keep coming while the hello waits for its welcome: dropped for room,
        # those sent are listed (nobody knows yet), and the welcome's answer corrects that.
        for _ in range(70):
            clock.advance(QUARTER.total_seconds())
            box.append_many([reading(d, clock.now()) for d in LAMPS])
        box.settle_losses(
            held=[(min(sent), stored)],
            stored_sequence=stored,
            hello_last=hello_last,
            asked_after=asked,
        )
        _fill(box, clock, quarters=70, with_events=False)  # and after the welcome
        kept = everything(box)
    dropped = _dropped_by_gaps(gaps(kept))
    assert dropped, "the budget should have been exceeded"
    assert not dropped & sent


def test_a_gap_event_not_yet_sent_lists_nothing_the_orchestrator_holds(
    tmp_path: Path, clock: ManualClock
) -> None:
    # After a disk went back (an older image), events sent since are no longer known as
    # sent: dropped for room, they are listed; the welcome's list corrects that.
    limits = OutboxLimits(max_disk_bytes=MIB)
    with Outbox(tmp_path / "outbox.db", clock=clock, limits=limits) as box:
        welcomed(box)
        _fill(box, clock, quarters=80, with_events=False)
    with Outbox(tmp_path / "outbox.db", clock=clock, limits=limits) as box:  # the next start
        dropped = _dropped_by_gaps(gaps(everything(box)))
        assert dropped
        asked = box.held_after()
        assert asked < min(dropped)  # the hello asks about every listed sequence
        held = sorted(dropped)[::2]
        box.settle_losses(
            held=[(s, s) for s in held],
            stored_sequence=box.last_sequence,
            hello_last=box.last_sequence,
            asked_after=asked,
        )
        corrected = gaps(everything(box))
    assert _dropped_by_gaps(corrected) == dropped - set(held)
    assert sum(int(g.attributes["dropped"]) for g in corrected) == len(dropped) - len(held)
    assert sum(int(g.attributes.get("held_by_orchestrator", "0")) for g in corrected) == len(held)


def test_a_second_agent_cannot_open_the_same_outbox(outbox: Outbox, tmp_path: Path) -> None:
    outbox.append(alarm("lamp-1", T0))
    with pytest.raises(OutboxError, match="another process"):
        Outbox(tmp_path / "outbox.db", clock=ManualClock(T0))


# Power cuts ------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_during_heavy_recording_loses_and_duplicates_nothing(
    tmp_path: Path, kill_after: Any
) -> None:
    path = tmp_path / "outbox.db"

    def writer(report: Any) -> None:
        rng = random.Random()
        clock = ManualClock(T0)
        with Outbox(path, clock=clock) as box:
            n = 0
            while True:
                size = rng.choice([1, 1, 5, 20, 60])
                priorities = [rng.choice(list(Priority)) for _ in range(size)]
                marks = [f"{box.last_sequence}.{n + i}" for i in range(size)]
                batch = [
                    EquipmentEvent("lamp-1", "test", p, T0, "", {"mark": m})
                    for p, m in zip(priorities, marks, strict=True)
                ]
                n += size
                sequences = box.append(batch[0]) if size == 1 else box.append_many(batch)
                if isinstance(sequences, int):
                    sequences = [sequences]
                report(" ".join(f"{s}={m}" for s, m in zip(sequences, marks, strict=True)))

    rng = random.Random(7)
    promised: dict[int, str] = {}
    for _ in range(30):
        for line in kill_after(writer, rng.randint(1, 12)):
            for pair in line.split():
                seq, mark = pair.split("=")
                assert int(seq) not in promised, "a sequence number was given twice"
                promised[int(seq)] = mark
        with Outbox(path, clock=ManualClock(T0)) as box:
            assert box.recovered is None
            stored = everything(box)
            last = box.last_sequence
        marks = [e.attributes["mark"] for e in stored]
        assert len(set(marks)) == len(marks), "an event is stored twice"
        assert sorted(e.sequence for e in stored) == list(range(1, last + 1))
        by_sequence = {e.sequence: e.attributes["mark"] for e in stored}
        assert all(by_sequence.get(s) == m for s, m in promised.items())
    assert len(promised) > 300


@pytest.mark.slow
def test_sigkill_while_a_full_outbox_drops_keeps_every_drop_accounted_for(
    tmp_path: Path, kill_after: Any
) -> None:
    path = tmp_path / "outbox.db"
    limits = OutboxLimits(max_disk_bytes=MIB)

    def writer(report: Any) -> None:
        rng = random.Random()
        with Outbox(path, clock=ManualClock(T0), limits=limits) as box:
            n = 0
            while True:
                size = rng.choice([1, 5, 20, 60])
                kinds = rng.choices(
                    [Priority.ALARM, Priority.EVENT, Priority.METERING], [1, 3, 16], k=size
                )
                marks = [f"{p.name}.{box.last_sequence}.{n + i}" for i, p in enumerate(kinds)]
                n += size
                sequences = box.append_many(
                    EquipmentEvent("lamp-1", "test", p, T0, WORDY, {"mark": m})
                    for p, m in zip(kinds, marks, strict=True)
                )
                report(" ".join(f"{s}={m}" for s, m in zip(sequences, marks, strict=True)))

    rng = random.Random(11)
    promised: dict[int, str] = {}
    for _ in range(15):
        for line in kill_after(writer, rng.randint(3, 12)):
            for pair in line.split():
                seq, mark = pair.split("=")
                promised[int(seq)] = mark
        with Outbox(path, clock=ManualClock(T0), limits=limits) as box:
            stored = everything(box)
            last = box.last_sequence
        gap_events = gaps(stored)
        present = {e.sequence: e.attributes["mark"] for e in stored if e.type == "test"}
        dropped = sum(int(g.attributes["dropped"]) for g in gap_events)
        # Each sequence is stored once or counted once by a gap event, never both nor neither.
        assert len(stored) + dropped == last
        assert len(set(present.values())) == len(present)
        lane_bounds = [
            (
                f"{name}.",
                int(g.attributes[f"{name}.first_sequence"]),
                int(g.attributes[f"{name}.last_sequence"]),
            )
            for g in gap_events
            for name in ("metering", "event")
            if f"{name}.dropped" in g.attributes
        ]
        for seq, mark in promised.items():
            if seq in present:
                assert present[seq] == mark
            else:
                assert not mark.startswith("ALARM"), "an alarm was dropped"
                lane = mark.split(".")[0].lower() + "."
                assert any(p == lane and a <= seq <= b for p, a, b in lane_bounds)
    assert gap_events, "the budget should have been exceeded"
