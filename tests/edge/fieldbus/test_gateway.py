"""The agent's field-bus connection (:class:`edge.fieldbus.gateway.FieldBus`) on a real
Mosquitto: what its own loops do when the agent stops."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from edge.events import EquipmentEvent
from edge.fieldbus.gateway import FieldBus, FieldbusConfig
from foundation.clock import ManualClock
from tests.edge.fieldbus.conftest import T0, Cabinet

pytestmark = [pytest.mark.integration, pytest.mark.mqtt]


async def test_a_stop_that_comes_with_a_wake_up_still_stops_the_field_bus(
    cabinet: Cabinet,
) -> None:
    """The agent stopping (its tasks cancelled) in the very loop iteration a lamp's new
    level wakes the publisher: Python 3.11's ``asyncio.wait_for`` returned the wake-up and
    dropped the cancellation, so the publisher went on waiting (a minute, and again) and
    the agent's stop never ended (the fieldbus agent test's timeouts under load)."""
    events: list[EquipmentEvent] = []
    fieldbus = FieldBus(
        FieldbusConfig(
            cabinet=cabinet.config.cabinet,
            credentials=str(cabinet.directory / "credentials.json"),
            port=cabinet.port,
        ),
        cabinet.config.gateway_password,
        clock=ManualClock(datetime.fromtimestamp(T0, UTC)),
        record=events.append,
        nodes=["n-0001"],
    )
    for attempt in range(3):
        task = asyncio.create_task(fieldbus.run())
        await asyncio.wait_for(fieldbus.connected.wait(), 10)
        for _ in range(20):  # the heartbeat and programs go out; the publisher waits
            await asyncio.sleep(0.01)
        fieldbus.command("n-0001", 40 + attempt)  # wakes the publisher...
        task.cancel()  # ...in the iteration the stop comes
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done, f"attempt {attempt}: the field bus ignored the stop"
    assert not [e for e in events if e.type == "fieldbus.refused"]


async def test_each_broker_restart_is_retried_after_the_first_backoff_again(
    cabinet: Cabinet,
) -> None:
    """A session that was connected resets the backoff: a broker restarted now and then
    (an update, a power cut of its own) costs a second each time, not 2, 4 ... 30 s."""
    clock = ManualClock(datetime.fromtimestamp(T0, UTC))
    fieldbus = FieldBus(
        FieldbusConfig(
            cabinet=cabinet.config.cabinet,
            credentials=str(cabinet.directory / "credentials.json"),
            port=cabinet.port,
        ),
        cabinet.config.gateway_password,
        clock=clock,
        record=lambda event: None,
        nodes=["n-0001"],
    )
    task = asyncio.create_task(fieldbus.run())
    try:
        await asyncio.wait_for(fieldbus.connected.wait(), 10)
        for restart in range(1, 4):
            cabinet.running.stop()
            cabinet.restart_broker()
            for _ in range(500):  # the old connection's end is noticed
                if not fieldbus.connected.is_set():
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # the retry is asleep on the agent's clock
            clock.advance(1.0)  # the first backoff, and no more
            for _ in range(500):
                if fieldbus.connected.is_set():
                    break
                await asyncio.sleep(0.01)
            assert fieldbus.connections == 1 + restart, f"not back after restart {restart}"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
