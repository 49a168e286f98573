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
import select
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf import json_format

from domain.schedule.evaluator import evaluate
from domain.schedule.model import DeviceKind
from edge.agent import Agent
from edge.equipment.metering import quarter_start
from edge.events import EquipmentEvent
from edge.fieldbus.gateway import Node
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
        self.monitor_passes = 0
        self.agent = self._agent()

    def _agent(self) -> Agent:
        agent = Agent(self.config, self.clock)
        recorded = agent.record

        def record(event: EquipmentEvent) -> None:
            self.events.append(event)
            recorded(event)

        agent.record = record  # type: ignore[method-assign]
        monitor = agent.monitor

        def counted() -> None:
            self.monitor_passes += 1
            monitor()

        agent.monitor = counted  # type: ignore[method-assign]
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
            assert time.monotonic() < deadline, f"timed out; the nodes: {self.levels()}"
            self.fleet.step()
            await asyncio.sleep(0.005)

    async def drained(self, quiet_s: float = 1.0, timeout_s: float = 30.0) -> None:
        """Poll the nodes until nothing has come to them for ``quiet_s``."""
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s:
            assert time.monotonic() < deadline, "the nodes kept receiving"
            fds = [n.client.fileno() for n in self.fleet.nodes if n.link.connected]
            if select.select([fd for fd in fds if fd >= 0], [], [], 0)[0]:
                quiet_since = time.monotonic()
            self.fleet.step()
            await asyncio.sleep(0.02)

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
        # Births after the first heartbeat are answered within a second of the agent's clock.
        street.clock.advance(1)
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
        deadline = time.monotonic() + 60
        # The agent's reconnection backoff runs on its clock: moved until it is back, however
        # long a loaded machine takes (a fixed 40 s of it once ran out before a retry).
        while street.agent.equipment.buses[0].connections == connections:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the agent did not reconnect"
            street.clock.advance(1)
            await asyncio.sleep(0.05)
            street.fleet.step()
        assert (await street.agent.handle_command(override(60))).status == (
            link_pb2.COMMAND_STATUS_DONE
        )
        await street.until(lambda: set(street.levels().values()) == {("c", 60)}, timeout_s=60)
        # The agent goes away at 19:00 UTC (after civil dusk): after fallback_s the nodes
        # follow the program they carry (100 % until 23:00 local).
        await street.stop()
        # What the agent sent last (a heartbeat: its time, 12:00 UTC) is read before the
        # nodes' clocks jump, not after: read after, it set them back seven hours (daytime,
        # program level 0) and restarted their silence (a loaded broker delivered it late).
        await street.drained()
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


# -- a cabinet's worth of nodes ----------------------------------------------------------------

FLEET = 100


def _all(street: Street) -> list[Node]:
    fieldbus = street.agent.equipment.buses[0]
    return [fieldbus.node(n.config.node) for n in street.fleet.nodes]  # type: ignore[attr-defined]


def _outbox(street: Street) -> list[link_pb2.Event]:
    return list(street.agent.outbox.next_batch(100_000, 1 << 30))


async def _monitor_passes(street: Street, count: int, seconds: float = 30.0) -> None:
    """``count`` of the agent's monitor passes, the nodes' time running along."""
    for _ in range(count):
        street.fleet.step()
        await asyncio.sleep(0.01)  # the nodes' states in before the pass
        passes = street.monitor_passes
        street.advance(seconds)
        await street.until(lambda: street.monitor_passes > passes)  # noqa: B023


