"""Virtual nodes (the node's own code, on CPython) on a real Mosquitto configured by the
project: they join, obey, lose the gateway and fall back, follow their stored program
across a reboot, come back, ride out a broker restart; a hundred share one broker.

The gateway is a stand-in (edge/fieldbus/standin.py) until the agent's backend exists.
Node time is a manual tick counter moved by the test, so nothing sleeps for minutes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.protobuf import json_format

from domain.schedule import schedule_from_proto
from domain.schedule.model import Schedule, Site
from edge.fieldbus.program import node_program
from edge.fieldbus.simulate import Fleet
from protos.ondijon.v1 import schedule_pb2
from tests.edge.fieldbus.conftest import T0, Cabinet, make_cabinet

pytestmark = [pytest.mark.integration, pytest.mark.mqtt]

SITE = Site(47.322, 5.0415, "Europe/Paris")
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "schedule.json"


def _schedule() -> Schedule:
    return schedule_from_proto(json_format.Parse(EXAMPLE.read_text(), schedule_pb2.Schedule()))


def _levels(fleet: Fleet) -> dict[str, tuple[str, int]]:
    return {n.config.node: (n.link.mode, n.lamp.level) for n in fleet.nodes}


def test_nodes_join_obey_lose_the_gateway_fall_back_and_come_back(cabinet: Cabinet) -> None:
    fleet = cabinet.fleet()
    gateway = cabinet.gateway()
    nodes = [n.config.node for n in fleet.nodes]
    assert fleet.run_until(lambda: len(gateway.seen.states) == 5, also=gateway.poll)
    # joined without a gateway heartbeat yet: their own default level, never dark
    assert set(_levels(fleet).values()) == {("d", 80)}
    assert all(gateway.seen.presence[n] for n in nodes)

    # the program: the example schedule from 12:00 UTC for three days
    start = datetime.fromtimestamp(T0, UTC)
    program = node_program(_schedule(), SITE, start, number=T0, device_id="lamps")
    for node in nodes[:4]:  # the fifth never gets one
        gateway.program(node, program)
    gateway.heartbeat(int(cabinet.wall[0]))
    for node in nodes:
        gateway.command(node, 30)
    assert fleet.run_until(
        lambda: all(s.level == 30 and s.mode == "c" for s in gateway.seen.states.values()),
        also=gateway.poll,
    )
    assert [gateway.seen.states[n].program for n in nodes] == [T0] * 4 + [0]
    assert all(n.link.flash.writes == 1 for n in fleet.nodes[:4])

    # the gateway goes silent at 19:00 UTC (20:00 in Paris, after civil dusk: on)
    cabinet.advance(7 * 3600)
    gateway.heartbeat(int(cabinet.wall[0]))
    fleet.run_until(lambda: False, timeout_s=0.2, also=gateway.poll)
    cabinet.advance(299)
    fleet.step()
    assert set(_levels(fleet).values()) == {("c", 30)}  # the command holds...
    cabinet.advance(2)
    assert fleet.run_until(
        lambda: gateway.seen.states[nodes[0]].mode == "p", also=gateway.poll
    )  # ...then the program rules, and the node without one lights at its default
    expected = program.level_at(cabinet.wall[0])
    assert expected == 100
    assert _levels(fleet) == {**{n: ("p", 100) for n in nodes[:4]}, nodes[4]: ("d", 80)}

    # alone, they follow the program through the night: 23:00 local is 22:00 UTC
    cabinet.advance(22 * 3600 - (cabinet.wall[0] - T0 + 12 * 3600) % 86400)
    fleet.step()
    assert program.level_at(cabinet.wall[0]) == 50
    assert {lv for n, lv in _levels(fleet).items() if n != nodes[4]} == {("p", 50)}

    # the gateway comes back: its retained command applies again
    gateway.heartbeat(int(cabinet.wall[0]))
    assert fleet.run_until(
        lambda: all(s.mode == "c" for s in gateway.seen.states.values()), also=gateway.poll
    )
    assert set(_levels(fleet).values()) == {("c", 30)}
    assert gateway.seen.refused == []
    fleet.close()


def test_nodes_follow_their_stored_program_across_a_reboot(cabinet: Cabinet) -> None:
    fleet = cabinet.fleet(2)
    gateway = cabinet.gateway()
    start = datetime.fromtimestamp(T0, UTC)
    program = node_program(_schedule(), SITE, start, number=T0, device_id="lamps")
    for node in fleet.nodes:
        gateway.program(node.config.node, program)
    gateway.heartbeat(int(cabinet.wall[0]))
    assert fleet.run_until(
        lambda: all(n.link.luminaire.program is not None for n in fleet.nodes), also=gateway.poll
    )
    gateway.close()  # the gateway is gone for good (its stand-in's session ends)

    # 23:30 in Paris (22:30 UTC) the next day: both reboot; one board kept its clock
    cabinet.advance(34 * 3600 + 1800)
    fleet.nodes[1].rtc.powered = False
    for node in fleet.nodes:
        node.reboot()
    fleet.step()
    assert program.level_at(cabinet.wall[0]) == 50
    assert _levels(fleet) == {"n-0001": ("p", 50), "n-0002": ("d", 80)}
    # 05:30 in Paris is 03:30 UTC (summer time since 03:00): the program switches
    cabinet.advance(5 * 3600 - 1)
    fleet.step()
    assert _levels(fleet)["n-0001"] == ("p", 50)
    cabinet.advance(1)
    fleet.step()
    assert datetime.fromtimestamp(cabinet.wall[0], SITE.zone).strftime("%H:%M") == "05:30"
    assert _levels(fleet)["n-0001"] == ("p", 100)
    assert fleet.nodes[0].link.flash.writes == 1
    fleet.close()


def test_a_broker_restart_is_ridden_out_and_the_nodes_report_again(cabinet: Cabinet) -> None:
    fleet = cabinet.fleet()
    gateway = cabinet.gateway()
    assert fleet.run_until(lambda: len(gateway.seen.states) == 5, also=gateway.poll)
    gateway.heartbeat(int(cabinet.wall[0]))
    for node in fleet.nodes:
        gateway.command(node.config.node, 60)
    assert fleet.run_until(lambda: set(_levels(fleet).values()) == {("c", 60)}, also=gateway.poll)

    cabinet.running.kill()
    fleet.step(0.2)
    assert not any(n.link.connected for n in fleet.nodes)
    assert set(_levels(fleet).values()) == {("c", 60)}  # the lamps did not move
    cabinet.restart_broker()
    gateway = cabinet.gateway()

    def back() -> bool:
        cabinet.advance(1)  # node time runs: their backoff timers expire
        return all(n.link.connected for n in fleet.nodes) and len(gateway.seen.states) == 5

    assert fleet.run_until(back, also=gateway.poll, timeout_s=20)
    assert all(n.link.connections == 2 for n in fleet.nodes)
    fleet.close()


def test_a_hundred_nodes_share_one_broker_and_all_obey(tmp_path: Path) -> None:
    cabinet = make_cabinet(tmp_path, 100, default_level=70)
    try:
        fleet = cabinet.fleet()
        gateway = cabinet.gateway()
        assert fleet.run_until(lambda: len(gateway.seen.states) == 100, also=gateway.poll)
        gateway.heartbeat(int(cabinet.wall[0]))
        started = time.monotonic()
        for node in fleet.nodes:
            gateway.command(node.config.node, 45)
        assert fleet.run_until(
            lambda: all(s.level == 45 for s in gateway.seen.states.values()),
            also=gateway.poll,
            timeout_s=30,
        )
        assert time.monotonic() - started < 30
        assert {n.lamp.level for n in fleet.nodes} == {45}
        assert gateway.seen.refused == []
        fleet.close()
    finally:
        cabinet.running.stop()
