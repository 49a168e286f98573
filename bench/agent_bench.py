"""Agent footprint: RSS and idle CPU of one cabinet's agent, and its schedule evaluation cost.

    .venv/bin/python bench/agent_bench.py [--seconds 60] [--lamps 100] [--no-orchestrator]

The cabinet has ``--lamps`` simulated lamps, a simulated bollard and a simulated signal
controller (its heads on gpiozero's mock pins), on the real clock, as in the street.

1. Schedule evaluation, in this process: ``evaluate()`` for every lamp (the first pass,
   astronomy and calendar caches cold, then the steady state), one
   ``Agent.apply_schedule()`` over the whole cabinet with nothing to change, and one at the
   23:00 switch point, which dims every lamp: the time from the switch to the last lamp's
   PWM pin (checked on every pin), the schedule loop's wake-up aside.
2. What the agent's code costs before any state, in fresh interpreters (RSS read from
   ``/proc/self/statm``): the interpreter alone (the peer), and the modules
   ``ondijon edge run`` imports before it starts (the command line, ``edge.config``,
   ``edge.agent``).
3. The real processes (``ondijon orchestrator serve``, ``ondijon edge enroll``, ``ondijon
   edge run``): the gateway is registered and enrolled, a lighting schedule (civil dusk,
   23:00, 05:30, sunrise, a bollard and a crossing; public holidays of France) and signal
   plans are pushed through the admin API, and once the agent holds them its RSS and CPU
   are sampled with psutil for ``--seconds`` while it is connected; then the orchestrator
   is stopped and the same agent is measured again, alone, retrying with backoff. The
   agent's children (public holidays at start-up, a certificate renewal every few days)
   have ended by then and are not counted.

CPU is the agent's user+system time over the wall time of the window, as a percentage of
one core. Figures vary by ~10-20 % on a shared machine; RSS by about half a MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
from gpiozero.pins.mock import MockFactory

from domain.schedule.evaluator import evaluate
from domain.schedule.model import DeviceKind, Site
from domain.schedule.wire import schedule_from_proto
from edge.agent import Agent
from edge.config import AgentConfig
from edge.storage.state import AgentState
from foundation.clock import ManualClock
from ondijon.client import AdminClient
from ondijon.demo import SIGNAL, lighting_program, signal_plans
from orchestrator.config import OrchestratorConfig
from orchestrator.identity.operators import add_operator
from protos.ondijon.v1 import control_pb2, link_pb2
from provisioning.ca import CertificateAuthority
from provisioning.profile import Profile

SITE = Site(latitude=47.3220, longitude=5.0415, time_zone="Europe/Paris")
GATEWAY = "bench-cabinet"
BOLLARD = '[[bollards]]\nid = "bollard-1"\nbackend = "simulated"\n'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def agent_toml(
    root: Path,
    lamps: int,
    address: str,
    enroll_address: str,
    *,
    gateway: str = GATEWAY,
    site: Site = SITE,
    equipment: str = f"{BOLLARD}\n{SIGNAL}",
) -> str:
    """The bench agent's configuration: ``lamps`` simulated lamps and ``equipment`` (TOML
    tables: a bollard and a crossing by default); flash_bench passes its own."""
    tables = "\n".join(
        f'[[lamps]]\nid = "lamp-{i:03d}"\nbackend = "simulated"\nnominal_power_w = 60'
        for i in range(1, lamps + 1)
    )
    return (
        f'[gateway]\nid = "{gateway}"\nserial = "SN-{gateway}"\nstate_dir = "{root / "agent"}"\n'
        f'[orchestrator]\naddress = "{address}"\nenroll_address = "{enroll_address}"\n'
        f'ca_file = "{root / "ca" / "root.pem"}"\n'
        f"[site]\nlatitude = {site.latitude}\nlongitude = {site.longitude}\n"
        f'time_zone = "{site.time_zone}"\n\n{tables}\n\n{equipment}'
    )


# -- 1. schedule evaluation ---------------------------------------------------------------


def evaluation_cost(lamps: int, root: Path) -> None:
    schedule = schedule_from_proto(lighting_program())
    now = datetime(2026, 11, 3, 18, 30, tzinfo=UTC)
    ids = [f"lamp-{i:03d}" for i in range(1, lamps + 1)]

    def one_pass() -> float:
        start = time.perf_counter()
        for device_id in ids:
            evaluate(schedule, SITE, now, kind=DeviceKind.LAMP, device_id=device_id, overrides=[])
        return time.perf_counter() - start

    cold = one_pass()
    warm = statistics.median(one_pass() for _ in range(200))
    print(
        f"evaluate() x {lamps} lamps: first pass {cold * 1e3:.1f} ms (caches cold), "
        f"then {warm * 1e3:.2f} ms ({warm / lamps * 1e6:.1f} us per lamp)"
    )

    # The agent's whole pass: every lamp, the bollard and the crossing, nothing to change.
    config_path = root / "inprocess.toml"
    config_path.write_text(agent_toml(root / "inprocess", lamps, "127.0.0.1:9", "127.0.0.1:9"))
    config = AgentConfig.load(config_path)
    payload = lighting_program().SerializeToString()
    with AgentState(config.state_dir / "state.json") as state:
        state.accept_document(
            link_pb2.DesiredDocument(
                kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
                version=1,
                digest=hashlib.sha256(payload).digest(),
                payload=payload,
            )
        )
    clock = ManualClock(now)
    agent = Agent(config, clock, pin_factory=MockFactory())
    try:
        agent.apply_schedule()  # the first pass switches every lamp
        passes = []
        for _ in range(100):
            start = time.perf_counter()
            agent.apply_schedule()
            passes.append(time.perf_counter() - start)
        print(
            f"Agent.apply_schedule() ({lamps} lamps, bollard, crossing; nothing changes): "
            f"{statistics.median(passes) * 1e3:.2f} ms per pass"
        )
        # 23:00 in Dijon (UTC+1 in November): every lamp from 100 % to 50 %.
        clock.set(datetime(2026, 11, 3, 22, 0, tzinfo=UTC))
        start = time.perf_counter()
        agent.apply_schedule()
        switched = time.perf_counter() - start
        # The simulated lamps' own mock pins, behind the real gpio driver (a bench's look).
        duties = [lamp.controller._driver.duty for lamp in agent.lamps]
        if duties != [0.5] * lamps:
            raise AssertionError(f"after the 23:00 switch, PWM duties {sorted(set(duties))}")
        print(
            f"the 23:00 switch point, {lamps} lamps dimmed to 50 %: "
            f"{switched * 1e3:.2f} ms to the last lamp's PWM pin"
        )
    finally:
        agent.close()


# What `ondijon edge run` imports before it starts the agent (ondijon/cli.py).
RUN_PATH_IMPORTS = "from ondijon import cli; cli._parser('edge'); import edge.config, edge.agent"


def import_baseline() -> None:
    """RSS of fresh interpreters: the interpreter alone, then with what ``ondijon edge run``
    imports (what the code costs before any state)."""

    def rss_after(code: str) -> float:
        probe = f"{code}\nimport os\nprint(int(open('/proc/self/statm').read().split()[1]))"
        pages = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True)
        return int(pages.stdout) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)

    alone, imported = rss_after("pass"), rss_after(RUN_PATH_IMPORTS)
    print(
        f"imports of 'ondijon edge run' alone: RSS {imported:.1f} MiB "
        f"(the interpreter alone, the peer: {alone:.1f} MiB; the code: {imported - alone:.1f})"
    )


# -- 2. the real processes ----------------------------------------------------------------


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", PYTHONUNBUFFERED="1")
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "ondijon.cli", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on port {port}")
        await asyncio.sleep(0.1)


def measure(pid: int, seconds: float, label: str) -> None:
    """Sample RSS once a second and CPU over the window; print one line."""
    process = psutil.Process(pid)
    before, started = process.cpu_times(), time.monotonic()
    rss: list[int] = []
    while time.monotonic() - started < seconds:
        rss.append(process.memory_info().rss)
        time.sleep(1.0)
    after, wall = process.cpu_times(), time.monotonic() - started
    cpu = (after.user - before.user + after.system - before.system) / wall * 100
    mib = 1024 * 1024
    print(
        f"{label}: RSS {statistics.median(rss) / mib:.1f} MiB (max {max(rss) / mib:.1f}), "
        f"CPU {cpu:.2f} % of one core over {wall:.0f} s"
    )


async def gateway_connected(profile: Profile) -> bool:
    listing = await AdminClient(profile).list_gateways(control_pb2.ListGatewaysRequest())
    return any(
        g.gateway_id == GATEWAY and g.connected and len(g.held) >= 2 for g in listing.gateways
    )


def orchestrator_files(root: Path) -> tuple[int, int, Profile]:
    """A CA, an orchestrator's configuration on free ports (console and public side off:
    one host may run several) and an admin operator's profile, under ``root``."""
    now = datetime.now(UTC)
    CertificateAuthority.init(root / "ca", now=now)
    port, enroll_port = free_port(), free_port()
    (root / "orchestrator.toml").write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nenroll_listen = "127.0.0.1:{enroll_port}"\n'
        f'[store]\nurl = "sqlite:///{root / "orchestrator.db"}"\n'
        f'[identity]\nca_dir = "{root / "ca"}"\nstate_dir = "{root / "orchestrator"}"\n'
        '[console]\nlisten = ""\n[public]\nlisten = ""\n'
    )
    profile = add_operator(
        OrchestratorConfig.load(root / "orchestrator.toml"),
        name="bench",
        role="admin",
        communes=["*"],
        profile_dir=root / "profile",
        address=f"localhost:{port}",
        now=now,
    )
    return port, enroll_port, profile


