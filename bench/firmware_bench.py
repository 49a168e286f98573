"""Benchmark: a firmware campaign over a fleet of gateways, bytes on the wire and time;
and the time to rollback of each failure kind.

    python bench/firmware_bench.py [--gateways 100] [--waves 1,10,50,100]
    python bench/firmware_bench.py --rollback [--stability 30] [--kinds hung,crashing,...]

``--rollback`` runs one gateway per failure kind (a release hung at start-up, one that
crashes 12 s after each start, an unhealthy one, a sound one whose trial is cut off from
the orchestrator, one that crash-loops after its commit) as real agent processes through
the real launcher, under a stand-in for systemd that applies the shipped unit's settings
(``deploy/systemd/ondijon-agent.service``), with the agent's default health settings, and
prints for each the time from the faulty release's first start (for the crash loop after
commit: its first crash) to the previous version running again, next to what the unit's
settings predict (``--stability`` shortens the stability period, which comes before the
crash loop after commit and is not part of its time to rollback). See
:mod:`tests.firmware_e2e.processes`.

Starts an orchestrator in this process (SQLite store, mutual TLS on loopback), enrolls
``--gateways`` agents (in this process too, each with its own certificate, TLS
connection, outbox and firmware slots), builds a release of the real agent (a wheel of
this checkout's packages, as ``ondijon release build`` would ship it), signs, uploads it
and runs a campaign in waves. Every agent really downloads over ``Firmware.Download``,
verifies, unpacks into its inactive slot and asks for a restart; the bench plays systemd:
it stops that agent, runs the launcher's boot step and starts a new one on the same state,
which passes its health check and commits.

All gateway traffic goes through a counting TCP proxy, so "bytes on the wire" are TLS
bytes both ways, handshakes of the restarted agents included. Prints: release size, bytes
on the wire per updated gateway (and the share that is not the release itself), payload
bytes the Firmware service served, time for the whole campaign and for each wave.

Everything shares one Python process (one core for the orchestrator and all agents): the
time is pessimistic; restart, TLS handshake and health check dominate each wave.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.agent import Agent
from edge.config import AgentConfig
from edge.firmware.launch import exec_plan
from edge.firmware.simulator import agent_wheel
from edge.identity import enroll
from foundation.clock import SystemClock
from ondijon import firmware_cli
from ondijon.client import AdminClient
from orchestrator.config import OrchestratorConfig
from orchestrator.identity.operators import add_operator
from orchestrator.server import start
from protos.ondijon.v1 import control_pb2, firmware_pb2
from provisioning.ca import CertificateAuthority
from provisioning.release import build_release, generate_release_key, sign_release

VERSION = "0.2.0"


class CountingProxy:
    """A TCP relay that counts the bytes it carries each way."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0
        self.down = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upward: bool) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if upward:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    @property
    def total(self) -> int:
        return self.up + self.down


@dataclass
class Fleet:
    """The agents, restarted on request like systemd would."""

    configs: list[AgentConfig]
    agents: dict[str, Agent] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    restarts: int = 0

    def start(self, config: AgentConfig, environ: dict[str, str] | None = None) -> None:
        agent = Agent(config, SystemClock(), environ=environ or {})
        agent.firmware.restart_grace_s = 0.0
        agent.firmware.request_restart = lambda: self._restart_soon(config)
        self.agents[config.gateway_id] = agent
        self.tasks[config.gateway_id] = asyncio.create_task(agent.run())

    def _restart_soon(self, config: AgentConfig) -> None:
        asyncio.get_running_loop().create_task(self.restart(config))

    async def restart(self, config: AgentConfig) -> None:
        await self.stop_one(config.gateway_id)
        assert config.firmware is not None
        _, environ = exec_plan(config.firmware.state_dir, ["-m", "edge.agent"], {})
        self.restarts += 1
        self.start(config, environ)

    async def stop_one(self, gateway_id: str) -> None:
        task = self.tasks.pop(gateway_id)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def stop(self) -> None:
        for gateway_id in list(self.tasks):
            await self.stop_one(gateway_id)


