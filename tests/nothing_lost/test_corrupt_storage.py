"""An agent that finds its state file (or its outbox) ruined on start keeps the street
running, recovers what it can, and tells the control centre.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from edge.agent import Agent
from edge.config import AgentConfig
from edge.equipment.base import EquipmentEvent, Priority
from edge.link import Backoff
from ondijon.admin import call
from ondijon.clock import ManualClock
from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2
from tests.conftest import City
from tests.nothing_lost.harness import LinkProxy, eventually, gateway, stored_events

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 21, 20, 0, tzinfo=UTC)


def lighting(level: int) -> bytes:
    """A schedule holding every lamp at ``level`` all day."""
    return schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="all-day",
                points=[schedule_pb2.SwitchPoint(local_time="00:00", lamp_level=level)],
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="all-day", priority=1)],
    ).SerializeToString()


@contextlib.asynccontextmanager
async def running(config: AgentConfig, address: str) -> AsyncIterator[Agent]:
    agent = Agent(dataclasses.replace(config, address=address), ManualClock(T0))
    agent.link.backoff = Backoff(base_s=0.05, cap_s=0.3)
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def street_at_40(city: City, config: AgentConfig) -> int:
    """Run the agent until it holds and applies a 40 % schedule, then stop it cleanly."""
    response = await call(
        city.admin,
        "PutDesiredState",
        control_pb2.PutDesiredStateRequest(
            gateway_id=config.gateway_id,
            kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
            payload=lighting(40),
        ),
    )
    assert isinstance(response, control_pb2.PutDesiredStateResponse)
    async with running(config, config.address) as agent:
        await eventually(lambda: all(lamp.controller.level == 40 for lamp in agent.lamps))
        await eventually(lambda: agent.outbox.pending_count == 0)
    return response.document.version


RUIN = {
    "torn": lambda data: data[: len(data) // 2],
    "garbage": lambda data: b"\x00\xff not json at all \x13" * 20,
    "empty": lambda data: b"",
}


@pytest.mark.parametrize("ruin", sorted(RUIN))
async def test_a_ruined_state_file_is_recovered_reported_and_the_street_stays_lit(
    city: City, lamp_table: Callable[[int], str], ruin: str
) -> None:
    config = await city.enrolled(f"nl-state-{ruin}", lamps=lamp_table(3))
    version = await street_at_40(city, config)
    state_file = config.state_dir / "state.json"
    state_file.write_bytes(RUIN[ruin](state_file.read_bytes()))

    async with LinkProxy(lambda: city.running.port) as proxy:
        proxy.online = False  # the street must not need the orchestrator to recover
        async with running(config, proxy.address) as agent:
            await eventually(lambda: all(lamp.controller.level == 40 for lamp in agent.lamps))
            held = agent.state.document(link_pb2.DOCUMENT_KIND_SCHEDULE)
            assert held is not None and held.version == version
            proxy.online = True
            await eventually(lambda: agent.outbox.pending_count == 0)
            sessions = agent.link.status.sessions
        assert sessions >= 1

    events = await stored_events(city, config.gateway_id)
    recovered = [e.event for e in events if e.event.type == "storage.recovered"]
    assert len(recovered) == 1
    assert "state.json" in recovered[0].message
    assert "restored_from_backup" in recovered[0].message
    g = await gateway(city, config.gateway_id)
    assert not g.missing and g.stored_sequence == events[-1].event.sequence
    # Nothing had to be sent again: the recovered file still held the schedule.
    applied = [e for e in events if e.event.type == "document.applied"]
    assert len(applied) == 1
    assert (config.state_dir / "state.json.corrupt").exists()


async def test_a_ruined_outbox_is_set_aside_reported_and_new_events_are_not_taken_for_old(
    city: City, lamp_table: Callable[[int], str]
) -> None:
    config = await city.enrolled("nl-outbox", lamps=lamp_table(3))
    await street_at_40(city, config)
    before = await gateway(city, config.gateway_id)
    assert before.stored_sequence >= 1
    outbox_file = config.state_dir / "outbox.sqlite"
    outbox_file.write_bytes(b"the SD card returned garbage" * 200)

    # First start offline: the new outbox numbers from 1, over what the orchestrator
    # holds; then a restart, still before any welcome, must not forget that.
    async with LinkProxy(lambda: city.running.port) as proxy:
        proxy.online = False
        async with running(config, proxy.address) as agent:
            assert agent.outbox.recovered is not None
            await eventually(lambda: all(lamp.controller.level == 40 for lamp in agent.lamps))
            assert agent.outbox.pending_count >= 1
            agent.record(lamp_event("lamp-002", agent))
    async with running(config, config.address) as agent:
        assert agent.outbox.recovered is None
        await eventually(lambda: agent.link.status.sessions >= 1)
        await eventually(lambda: agent.outbox.pending_count == 0)

    events = await stored_events(city, config.gateway_id)
    recovered = [e.event for e in events if e.event.type == "storage.recovered"]
    assert len(recovered) == 1 and "outbox.sqlite" in recovered[0].message
    assert recovered[0].priority == link_pb2.EVENT_PRIORITY_ALARM  # its content is lost
    assert recovered[0].sequence > before.stored_sequence
    marked = [e.event for e in events if e.event.type == "test.offline"]
    assert len(marked) == 1 and marked[0].sequence > before.stored_sequence
    g = await gateway(city, config.gateway_id)
    assert g.stored_sequence == events[-1].event.sequence


def lamp_event(device_id: str, agent: Agent) -> EquipmentEvent:
    return EquipmentEvent(device_id, "test.offline", Priority.EVENT, agent.clock.now())