async def test_a_hundred_nodes_join_follow_a_switch_point_and_report_like_wired_lamps(
    tmp_path: Path,
) -> None:
    cabinet = make_cabinet(tmp_path, FLEET, default_level=80, fallback_s=300)
    street = Street(tmp_path, cabinet, FLEET)
    fieldbus = street.agent.equipment.buses[0]
    try:
        assert await street.agent.accept_document(schedule_document()) == ""
        await street.start()
        # All join: the agent holds a state and a birth of each, each carries its program.
        await street.until(lambda: all(e.state is not None and e.up for e in _all(street)))
        await street.until(
            lambda: all(n.link.luminaire.program is not None for n in street.fleet.nodes)
        )
        # A hundred births, the agent's clock standing still: one heartbeat, not a hundred.
        assert fieldbus.heartbeats_sent == 1  # type: ignore[attr-defined]
        assert max(n.rtc.sets for n in street.fleet.nodes) <= 1
        # A second later, every node has heard one (births after the first are answered).
        street.clock.advance(1)
        await street.until(lambda: all(n.rtc.sets >= 1 for n in street.fleet.nodes))
        assert fieldbus.heartbeats_sent <= 2  # type: ignore[attr-defined]

        # The next switch point of the schedule (dusk), found by the schedule engine.
        now = street.clock.now()
        before = evaluate(
            street.agent.schedule, street.agent.site, now, kind=DeviceKind.LAMP, device_id=""
        )
        switch = before.next_change
        after = evaluate(
            street.agent.schedule, street.agent.site, switch, kind=DeviceKind.LAMP, device_id=""
        )
        assert (before.lamp_level, after.lamp_level) == (0, 100)
        street.clock.set(switch - timedelta(seconds=1))
        await street.until(lambda: set(street.levels().values()) == {("c", 0)})
        street.clock.advance(1)
        await street.until(lambda: set(street.levels().values()) == {("c", 100)})
        # Each node's state echoes the agent's last command: its commands, not the node's
        # own copy of the program, switched them.
        await street.until(
            lambda: all(e.state is not None and e.state.command == e.seq for e in _all(street))
        )
        assert {e.state.mode for e in _all(street)} == {"c"}  # type: ignore[union-attr]

        # Lit, metered like wired lamps; node 7's lamp fails for a while, then is replaced.
        failing = street.fleet.nodes[6]
        await _monitor_passes(street, 2)
        failing.lamp.failed = True
        await _monitor_passes(street, 3)
        failing.lamp.failed = False
        await _monitor_passes(street, 50)
        lamps = {lamp.controller.device_id: lamp.controller.state() for lamp in street.agent.lamps}
        assert all(s.lamp.lit and s.lamp.level == 100 for s in lamps.values())
        assert all(not s.lamp.faults for s in lamps.values())
        events = _outbox(street)
        alarms = [
            (e.device_id, e.type, e.attributes["state"], e.priority)
            for e in events
            if e.type == "lamp_failure"
        ]
        assert alarms == [
            ("n-0007", "lamp_failure", "raised", link_pb2.EVENT_PRIORITY_ALARM),
            ("n-0007", "lamp_failure", "cleared", link_pb2.EVENT_PRIORITY_EVENT),
        ]
        # Energy by quarter hour from the power each node measures (60.5 W at 100 %): the
        # quarter of the switch, node 7 dark for part of it, then a whole one for all.
        quarters: dict[str, list[tuple[str, float]]] = {}
        for e in events:
            if e.type == "energy_interval" and e.attributes["interval_end"] > switch.isoformat():
                covered = e.attributes["covered_seconds"]
                quarters.setdefault(e.device_id, []).append((covered, float(e.attributes["wh"])))
        assert set(quarters) == set(lamps)
        # The quarter of the switch: lit from the switch (seen at the next pass, 30 s on).
        lit_s = (quarter_start(switch) + timedelta(minutes=15) - switch).total_seconds()
        first_wh = quarters["n-0001"][0][1]
        assert first_wh == pytest.approx(60.5 * lit_s / 3600, abs=60.5 * 31 / 3600)
        # Node 7 dark for 90 s of its node's time, seen dark by 30 s monitor passes.
        dark_wh = first_wh - quarters["n-0007"][0][1]
        assert 60.5 * 30 / 3600 <= dark_wh <= 60.5 * 90 / 3600
        assert all(q[0][1] == first_wh for d, q in quarters.items() if d != "n-0007")
        quarters = {d: q[1:] for d, q in quarters.items()}
        full = 60.5 * 900 / 3600
        assert all(len(q) >= 1 for q in quarters.values())
        assert {q for each in quarters.values() for q in each} == {("900", full)}
    finally:
        await street.stop()
        street.fleet.close()
        cabinet.running.stop()


