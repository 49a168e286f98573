"""A 100-lamp cabinet cut off from the orchestrator: a week within the disk budget, then a
full outbox that drops the oldest metering and says so.

The real agent runs in-process on a manual clock moved a quarter hour at a time (one
monitoring pass, one metering record per lamp), behind a proxy that refuses every
connection until the link comes back. One lamp fails and recovers every six hours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

import pytest

from edge.events import Priority
from edge.storage.overflow import MIB
from protos.ondijon.v1 import control_pb2, link_pb2
from tests.conftest import City
from tests.nothing_lost.harness import (
    LAMPS,
    gateway,
    offline_cabinet,
    reconnect_and_drain,
    stored_events,
)

pytestmark = pytest.mark.integration


def received(events: Iterable[control_pb2.StoredEvent], priority: int) -> list[datetime]:
    return [e.received_at.ToDatetime() for e in events if e.event.priority == priority]


@pytest.mark.slow
async def test_a_week_offline_fits_the_budget_and_drains_in_order_alarms_first(
    city: City, lamp_table: Callable[[int], str]
) -> None:
    config = await city.enrolled("nl-week", lamps=lamp_table(LAMPS))
    async with offline_cabinet(city, config) as cabinet:
        outbox = cabinet.agent.outbox
        peak = 0

        def within_budget() -> None:
            nonlocal peak
            peak = max(peak, outbox.disk_bytes)
            assert outbox.disk_bytes <= 64 * MIB

        await cabinet.offline_quarters(4 * 24 * 7, check=within_budget)
        assert cabinet.proxy.connections == 0
        last = outbox.last_sequence
        assert outbox.pending_count == last == len(cabinet.recorded)
        alarms = [s for s, p in cabinet.recorded.items() if p is Priority.ALARM]
        assert len(alarms) == 14  # the lamp failed 14 times in the week
        assert sum(p is Priority.METERING for p in cabinet.recorded.values()) == LAMPS * 672

        await reconnect_and_drain(cabinet)

    events = await stored_events(city, "nl-week")
    assert [e.event.sequence for e in events] == list(range(1, last + 1))
    g = await gateway(city, "nl-week")
    assert g.stored_sequence == last and not g.missing
    # Alarms went first, then events, then the metering backlog, each lane in order.
    alarm_at = received(events, link_pb2.EVENT_PRIORITY_ALARM)
    event_at = received(events, link_pb2.EVENT_PRIORITY_EVENT)
    metering_at = received(events, link_pb2.EVENT_PRIORITY_METERING)
    assert max(alarm_at) <= min(event_at) and max(event_at) <= min(metering_at)
    for lane in (alarm_at, event_at, metering_at):
        assert lane == sorted(lane)
    assert min(metering_at) < max(metering_at)  # it took several batches: order was tested
    assert peak > 4 * MIB  # a real week of readings was held


async def test_a_full_outbox_drops_oldest_metering_and_the_gap_shows_at_the_orchestrator(
    city: City, lamp_table: Callable[[int], str]
) -> None:
    config = await city.enrolled("nl-full", lamps=lamp_table(LAMPS), outbox=f"max_bytes = {MIB}")
    async with offline_cabinet(city, config) as cabinet:
        outbox = cabinet.agent.outbox

        def within_budget() -> None:
            assert outbox.disk_bytes <= MIB

        await cabinet.offline_quarters(4 * 24 * 2, check=within_budget)
        last = outbox.last_sequence
        held = outbox.pending_count
        assert held < len(cabinet.recorded)  # the budget was hit: readings were dropped
        await reconnect_and_drain(cabinet)

    events = await stored_events(city, "nl-full")
    stored = {e.event.sequence: e.event for e in events}
    gaps = [e for e in stored.values() if e.type == "outbox.gap"]
    assert gaps, "no outbox.gap event reached the orchestrator"
    assert all(g.priority == link_pb2.EVENT_PRIORITY_EVENT for g in gaps)

    # The gateway's missing ranges are exactly what the gap events say was dropped.
    said: list[tuple[int, int]] = []
    for gap in gaps:
        assert "sequences_truncated" not in gap.attributes
        for part in gap.attributes["sequences"].split(","):
            first, _, end = part.partition("-")
            said.append((int(first), int(end or first)))
    g = await gateway(city, "nl-full")
    missing = [(r.first, r.last) for r in g.missing]
    assert missing == merged(said)
    dropped = {s for a, b in missing for s in range(a, b + 1)}
    assert len(dropped) == sum(int(gap.attributes["dropped"]) for gap in gaps)
    assert len(stored) + len(dropped) == last == g.stored_sequence
    # Only metering went, the oldest first; every alarm and event is there.
    assert {cabinet.recorded.get(s) for s in dropped} == {Priority.METERING}
    for sequence, priority in cabinet.recorded.items():
        if priority is not Priority.METERING:
            assert sequence in stored
    kept_metering = [s for s, p in cabinet.recorded.items() if p is Priority.METERING]
    assert max(dropped) < min(s for s in kept_metering if s not in dropped)


def merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out
