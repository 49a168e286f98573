"""A live alarm is not starved by a backlog draining: a 100-lamp cabinet back after a day
offline (9,600 metering records) drains within the orchestrator's window, and a lamp that
fails meanwhile reaches the control centre long before the backlog is through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from edge.events import Priority
from protos.ondijon.v1 import link_pb2
from tests.conftest import City
from tests.nothing_lost.harness import LAMPS, gateway, offline_cabinet, stored_events

pytestmark = pytest.mark.integration

WINDOW = 1000  # orchestrator.config.Limits.event_window, the default the city runs with


async def test_an_alarm_raised_while_a_day_of_backlog_drains_overtakes_it(
    city: City, lamp_table: Callable[[int], str]
) -> None:
    config = await city.enrolled("nl-alarm", lamps=lamp_table(LAMPS))
    async with offline_cabinet(city, config) as cabinet:
        await cabinet.offline_quarters(4 * 24, check=lambda: None, flapping=False)
        outbox = cabinet.agent.outbox
        backlog = outbox.pending_count
        assert backlog == LAMPS * 96

        cabinet.proxy.online = True
        in_flight_peak = 0
        while outbox.pending_count > backlog - 400:  # the drain is under way
            in_flight_peak = max(in_flight_peak, outbox.in_flight_count)
            await asyncio.sleep(0.005)
        # A lamp dies; two monitoring passes later (the fault delay) it is an alarm.
        cabinet.lamp("lamp-013").dead = True
        before = outbox.last_sequence
        for _ in range(2):
            cabinet.clock.advance(30)
            for _ in range(20):
                await asyncio.sleep(0)
        alarms = [s for s, p in cabinet.recorded.items() if p is Priority.ALARM and s > before]
        assert len(alarms) == 1, "the lamp failure was not recorded"
        left_when_raised = outbox.pending_count
        while outbox.pending_count:
            in_flight_peak = max(in_flight_peak, outbox.in_flight_count)
            await asyncio.sleep(0.005)
        last = outbox.last_sequence

    events = await stored_events(city, "nl-alarm")
    assert [e.event.sequence for e in events] == list(range(1, last + 1))
    alarm = events[alarms[0] - 1]
    assert alarm.event.type == "lamp_failure"
    assert alarm.event.priority == link_pb2.EVENT_PRIORITY_ALARM
    after_alarm = [
        e
        for e in events
        if e.event.priority == link_pb2.EVENT_PRIORITY_METERING
        and e.received_at.ToDatetime() > alarm.received_at.ToDatetime()
    ]
    # When the alarm was raised most of the backlog was still waiting; the alarm went
    # out within a window's worth of it, and the rest came after.
    assert left_when_raised > backlog // 2
    assert len(after_alarm) >= left_when_raised - 2 * WINDOW
    # Flow control: never more in flight than the orchestrator's window.
    assert 0 < in_flight_peak <= WINDOW
    g = await gateway(city, "nl-alarm")
    assert g.stored_sequence == last and not g.missing
