"""An agent that finds its state file (or its outbox) ruined on start keeps the street
running, recovers what it can, and tells the control centre.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.agent import Agent
from edge.config import AgentConfig
from edge.events import EquipmentEvent, Priority
from edge.link import Backoff
from foundation.clock import ManualClock
from ondijon.client import AdminClient
from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2
from tests.conftest import City
from tests.nothing_lost.agent_driver import event_fingerprint, wire_fingerprint
from tests.nothing_lost.damage import garble_leaf, restore_image, take_image
from tests.nothing_lost.harness import (
    LinkProxy,
    gateway,
    listed_lost,
    stored_events,
)
from tests.waiting import eventually

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
    await asyncio.sleep(0)  # started, so that cancelling it closes its files
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def street_at_40(city: City, config: AgentConfig) -> int:
    """Run the agent until it holds and applies a 40 % schedule, then stop it cleanly."""
    response = await AdminClient(city.admin).put_desired_state(
        control_pb2.PutDesiredStateRequest(
            gateway_id=config.gateway_id,
            kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
            payload=lighting(40),
        ),
    )
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


def readings(agent: Agent, count: int, start: int = 0) -> list[EquipmentEvent]:
    at = agent.clock.now()
    return [
        EquipmentEvent(
            f"lamp-{i % 3 + 1:03d}", "energy_interval", Priority.METERING, at, "", {"n": str(i)}
        )
        for i in range(start, start + count)
    ]


def recording(agent: Agent) -> dict[int, str]:
    """sequence -> fingerprint of every event the agent's outbox takes from now on."""
    taken: dict[int, str] = {}
    append_many = agent.outbox.append_many

    def wrapped(events: Iterable[EquipmentEvent]) -> list[int]:
        listed = list(events)
        sequences = append_many(listed)
        taken.update(zip(sequences, map(event_fingerprint, listed), strict=True))
        return sequences

    agent.outbox.append_many = wrapped  # type: ignore[method-assign]
    return taken


async def test_a_page_garbled_under_a_running_agent_is_recovered_and_the_loss_listed_exactly(
    city: City, lamp_table: Callable[[int], str]
) -> None:
    config = await city.enrolled("nl-garbled", lamps=lamp_table(3))
    # A backlog built offline (several pages of metering), then the agent stops.
    async with LinkProxy(lambda: city.running.port) as proxy:
        proxy.online = False
        async with running(config, proxy.address) as agent:
            taken = recording(agent)
            for chunk in range(6):
                agent.outbox.append_many(readings(agent, 200, chunk * 200))
            last_before = agent.outbox.last_sequence
    outbox_file = config.state_dir / "outbox.sqlite"
    garble_leaf(outbox_file, "metering_lane", index=4)

    async with running(config, config.address) as agent:
        assert agent.outbox.recovered is None  # opening does not notice
        more = recording(agent)
        # Delivery goes on past the damage (it used to stop there, silently, for good):
        # the stream that met it was closed and another opened.
        await eventually(lambda: agent.outbox.pending_count == 0, timeout=30)
        assert agent.link.status.sessions >= 1
        assert agent.link.status.storage_recoveries == 1  # the local alarm
        assert "malformed" in agent.link.status.storage_alarm
        last = agent.outbox.last_sequence

    events = await stored_events(city, config.gateway_id)
    stored = {e.event.sequence: e for e in events}
    lost = listed_lost(e.event for e in events)
    # Exact accounting: every sequence given is stored or listed as lost, never both.
    assert set(stored) | lost == set(range(1, last + 1))
    assert not set(stored) & lost
    assert 0 < len(lost) < 100  # one page, not the backlog
    assert lost <= set(taken) and max(lost) <= last_before
    for sequence, fp in (taken | more).items():
        if sequence in stored:
            assert wire_fingerprint(stored[sequence].event) == fp
    recovered = [e.event for e in events if e.event.type == "storage.recovered"]
    assert len(recovered) == 1 and recovered[0].attributes["outcome"] == "salvaged"
    assert (config.state_dir / "outbox.sqlite.corrupt").exists()


async def test_a_state_directory_restored_from_an_image_loses_no_new_event(
    city: City, lamp_table: Callable[[int], str], tmp_path: Path
) -> None:
    config = await city.enrolled("nl-image", lamps=lamp_table(3))
    image = tmp_path / "image"
    async with running(config, config.address) as agent:
        agent.outbox.append_many(readings(agent, 50))
        await eventually(lambda: agent.outbox.pending_count == 0)
    take_image(config.state_dir, image)  # the installer's SD card image
    async with running(config, config.address) as agent:
        agent.outbox.append_many(readings(agent, 120, 50))  # a later life, delivered
        await eventually(lambda: agent.outbox.pending_count == 0)
        stored_before = agent.outbox.last_sequence
    before = {e.event.sequence: e for e in await stored_events(city, config.gateway_id)}
    restore_image(image, config.state_dir)

    async with LinkProxy(lambda: city.running.port) as proxy:
        proxy.online = False  # events recorded before the orchestrator is reached again
        async with running(config, proxy.address) as agent:
            assert agent.outbox.last_sequence < stored_before  # the counter went back
            new = recording(agent)
            agent.outbox.append_many(readings(agent, 40, 1000))
            proxy.online = True
            await eventually(lambda: agent.outbox.pending_count == 0, timeout=30)
            new_fingerprints = set(new.values())
            alarm = agent.link.status.__dict__.get("storage_alarm", "")

    events = await stored_events(city, config.gateway_id)
    stored = {e.event.sequence: e for e in events}
    # What the orchestrator held is untouched; every event of the restored agent arrived.
    assert {s: stored[s] for s in before} == before
    arrived = {wire_fingerprint(e.event) for e in events}
    assert new_fingerprints <= arrived
    assert "older state" in alarm  # the local alarm
    rewound = [e.event for e in events if e.event.type == "outbox.rewound"]
    assert len(rewound) == 1 and rewound[0].attributes["stored_sequence"] == str(stored_before)
    g = await gateway(city, config.gateway_id)
    assert not g.missing