async def footprint(root: Path, lamps: int, seconds: float, with_orchestrator: bool) -> None:
    port, enroll_port, profile = orchestrator_files(root)
    address = profile.address
    config = root / "agent.toml"
    config.write_text(agent_toml(root, lamps, address, f"localhost:{enroll_port}"))
    orchestrator = spawn(
        ["orchestrator", "serve", "--config", str(root / "orchestrator.toml")],
        root / "orchestrator.log",
    )
    agent: subprocess.Popen[bytes] | None = None
    try:
        try:
            await wait_port(port)
            await wait_port(enroll_port)
        except TimeoutError:
            print((root / "orchestrator.log").read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        added = await AdminClient(profile).add_gateway(
            control_pb2.AddGatewayRequest(
                gateway_id=GATEWAY,
                serial=f"SN-{GATEWAY}",
                commune="Dijon",
                latitude=SITE.latitude,
                longitude=SITE.longitude,
                time_zone=SITE.time_zone,
            ),
        )
        enroll = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "ondijon.cli", "edge", "enroll"),
            *("--config", str(config), "--token", added.enrollment_token),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await enroll.communicate()
        if enroll.returncode != 0:
            raise RuntimeError(f"enrollment failed: {output.decode(errors='replace')}")
        for kind, message in (
            (link_pb2.DOCUMENT_KIND_SIGNAL_PLANS, signal_plans()),
            (link_pb2.DOCUMENT_KIND_SCHEDULE, lighting_program()),
        ):
            await AdminClient(profile).put_desired_state(
                control_pb2.PutDesiredStateRequest(
                    gateway_id=GATEWAY, kind=kind, payload=message.SerializeToString()
                ),
            )
        agent = spawn(["edge", "run", "--config", str(config)], root / "agent.log")
        deadline = time.monotonic() + 60
        while not await gateway_connected(profile):
            if time.monotonic() > deadline or agent.poll() is not None:
                raise RuntimeError(f"the agent did not sync; see {root / 'agent.log'}")
            await asyncio.sleep(0.5)
        await asyncio.sleep(5)  # let start-up settle (first reports, first metering pass)
        if with_orchestrator:
            measure(agent.pid, seconds, "agent, orchestrator reachable")
        stop(orchestrator)
        await asyncio.sleep(5)
        measure(agent.pid, seconds, "agent, orchestrator gone    ")
    finally:
        for process in (agent, orchestrator):
            if process is not None:
                stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="each measuring window")
    parser.add_argument("--lamps", type=int, default=100)
    parser.add_argument(
        "--no-orchestrator", action="store_true", help="measure only with the orchestrator gone"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp:
        root = Path(tmp)
        (root / "city").mkdir()
        evaluation_cost(args.lamps, root)
        import_baseline()
        asyncio.run(footprint(root / "city", args.lamps, args.seconds, not args.no_orchestrator))


if __name__ == "__main__":
    main()
