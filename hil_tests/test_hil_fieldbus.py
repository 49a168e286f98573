"""A field node that goes silent, on the bench: the agent with its lamps on the ``fieldbus``
backend, a real Mosquitto started for the scenario with the cabinet's generated
configuration (per-node credentials and ACL), and virtual nodes running the node's own
code (:mod:`edge.node`, behind :class:`edge.fieldbus.simulate.VirtualNode`).

One node's network is cut (its connection drops, its reconnections are refused): the
broker hands the agent the node's will and the agent raises ``fieldbus.node_lost`` for it
at once; the node, no longer hearing the gateway, holds the operator's last level for its
``fallback_s`` and then follows the program it carries (the schedule's level, computed
here independently with the schedule engine), never dark; the other nodes keep obeying.
Reconnected, it is back (``fieldbus.node_back``) and obeys the agent again. The long form
(``ONDIJON_LONG=1``) keeps it cut through 23:00 local, where its program dims it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf import json_format

from domain.schedule.evaluator import evaluate
from domain.schedule.model import DeviceKind
from edge.agent import Agent
from edge.bench.report import Record
from edge.events import EquipmentEvent, Priority
from edge.fieldbus import broker
from foundation.clock import ManualClock
from protos.ondijon.v1 import link_pb2, schedule_pb2
from tests.conftest import offline_agent_config
from tests.edge.fieldbus.conftest import T0, make_cabinet

pytestmark = [pytest.mark.integration, pytest.mark.mqtt]

LONG = os.environ.get("ONDIJON_LONG", "") not in ("", "0")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "schedule.json"
NIGHT = T0 + 7 * 3600  # 2026-03-28 19:00 UTC, 20:00 in Dijon: after civil dusk
FALLBACK_S = 30
NODES = 3


def schedule_document() -> link_pb2.DesiredDocument:
    payload = json_format.Parse(EXAMPLE.read_text(), schedule_pb2.Schedule()).SerializeToString()
    return link_pb2.DesiredDocument(
        kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
        version=1,
        digest=hashlib.sha256(payload).digest(),
        payload=payload,
    )


def override(level: int, start: datetime) -> link_pb2.Command:
    command = link_pb2.Command(
        command_id=f"cmd-{level}",
        override=schedule_pb2.Override(
            id=f"ov-{level}", priority=10, kind=schedule_pb2.DEVICE_KIND_LAMP, lamp_level=level
        ),
    )
    command.override.start.FromDatetime(start)
    command.override.expiry.FromDatetime(start + timedelta(days=1))
    return command


@pytest.mark.timeout(240 if LONG else 60)
async def test_a_silent_field_node_is_alarmed_and_falls_back_to_its_own_program(
    tmp_path: Path, record: Record
) -> None:
    """A field node cut from the cabinet's bus at night, the lamps held at 30 % by an
    operator: the agent raises the node's alarm within the limit, the node holds 30 % for
    its fallback time then follows the program it carries (never dark), the other nodes
    stay at 30 %; reconnected, it is back and obeys again."""
    cabinet = make_cabinet(tmp_path, NODES, default_level=80, fallback_s=FALLBACK_S)
    cabinet.wall[0] = float(NIGHT)
    lamps = "".join(
        f'[[lamps]]\nid = "n-{i:04d}"\nbackend = "fieldbus"\nnominal_power_w = 60\n'
        for i in range(1, NODES + 1)
    )
    equipment = (
        f'{lamps}[fieldbus]\ncabinet = "{cabinet.config.cabinet}"\nport = {cabinet.port}\n'
        f'credentials = "{cabinet.directory / "credentials.json"}"\n'
    )
    clock = ManualClock(datetime.fromtimestamp(NIGHT, UTC))
    agent = Agent(offline_agent_config(tmp_path, "fb-bench", equipment), clock)
    events: list[EquipmentEvent] = []
    recorded = agent.record

    def keep(event: EquipmentEvent) -> None:
        events.append(event)
        recorded(event)

    agent.record = keep  # type: ignore[method-assign]
    fleet = cabinet.fleet(NODES)
    silent = fleet.nodes[1]
    name = silent.config.node
    task: asyncio.Task[None] | None = None
    record.started = clock.now().isoformat()

    async def until(done: Callable[[], bool], timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, "timed out"
            fleet.step()
            await asyncio.sleep(0.005)

    async def advance(seconds: float) -> None:
        """Move the agent's and the nodes' clocks together, letting both run."""
        cabinet.advance(seconds)
        clock.advance(seconds)
        for _ in range(3):
            fleet.step()
            await asyncio.sleep(0.002)

    def levels() -> dict[str, tuple[str, int]]:
        return {n.config.node: (n.link.mode, n.lamp.level) for n in fleet.nodes}

    try:
        assert await agent.accept_document(schedule_document()) == ""
        task = asyncio.create_task(agent.run())
        await until(lambda: all(n.link.luminaire.program is not None for n in fleet.nodes))
        await until(lambda: all(n.rtc.sets >= 1 for n in fleet.nodes))
        assert (await agent.handle_command(override(30, clock.now()))).status == (
            link_pb2.COMMAND_STATUS_DONE
        )
        await until(lambda: set(levels().values()) == {("c", 30)})

        # The node's network goes: its connection drops, every reconnection is refused.
        silent.client.port = broker.free_port()
        cut = time.monotonic()
        cut_at = clock.now()
        silent.crash()
        record.faults.append(
            {"at": cut_at.isoformat(), "fault": "node_silent", "target": name, "detail": ""}
        )

        def lost() -> list[EquipmentEvent]:
            return [e for e in events if e.type == "fieldbus.node_lost" and e.device_id == name]

        await until(lambda: bool(lost()))
        record.measure(
            f"{name}.alarm_after_cut_s", time.monotonic() - cut, unit="s", low=0.0, high=2.0,
            description="the node's network cut to the agent's fieldbus.node_lost alarm (wall)",
        )  # fmt: skip
        assert lost()[0].priority == Priority.ALARM
        assert [e.device_id for e in events if e.type == "fieldbus.node_lost"] == [name]

        # The node on its own: the last command for fallback_s, then its own program.
        seen: list[tuple[float, str, int]] = []
        waited = 0.0
        while levels()[name][0] == "c" and waited <= FALLBACK_S + 60:
            await advance(1.0)
            waited += 1.0
            seen.append((waited, *levels()[name]))
        mode, level = levels()[name]
        expected = evaluate(
            agent.schedule, agent.site, clock.now(), kind=DeviceKind.LAMP, device_id=name
        ).lamp_level
        assert (mode, level) == ("p", expected), seen[-3:]
        assert {s[1:] for s in seen[:-1]} <= {("c", 30)}, seen  # held the last command
        record.measure(
            f"{name}.fallback_after_s", waited, unit="s", low=0.0, high=FALLBACK_S + 1.0,
            description="the node's own seconds from the cut to following its program "
            f"(fallback_s = {FALLBACK_S}, counted from the gateway's last heartbeat)",
        )  # fmt: skip
        others = {n: v for n, v in levels().items() if n != name}
        assert set(others.values()) == {("c", 30)}, others

        if LONG:  # through 23:00 local on its own program, sampled every simulated minute
            end = datetime(2026, 3, 28, 22, 30, tzinfo=UTC)
            while clock.now() < end:
                await advance(60.0)
                want = evaluate(
                    agent.schedule, agent.site, clock.now(), kind=DeviceKind.LAMP, device_id=name
                ).lamp_level
                seen.append((waited, *levels()[name]))
                assert levels()[name] == ("p", want), (clock.now(), seen[-2:])
            assert levels()[name] == ("p", 50)
        record.measure(
            f"{name}.dark_samples", sum(1 for s in seen if s[2] == 0), high=0,
            description="samples of the node's lamp at 0 % while it was cut off, at night",
        )  # fmt: skip

        # The network comes back: it reconnects, the agent says so and rules it again.
        silent.client.port = cabinet.port
        back = 0.0  # its reconnection backoff runs on its own clock
        while not any(e.type == "fieldbus.node_back" and e.device_id == name for e in events):
            assert back < 600, "the node never came back"
            await advance(1.0)
            back += 1.0
        record.measure(
            f"{name}.back_after_s", back, unit="s", low=0.0, high=300.0,
            description="the network restored to fieldbus.node_back (the node's backoff)",
        )  # fmt: skip
        await until(lambda: set(levels().values()) == {("c", 30)}, timeout_s=30)
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        fleet.close()
        cabinet.running.stop()
        record.alarms = [
            {"at": e.at.isoformat(), "type": e.type, "device": e.device_id}
            for e in events
            if e.priority == Priority.ALARM
        ]
