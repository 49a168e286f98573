"""The agent against a real orchestrator over mutual TLS on loopback.

A gateway is registered through the admin API, enrolls with its token, connects, receives
a lighting schedule pushed by an operator, stores it before acknowledging it, drives its
(simulated) lamps and reports them; it keeps running and reconnects when the orchestrator
restarts, without being sent again what it already holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from edge.agent import Agent
from edge.config import AgentConfig
from foundation.clock import ManualClock
from ondijon.client import AdminClient
from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2
from tests.conftest import City
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def lighting(level: int) -> bytes:
    """A schedule whose only program holds every lamp at ``level`` all day."""
    schedule = schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="all-day",
                points=[schedule_pb2.SwitchPoint(local_time="00:00", lamp_level=level)],
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="all-day", priority=1)],
    )
    return schedule.SerializeToString()


@contextlib.asynccontextmanager
async def running(
    config: AgentConfig, *, clock_step_s: float = 0.0, start: datetime | None = None
) -> AsyncIterator[Agent]:
    """Run an agent on a manual clock from ``start`` (default: a June evening); with
    ``clock_step_s`` the clock moves that much every 10 ms of real time (equipment
    simulators need time to pass)."""
    clock = ManualClock(start or datetime(2026, 6, 21, 20, 0, tzinfo=UTC))
    agent = Agent(config, clock)
    task = asyncio.create_task(agent.run())

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.01)
            clock.advance(clock_step_s)

    ticker = asyncio.create_task(tick()) if clock_step_s else None
    try:
        yield agent
    finally:
        for running_task in (task, ticker):
            if running_task is not None:
                running_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running_task


async def put_schedule(city: City, gateway_id: str, payload: bytes) -> int:
    response = await AdminClient(city.admin).put_desired_state(
        control_pb2.PutDesiredStateRequest(
            gateway_id=gateway_id, kind=link_pb2.DOCUMENT_KIND_SCHEDULE, payload=payload
        ),
    )
    return response.document.version


async def gateway(city: City, gateway_id: str) -> control_pb2.Gateway:
    response = await AdminClient(city.admin).get_gateway(
        control_pb2.GetGatewayRequest(gateway_id=gateway_id)
    )
    return response.gateway


async def test_schedule_reaches_lamps_and_state_comes_back(
    city: City, lamp_table: Callable[[int], str]
) -> None:
    config = await city.enrolled("dj-001", lamps=lamp_table(3))
    async with running(config) as agent:
        await asyncio.wait_for(agent.link.status.connected.wait(), 15)
        version = await put_schedule(city, "dj-001", lighting(40))

        await eventually(lambda: all(lamp.controller.level == 40 for lamp in agent.lamps))
        # Stored before acknowledged: the agent's own disk holds the version the
        # orchestrator now records as held.
        held = agent.state.document(link_pb2.DOCUMENT_KIND_SCHEDULE)
        assert held is not None and held.version == version

        async def converged() -> bool:
            g = await gateway(city, "dj-001")
            return bool(g.held) and g.held[0].version == version and g.connected

        for _ in range(200):
            if await converged():
                break
            await asyncio.sleep(0.05)
        assert await converged()

        async def lamp_levels() -> dict[str, int]:
            response = await AdminClient(city.admin).list_devices(
                control_pb2.ListDevicesRequest(gateway_id="dj-001")
            )
            return {d.device_id: d.lamp.level for d in response.devices if d.HasField("lamp")}

        for _ in range(200):
            if await lamp_levels() == {"lamp-001": 40, "lamp-002": 40, "lamp-003": 40}:
                break
            await asyncio.sleep(0.05)
        assert await lamp_levels() == {"lamp-001": 40, "lamp-002": 40, "lamp-003": 40}


async def test_agent_survives_orchestrator_restart_without_resending(
    city: City, lamp_table: Callable[[int], str]
) -> None:
    config = await city.enrolled("dj-002", lamps=lamp_table(2))
    async with running(config) as agent:
        agent.link.backoff = type(agent.link.backoff)(base_s=0.05, cap_s=0.2)
        await asyncio.wait_for(agent.link.status.connected.wait(), 15)
        await put_schedule(city, "dj-002", lighting(70))
        await eventually(lambda: all(lamp.controller.level == 70 for lamp in agent.lamps))
        applied_before = agent.outbox.last_sequence
        sessions = agent.link.status.sessions

        await city.restart()
        # The street does not notice: lamps hold their level while the link is down.
        assert all(lamp.controller.level == 70 for lamp in agent.lamps)
        await eventually(lambda: agent.link.status.sessions > sessions, timeout=30)

        # Reconnecting re-sent nothing already held: no second "document.applied".
        g = await gateway(city, "dj-002")
        assert g.connected
        events = await AdminClient(city.admin).list_events(
            control_pb2.ListEventsRequest(gateway_id="dj-002")
        )
        applied = [e for e in events.events if e.event.type == "document.applied"]
        assert len(applied) <= 1
        assert agent.outbox.last_sequence == applied_before