async def test_a_node_publishing_as_another_is_refused_by_the_broker(tmp_path: Path) -> None:
    cabinet = make_cabinet(tmp_path, 5, default_level=80, fallback_s=300)
    street = Street(tmp_path, cabinet, 5)
    try:
        await street.start()
        await street.until(lambda: all(e.state is not None for e in _all(street)))
        street.clock.advance(1)
        assert (await street.agent.handle_command(override(70))).status == (
            link_pb2.COMMAND_STATUS_DONE
        )
        await street.until(lambda: all(e.state.level == 70 for e in _all(street)))  # type: ignore[union-attr]
        victim = _all(street)[2]
        before = victim.state
        # Node 2 claims node 3's lamp is out and dark, on node 3's topic, with its own
        # account; then its own lamp really fails, which it reports on its own topic.
        liar = street.fleet.nodes[1]
        forged = bus.NodeState(0, "c", 0.0, 0, (bus.FAULT_LAMP,), 99999, T0, victim.seq, 1)
        liar.client.publish(
            bus.node_topic("cab-01", "n-0003", bus.STATE).encode(), bus.encode_state(forged), True
        )
        liar.lamp.failed = True
        await _monitor_passes(street, 1)
        await street.until(lambda: bus.FAULT_LAMP in (_all(street)[1].state.faults))  # type: ignore[union-attr]
        await _monitor_passes(street, 2)
        # What came after the forgery arrived; the forgery did not: node 3 is as it was,
        # and nothing but node 2's real failure was recorded.
        assert _all(street)[2].state is before
        assert {(e.device_id, e.type) for e in street.events if e.priority.name == "ALARM"} == {
            ("n-0002", "lamp_failure")
        }
        lamps = {lamp.controller.device_id: lamp.controller.state() for lamp in street.agent.lamps}
        assert lamps["n-0003"].lamp.lit and not lamps["n-0003"].lamp.faults
        assert not lamps["n-0002"].lamp.lit
        assert liar.link.connected  # refused without ending its session (MQTT 3.1.1)
    finally:
        await street.stop()
        street.fleet.close()
        cabinet.running.stop()


async def test_a_clock_step_sends_the_nodes_the_time_and_programs_from_it(tmp_path: Path) -> None:
    cabinet = make_cabinet(tmp_path, 5, default_level=80, fallback_s=300)
    street = Street(tmp_path, cabinet, 5)
    programs = lambda: [n.link.luminaire.program for n in street.fleet.nodes]  # noqa: E731
    try:
        assert await street.agent.accept_document(schedule_document()) == ""
        await street.start()
        await street.until(lambda: all(p is not None and p.number == T0 for p in programs()))
        street.clock.advance(1)
        await street.until(lambda: all(n.rtc.sets >= 1 for n in street.fleet.nodes))
        for step_s in (-2 * 3600, 4 * 86400):  # set back two hours, then four days on
            street.clock.step_wall(step_s)
            held = max(p.number for p in programs())  # type: ignore[union-attr]
            steps = len(street.of_type("clock.step"))
            street.clock.advance(10)  # the agent looks at its clock every 10 s
            await street.until(lambda: len(street.of_type("clock.step")) > steps)  # noqa: B023
            now = street.clock.now().timestamp()
            # Programs start at the new time, numbered above what the nodes hold (a node
            # refuses a lower one), and the nodes heard the new time at once.
            await street.until(
                lambda: all(
                    p is not None and p.number > held and abs(p.t0 - now) <= 1  # noqa: B023
                    for p in programs()
                )
            )
            await street.until(
                lambda: all(
                    abs((n.link.luminaire.wall_s() or 0) - now) <= 2  # noqa: B023
                    for n in street.fleet.nodes
                )
            )
            assert all(n.link.refused == 0 for n in street.fleet.nodes)
    finally:
        await street.stop()
        street.fleet.close()
        cabinet.running.stop()
