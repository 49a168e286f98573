"""Operators' overrides on the agent: per-lamp targeting, expiry and the schedule resuming."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.agent import Agent
from edge.config import AgentConfig
from foundation.clock import ManualClock
from protos.ondijon.v1 import link_pb2, schedule_pb2
from tests.conftest import offline_agent_config

START = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, the night DST ends


def config(tmp_path: Path) -> AgentConfig:
    lamps = "\n".join(
        f'[[lamps]]\nid = "lamp-{i}"\nbackend = "simulated"\nnominal_power_w = 60'
        for i in (1, 2, 3)
    )
    return offline_agent_config(tmp_path, "ov-1", lamps)


def schedule_at(level: int) -> link_pb2.DesiredDocument:
    payload = schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="p", points=[schedule_pb2.SwitchPoint(local_time="00:00", lamp_level=level)]
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="p", priority=1)],
    ).SerializeToString()
    return link_pb2.DesiredDocument(
        kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
        version=1,
        digest=hashlib.sha256(payload).digest(),
        payload=payload,
    )


def override(level: int, minutes: int, devices: list[str]) -> link_pb2.Command:
    command = link_pb2.Command(
        command_id=f"cmd-{level}",
        override=schedule_pb2.Override(
            id=f"ov-{level}",
            priority=10,
            kind=schedule_pb2.DEVICE_KIND_LAMP,
            device_ids=devices,
            lamp_level=level,
        ),
    )
    command.override.start.FromDatetime(START)
    command.override.expiry.FromDatetime(START + timedelta(minutes=minutes))
    command.expires_at.FromDatetime(START + timedelta(minutes=minutes))
    return command


def levels(agent: Agent) -> list[int]:
    return [lamp.controller.level for lamp in agent.lamps]


async def test_override_of_one_lamp_expires_and_the_schedule_resumes(tmp_path: Path) -> None:
    clock = ManualClock(START)
    agent = Agent(config(tmp_path), clock)
    try:
        assert await agent.accept_document(schedule_at(40)) == ""
        agent.apply_schedule()
        assert levels(agent) == [40, 40, 40]

        result = await agent.handle_command(override(100, 90, ["lamp-2"]))
        assert result.status == link_pb2.COMMAND_STATUS_DONE
        next_change = agent.apply_schedule()
        assert levels(agent) == [40, 100, 40]
        assert agent.lamps[1].controller.state().source == "override:ov-100"
        # The agent sleeps until the override ends, not until some polling tick.
        assert next_change == START + timedelta(minutes=90)

        clock.set(next_change)
        agent.apply_schedule()
        assert levels(agent) == [40, 40, 40]
    finally:
        agent.close()


async def test_refused_override_changes_nothing(tmp_path: Path) -> None:
    clock = ManualClock(START)
    agent = Agent(config(tmp_path), clock)
    try:
        assert await agent.accept_document(schedule_at(40)) == ""
        agent.apply_schedule()
        bad = override(150, 30, [])
        result = await agent.handle_command(bad)
        assert result.status == link_pb2.COMMAND_STATUS_REFUSED
        assert "lamp_level" in result.detail
        agent.apply_schedule()
        assert levels(agent) == [40, 40, 40]
        assert agent.state.overrides() == []
    finally:
        agent.close()