async def bench(gateways: int, waves: list[float], directory: Path) -> None:
    now = datetime.now(UTC)
    ca = CertificateAuthority.init(directory / "ca", now=now)
    config = OrchestratorConfig(
        listen="127.0.0.1:0",
        enroll_listen="127.0.0.1:0",
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
        store_url=f"sqlite:///{directory / 'orchestrator.db'}",
        ca_dir=directory / "ca",
        state_dir=directory / "orchestrator",
        gateway_certificate_days=7,
        token_ttl_hours=72,
    )
    running = await start(config, SystemClock(), ca=ca)
    proxy = CountingProxy(running.port)
    proxy_port = await proxy.start()
    admin = add_operator(
        config,
        name="bench",
        role="admin",
        communes=["*"],
        profile_dir=directory / "profile",
        address=f"localhost:{running.port}",
        now=now,
    )
    keys = directory / "keys"
    keys.mkdir()
    generate_release_key(keys / "release.key")
    (directory / "root.pem").write_bytes(ca.root_pem)

    began = time.perf_counter()
    configs = []
    for n in range(gateways):
        gateway_id = f"bench-{n:04d}"
        response = await AdminClient(admin).add_gateway(
            control_pb2.AddGatewayRequest(
                gateway_id=gateway_id,
                serial=f"SN-{n}",
                commune="Dijon",
                latitude=47.32,
                longitude=5.04,
                time_zone="Europe/Paris",
            ),
        )
        state = directory / "agents" / gateway_id
        state.mkdir(parents=True)
        path = state / "agent.toml"
        path.write_text(
            f'[gateway]\nid = "{gateway_id}"\nserial = "SN-{n}"\nstate_dir = "{state}"\n'
            f'[orchestrator]\naddress = "localhost:{proxy_port}"\n'
            f'enroll_address = "localhost:{running.enroll_port}"\n'
            f'ca_file = "{directory / "root.pem"}"\n'
            '[site]\nlatitude = 47.32\nlongitude = 5.04\ntime_zone = "Europe/Paris"\n'
            "[link]\nreport_interval_s = 1.0\n"
            f'[firmware]\nrelease_keys = ["{keys / "release.key.pub"}"]\n'
            f'state_dir = "{state / "firmware"}"\nhealth_interval_s = 0.2\nstability_s = 0\n'
        )
        agent_config = AgentConfig.load(path)
        await enroll(agent_config, response.enrollment_token)
        configs.append(agent_config)
    fleet = Fleet(configs)
    for agent_config in configs:
        fleet.start(agent_config)
    await asyncio.gather(*(a.link.status.connected.wait() for a in fleet.agents.values()))
    print(f"{gateways} gateways enrolled and connected in {time.perf_counter() - began:.1f} s")

    name, wheel = agent_wheel(VERSION)
    wheel_path = directory / name
    wheel_path.write_bytes(wheel)
    release = build_release(wheel_path, VERSION, "0.1.0", now + timedelta(days=30), directory)
    sign_release(release, keys / "release.key")
    await firmware_cli.upload_release(AdminClient(admin), release)
    print(
        f"release {VERSION}: {len(wheel):,} bytes (sha256 {hashlib.sha256(wheel).hexdigest()[:12]})"
    )

    await asyncio.sleep(1.0)  # let connection set-up traffic settle before counting
    idle_from, idle_bytes = time.perf_counter(), proxy.total
    await asyncio.sleep(2.0)
    idle_rate = (proxy.total - idle_bytes) / (time.perf_counter() - idle_from)

    before = proxy.total
    started = time.perf_counter()
    response = await AdminClient(admin).create_campaign(
        firmware_pb2.CreateCampaignRequest(
            version=VERSION,
            target=firmware_pb2.CampaignTarget(communes=["Dijon"]),
            waves=[firmware_pb2.CampaignWave(percent=p) for p in waves],
            allow_night=True,
        ),
    )
    campaign_id = response.campaign.campaign_id
    wave_times: list[float] = []
    wave, completed_at = 1, 0.0
    final = {
        firmware_pb2.FIRMWARE_STAGE_COMMITTED,
        firmware_pb2.FIRMWARE_STAGE_ROLLED_BACK,
        firmware_pb2.FIRMWARE_STAGE_REFUSED,
        firmware_pb2.FIRMWARE_STAGE_FAILED,
    }
    deadline = time.perf_counter() + 600
    while time.perf_counter() < deadline:
        shown = await AdminClient(admin).get_campaign(
            firmware_pb2.GetCampaignRequest(campaign_id=campaign_id)
        )
        campaign = shown.campaign
        done = campaign.status == firmware_pb2.CAMPAIGN_STATUS_COMPLETED
        while campaign.current_wave > wave or (done and wave <= len(waves)):
            wave_times.append(time.perf_counter() - started)
            wave += 1
        if done and not completed_at:
            completed_at = time.perf_counter() - started
        settled = all(g.stage in final for g in campaign.gateways)
        if (settled and done) or campaign.status not in (
            firmware_pb2.CAMPAIGN_STATUS_RUNNING,
            firmware_pb2.CAMPAIGN_STATUS_COMPLETED,
        ):
            break
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - started
    wire = proxy.total - before - idle_rate * elapsed
    committed = sum(w.committed for w in campaign.waves)
    stages = collections.Counter(
        firmware_pb2.FirmwareStage.Name(g.stage).removeprefix("FIRMWARE_STAGE_").lower()
        for g in campaign.gateways
    )
    service = running.app.campaigns.releases if running.app.campaigns else None
    served = service.bytes_served if service is not None else 0

    print(f"campaign completed (last wave at its success threshold) in {completed_at:.1f} s")
    print(f"every gateway settled in {elapsed:.1f} s: {dict(stages)}")
    previous = 0.0
    for index, (percent, at) in enumerate(zip(waves, wave_times, strict=False), 1):
        size = campaign.waves[index - 1].gateways
        print(f"  wave {index} ({percent:g} %, {size} gateways): {at - previous:.1f} s")
        previous = at
    print(f"gateways committed: {committed}/{gateways} ({fleet.restarts} restarts)")
    print(f"bytes on the wire (TLS, both ways), per updated gateway: {wire / committed:,.0f}")
    print(
        f"  release {len(wheel):,} B; overhead {wire / committed - len(wheel):,.0f} B"
        f" ({(wire / committed) / len(wheel) - 1:.1%}: TLS, HTTP/2, offer, progress,"
        " restart handshake and hello)"
    )
    print(f"payload served by Firmware.Download: {served / gateways:,.0f} B per gateway")
    print(f"idle link traffic subtracted: {idle_rate:,.0f} B/s for the fleet")
    await fleet.stop()
    await running.stop(0)
    if proxy.server is not None:
        proxy.server.close()


