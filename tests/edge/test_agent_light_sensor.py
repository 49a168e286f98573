"""The light-sensor override, wired through the agent: a storm at noon lights the street."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from edge.agent import Agent
from edge.config import AgentConfig
from edge.equipment.sim.cabinet import SimulatedCabinet
from foundation.clock import ManualClock
from protos.ondijon.v1 import link_pb2, schedule_pb2
from tests.conftest import offline_agent_config

NOON_SUMMER = datetime(2026, 6, 21, 10, 0, tzinfo=UTC)  # 12:00 in Dijon


def agent_config(tmp_path: Path) -> AgentConfig:
    return offline_agent_config(
        tmp_path,
        "storm-1",
        '[[lamps]]\nid = "lamp-1"\nbackend = "simulated"\nnominal_power_w = 60\n'
        '[cabinet]\nid = "cabinet"\nbackend = "simulated"',
    )


def sensor_schedule() -> link_pb2.DesiredDocument:
    payload = schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="sun",
                points=[
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_SUNSET, lamp_level=100
                    ),
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_SUNRISE, lamp_level=0
                    ),
                ],
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="sun", priority=1)],
        light_sensor=schedule_pb2.LightSensor(
            enabled=True, on_below_lux=30, off_above_lux=80, lamp_level=70
        ),
    ).SerializeToString()
    return link_pb2.DesiredDocument(
        kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
        version=1,
        digest=hashlib.sha256(payload).digest(),
        payload=payload,
    )


async def test_dark_sky_at_noon_switches_lamps_on_then_off_with_hysteresis(
    tmp_path: Path,
) -> None:
    agent = Agent(agent_config(tmp_path), ManualClock(NOON_SUMMER))
    try:
        assert await agent.accept_document(sensor_schedule()) == ""
        cabinet = agent.cabinet
        assert cabinet is not None
        sky = cabinet.driver
        assert isinstance(sky, SimulatedCabinet)
        lamp = agent.lamps[0].controller

        sky.lux = 20000.0  # bright noon
        agent.monitor()
        agent.apply_schedule()
        assert lamp.level == 0

        sky.lux = 12.0  # a storm
        agent.monitor()
        agent.apply_schedule()
        assert lamp.level == 70
        assert lamp.state().source == "sensor"

        sky.lux = 50.0  # brighter, but inside the hysteresis band: stays on
        agent.monitor()
        agent.apply_schedule()
        assert lamp.level == 70

        sky.lux = 200.0
        agent.monitor()
        agent.apply_schedule()
        assert lamp.level == 0
    finally:
        agent.close()
