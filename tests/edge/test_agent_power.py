"""The live power a map shows: a lit lamp's state, as the orchestrator holds it, gives the
power the lamp draws now, not the first milliseconds of its warm-up (issue 12)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ondijon.client import AdminClient
from protos.ondijon.v1 import control_pb2
from tests.conftest import City
from tests.edge.test_agent import lighting, put_schedule, running
from tests.waiting import eventually

pytestmark = pytest.mark.integration


async def powers(city: City, gateway_id: str) -> dict[str, float]:
    response = await AdminClient(city.admin).list_devices(
        control_pb2.ListDevicesRequest(gateway_id=gateway_id)
    )
    return {d.device_id: d.lamp.active_power_w for d in response.devices if d.HasField("lamp")}


async def test_a_lit_lamp_reports_its_power_once_warmed_up(
    city: City, lamp_table: Callable[[int], str]
) -> None:
    config = await city.enrolled("pw-001", lamps=lamp_table(2))
    async with running(config) as agent:
        await asyncio.wait_for(agent.link.status.connected.wait(), 15)
        await put_schedule(city, "pw-001", lighting(100))
        await eventually(lambda: all(lamp.controller.level == 100 for lamp in agent.lamps))
        # Switched on at this very instant: the drivers are still warming up.
        await asyncio.sleep(0.3)
        assert all(p < 1.0 for p in (await powers(city, "pw-001")).values())
        # The agent's monitor pass, half a minute later (the clock is the test's).
        agent.clock.advance(30)  # type: ignore[attr-defined]
        agent.monitor()
        for _ in range(200):
            seen = await powers(city, "pw-001")
            if all(p == pytest.approx(60.0) for p in seen.values()):
                break
            await asyncio.sleep(0.05)
        assert seen == {"lamp-001": pytest.approx(60.0), "lamp-002": pytest.approx(60.0)}