async def rollback_bench(kinds: list[str], stability_s: float, directory: Path) -> None:
    from tests.conftest import City, orchestrator_config
    from tests.firmware_e2e.processes import (
        FAULTS,
        Timing,
        campaign,
        measure_rollback,
        process_cabinet,
        upload,
    )

    unknown = sorted(set(kinds) - set(FAULTS))
    if unknown:
        raise SystemExit(f"--kinds: unknown {', '.join(unknown)}; known: {', '.join(FAULTS)}")
    timing = Timing.shipped(stability_s=stability_s)
    unit = timing.unit
    print(
        f"unit: RestartSec={unit.restart_s:g}s TimeoutStartSec={unit.start_timeout_s:g}s"
        f" (failure mode {unit.start_failure}) WatchdogSec={unit.watchdog_s:g}s"
        f" TimeoutStopSec={unit.stop_timeout_s:g}s; launcher: 3 starts;"
        f" agent: health_deadline_s={timing.health_deadline_s:g}"
        f" health_interval_s={timing.health_interval_s:g} stability_s={stability_s:g};"
        f" faults after {timing.fault_after_s:g} s"
    )
    ca = CertificateAuthority.init(directory / "ca", now=datetime.now(UTC))
    config = orchestrator_config(directory)
    running = await start(config, SystemClock(), ca=ca)
    city = City(directory, ca, config, running, admin=None)  # type: ignore[arg-type]
    city.admin = city.operator("admin", "admin", ["*"])
    cabinets = []

    async def one(index: int, kind: str) -> tuple[str, float, int, float]:
        gateway_id = f"rollback-{kind.replace('_', '-')}"
        cabinet = await process_cabinet(city, gateway_id, timing)
        cabinets.append(cabinet)
        ready = cabinet.supervisor.starts[0]
        assert ready.ready is not None
        version = f"0.2.{index + 1}"
        await upload(city, version, kind)
        campaign_id = await campaign(city, version, [gateway_id])
        result = await measure_rollback(
            city, cabinet, kind, campaign_id, timeout=1800, version=version
        )
        return kind, result.seconds, len(result.starts), ready.ready - ready.started

    try:
        results = await asyncio.gather(*(one(i, kind) for i, kind in enumerate(kinds)))
    finally:
        for cabinet in cabinets:
            await cabinet.stop()
        await running.stop(0)
    restart, after = unit.restart_s, timing.fault_after_s
    predicted = {
        "hung": lambda s: 3 * (unit.start_timeout_s + restart) + s,
        "crashing": lambda s: 3 * (s + after + restart) + s,
        "unhealthy": lambda s: s + timing.health_deadline_s + 1 + restart + s,
        "cut_off": lambda s: s + timing.health_deadline_s + 1 + restart + s,
        "crash_loop_after_commit": lambda s: 4 * restart + 3 * (s + after) + s,
    }
    print(f"{'failure kind':26} {'to rollback':>12} {'predicted':>10} {'starts':>7}  start-up")
    for kind, seconds, starts, startup in results:
        print(
            f"{kind:26} {seconds:10.1f} s {predicted[kind](startup):8.1f} s {starts:7d}"
            f"  {startup:.1f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=100)
    parser.add_argument("--waves", default="1,10,50,100", help="cumulative percentages")
    parser.add_argument("--rollback", action="store_true", help="time to rollback instead")
    parser.add_argument("--stability", type=float, default=30.0, help="stability_s (rollback)")
    parser.add_argument(
        "--kinds",
        default="hung,crashing,unhealthy,cut_off,crash_loop_after_commit",
        help="failure kinds (rollback)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    waves = [float(p) for p in args.waves.split(",")]
    with tempfile.TemporaryDirectory(prefix="firmware-bench-") as tmp:
        if args.rollback:
            asyncio.run(rollback_bench(args.kinds.split(","), args.stability, Path(tmp)))
        else:
            asyncio.run(bench(args.gateways, waves, Path(tmp)))


if __name__ == "__main__":
    main()
