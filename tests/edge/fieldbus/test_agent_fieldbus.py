"""The agent's field-bus backend (aiomqtt) on a real Mosquitto with the generated
configuration, driving virtual nodes that run the node's own code.

Lamps with ``backend = "fieldbus"`` are lamp devices like wired ones: an override reaches
every node; a node that lies is refused with an event and its last valid state stands; the
nodes carry the program the cabinet computed from the schedule and follow it when the agent
is gone; a broker restart is reconnected to and the nodes obey again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf import json_format

from edge.agent import Agent
from edge.events import EquipmentEvent
from edge.fieldbus.simulate import Fleet
from edge.node import bus
from foundation.clock import ManualClock
from protos.ondijon.v1 import link_pb2, schedule_pb2
from tests.conftest import offline_agent_config
from tests.edge.fieldbus.conftest import T0, Cabinet, make_cabinet

pytestmark = [pytest.mark.integration, pytest.mark.mqtt]

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "schedule.json"
START = datetime.fromtimestamp(T0, UTC)


def _equipment(cabinet: Cabinet, count: int) -> str:
    lamps = "".join(
        f'[[lamps]]\nid = "n-{i:04d}"\nbackend = "fieldbus"\nnominal_power_w = 60\n'
        for i in range(1, count + 1)
    )
    return (
        f'{lamps}[fieldbus]\ncabinet = "{cabinet.config.cabinet}"\nport = {cabinet.port}\n'
        f'credentials = "{cabinet.directory / "credentials.json"}"\n'
    )


class Street:
    def __init__(self, tmp_path: Path, cabinet: Cabinet, count: int) -> None:
        self.cabinet = cabinet
        self.clock = ManualClock(START)
        self.config = offline_agent_config(tmp_path, "fb-1", _equipment(cabinet, count))
        self.events: list[EquipmentEvent] = []
        self.fleet: Fleet = cabinet.fleet(count)
        self.task: asyncio.Task[None] | None = None
        self.agent = self._agent()

    def _agent(self) -> Agent:
        agent = Agent(self.config, self.clock)
        recorded = agent.record

        def record(event: EquipmentEvent) -> None:
            self.events.append(event)
            recorded(event)

        agent.record = record  # type: ignore[method-assign]
        return agent

    async def start(self) -> None:
        self.task = asyncio.create_task(self.agent.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def until(self, done: Callable[[], bool], timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, "timed out"
            self.fleet.step()
            await asyncio.sleep(0.005)

    def advance(self, seconds: float) -> None:
        self.cabinet.advance(seconds)
        self.clock.advance(seconds)

    def levels(self) -> dict[str, tuple[str, int]]:
        return {n.config.node: (n.link.mode, n.lamp.level) for n in self.fleet.nodes}

    def of_type(self, type_: str) -> list[EquipmentEvent]:
        return [e for e in self.events if e.type == type_]


def override(level: int) -> link_pb2.Command:
    command = link_pb2.Command(
        command_id=f"cmd-{level}",
        override=schedule_pb2.Override(
            id=f"ov-{level}", priority=10, kind=schedule_pb2.DEVICE_KIND_LAMP, lamp_level=level
        ),
    )
    command.override.start.FromDatetime(START)
    command.override.expiry.FromDatetime(START + timedelta(days=3))
    return command


def schedule_document() -> link_pb2.DesiredDocument:
    payload = json_format.Parse(EXAMPLE.read_text(), schedule_pb2.Schedule()).SerializeToString()
    return link_pb2.DesiredDocument(
        kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
        version=1,
        digest=hashlib.sha256(payload).digest(),
        payload=payload,
    )


async def test_fieldbus_lamps_obey_refuse_a_liar_fall_back_and_come_back(tmp_path: Path) -> None:
    cabinet = make_cabinet(tmp_path, 5, default_level=80, fallback_s=300)
    street = Street(tmp_path, cabinet, 5)
    nodes = [f"n-{i:04d}" for i in range(1, 6)]
    try:
        assert await street.agent.accept_document(schedule_document()) == ""
        await street.start()
        # They join and carry the program the cabinet computed from the schedule.
        await street.until(lambda: all(s.state is not None for s in _entries(street)))
        await street.until(
            lambda: all(n.link.luminaire.program is not None for n in street.fleet.nodes)
        )
        programs = {n.link.luminaire.program.number for n in street.fleet.nodes}
        assert programs == {T0}
        # An override reaches every node through the lamp controllers, and comes back as state.
        assert (await street.agent.handle_command(override(30))).status == (
            link_pb2.COMMAND_STATUS_DONE
        )
        await street.until(lambda: set(street.levels().values()) == {("c", 30)})
        await street.until(lambda: all(s.state.level == 30 for s in _entries(street)))  # type: ignore[union-attr]
        lamp = street.agent.lamps[0].controller
        assert lamp.level == 30
        # A lying node: refused with an event naming it; its last valid state stands.
        before = _entries(street)[1].state
        liar = street.fleet.nodes[1].link.client
        liar.publish(
            bus.node_topic("cab-01", nodes[1], bus.STATE).encode(), b'{"l":300,"m":"c"}', True
        )
        await street.until(lambda: bool(street.of_type("fieldbus.refused")))
        (refused,) = street.of_type("fieldbus.refused")
        assert refused.device_id == nodes[1] and refused.attributes["field"].startswith("state.")
        assert _entries(street)[1].state == before
        # The broker restarts: the agent reconnects, states carry on, a new level arrives.
        connections = street.agent.equipment.buses[0].connections  # type: ignore[attr-defined]
        cabinet.running.stop()
        cabinet.restart_broker()
        for _ in range(40):
            street.clock.advance(1)  # the agent's reconnection backoff runs on its clock
            await asyncio.sleep(0.05)
            street.fleet.step()
        await street.until(
            lambda: street.agent.equipment.buses[0].connections > connections  # type: ignore[attr-defined]
        )
        assert (await street.agent.handle_command(override(60))).status == (
            link_pb2.COMMAND_STATUS_DONE
        )
        await street.until(lambda: set(street.levels().values()) == {("c", 60)}, timeout_s=60)
        # The agent goes away at 19:00 UTC (after civil dusk): after fallback_s the nodes
        # follow the program they carry (100 % until 23:00 local).
        await street.stop()
        street.advance(7 * 3600)
        street.fleet.step()
        street.advance(301)
        await street.until(lambda: set(street.levels().values()) == {("p", 100)})
        # It comes back: its commands rule again.
        street.agent = street._agent()
        await street.start()
        await street.until(lambda: set(street.levels().values()) == {("c", 60)}, timeout_s=60)
    finally:
        await street.stop()
        street.fleet.close()
        cabinet.running.stop()


def _entries(street: Street) -> list:  # type: ignore[type-arg]
    fieldbus = street.agent.equipment.buses[0]
    return [fieldbus.node(f"n-{i:04d}") for i in range(1, 6)]  # type: ignore[attr-defined]
