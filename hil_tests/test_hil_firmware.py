"""A firmware update whose health check fails, on the bench: the cabinet process (the real
agent on the inventory's pins, :mod:`edge.bench.cabinet`) runs through the A/B launcher
under the systemd stand-in, a real orchestrator runs the campaign, and a signed release
of the agent's own packages with a fault built in (:data:`tests.firmware_e2e.processes.
FAULTS`) is installed into the inactive slot, tried, and rolled back.

The bench checks the street on the pin journal of every start (base, trial, base again):
the lamps lit all night through the update (each relay's coil never energised, the
dimming line never at 0), the bollard's motors never run. The quick form runs the
``unhealthy`` release (its drivers never come up) with the unit's times at a fifth; the
long form (``ONDIJON_LONG=1``) also runs a release that crashes after every start, with
the agent's shipped health-check deadline.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cabinet_process import Rig
from test_hil_city import night

from edge.bench.inventory import Inventory, agent_equipment, subset, to_toml
from edge.bench.report import Record
from edge.firmware.simulator import agent_wheel
from edge.firmware.systemd_standin import ServiceSupervisor
from edge.identity import enroll
from ondijon.client import AdminClient
from protos.ondijon.v1 import control_pb2, firmware_pb2, link_pb2
from provisioning.ca import CertificateAuthority
from provisioning.release import build_release, sign_release
from tests.conftest import City, started_city
from tests.firmware_e2e.conftest import make_releases
from tests.firmware_e2e.processes import (
    _PREAMBLE,
    BASE,
    FAULT_AFTER_ENV,
    FAULTS,
    ProcessCabinet,
    Timing,
    campaign,
    measure_rollback,
    show,
)
from tests.nothing_lost.harness import LinkProxy

pytestmark = pytest.mark.integration

LONG = os.environ.get("ONDIJON_LONG", "") not in ("", "0")
GATEWAY = "hil-firmware"
KINDS = ["lamps", "bollards"]
KINDS_RUN = ["unhealthy", "crashing"] if LONG else ["unhealthy"]
# The faults built into the release's edge/agent.py. ``unhealthy`` is the firmware tests';
# theirs for ``crashing`` replaces ``run_agent`` (``ondijon edge run``), which the bench's
# cabinet process does not call: this one crashes the agent itself, after every start.
RELEASE_FAULTS = {
    "unhealthy": FAULTS["unhealthy"],
    "crashing": _PREAMBLE
    + """
_real_agent_run = Agent.run

async def _crashing_run(self, *, ready=None):
    def crash():
        _time.sleep(_AFTER)
        _os._exit(70)

    _threading.Thread(target=crash, daemon=True).start()
    await _real_agent_run(self, ready=ready)

Agent.run = _crashing_run
""",
}


def tonight() -> datetime:
    """22:00 in Dijon today (the release's expiry and the certificates are real-time)."""
    return datetime.now(UTC).replace(hour=20, minute=0, second=0, microsecond=0)


@pytest.fixture
async def city(tmp_path: Path) -> AsyncIterator[City]:
    ca = CertificateAuthority.init(tmp_path / "ca", now=datetime.now(UTC))
    async with started_city(tmp_path, ca) as city:
        yield city


async def bench_cabinet(
    city: City, inventory: Inventory, inventory_file: Path, timing: Timing, start: datetime
) -> tuple[ProcessCabinet, Rig]:
    """The gateway enrolled with the inventory's equipment and a [firmware] section, its
    cabinet process started through the launcher under the supervisor, ready on BASE."""
    keys = make_releases(city).key.parent
    firmware_dir = city.tmp_path / "firmware"
    token = await city.register(GATEWAY, "Dijon")
    config = city.agent_config(
        GATEWAY,
        equipment=to_toml(agent_equipment(subset(inventory, KINDS))),
        firmware=(
            f'release_keys = ["{keys / "release.key.pub"}"]\n'
            f'state_dir = "{firmware_dir}"\n'
            f"health_deadline_s = {timing.health_deadline_s}\n"
            f"health_interval_s = {timing.health_interval_s}\n"
            f"stability_s = {timing.stability_s}"
        ),
    )
    await enroll(config, token)
    assert config.source is not None
    proxy = LinkProxy(lambda: city.running.port)
    await proxy.__aenter__()
    journal = city.tmp_path / "pins.journal"
    rig = Rig(config.source, inventory_file, journal, ",".join(KINDS), proxy.address)
    argv = [
        sys.executable, "-m", "edge.firmware.launch", "--state-dir", str(firmware_dir), "--",
        "-m", "edge.bench.cabinet", "--config", str(config.source),
        "--inventory", str(inventory_file), "--journal", str(journal),
        "--kinds", ",".join(KINDS), "--start", start.isoformat(), "--resume",
        "--address", proxy.address, "--speed", "60", "--step", "0.5",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(GPIOZERO_PIN_FACTORY="mock", **{FAULT_AFTER_ENV: str(timing.fault_after_s)})
    supervisor = ServiceSupervisor(argv, timing.unit, env=env, log=rig.log)
    cabinet = ProcessCabinet(GATEWAY, config.source, firmware_dir, supervisor, proxy)
    supervisor.start()
    await cabinet.until(lambda: bool(cabinet.ready_runs(BASE)), 60)
    return cabinet, rig


async def holds(city: City, kind: link_pb2.DocumentKind.ValueType, version: int) -> None:
    for _ in range(600):
        response = await AdminClient(city.admin).get_gateway(
            control_pb2.GetGatewayRequest(gateway_id=GATEWAY)
        )
        if any(h.kind == kind and h.version == version for h in response.gateway.held):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the gateway never reported holding version {version}")


@pytest.mark.parametrize("fault", KINDS_RUN)
@pytest.mark.timeout(600 if LONG else 120)
async def test_a_release_failing_its_health_check_rolls_back_with_the_street_untouched(
    city: City, sim_bench: Inventory, inventory_file: Path, record: Record, fault: str
) -> None:
    """A firmware update at night whose new release fails its health check (drivers down;
    with ONDIJON_LONG=1 also one that crashes after every start): the launcher and the agent
    roll back to the old release within the limit, the lamps stay lit on the pins through
    every restart, the bollard's motors never run, and the campaign counts one failure."""
    timing = Timing.short()
    if LONG:
        # The agent's shipped health-check deadline and stability period, in its own
        # (60 times faster) seconds: 10 wall seconds of stability, longer than the
        # crashing release lives (1 wall second), so its trial never commits.
        timing = Timing(timing.unit, 120.0, 600.0, 10.0, 1.0)
    start = tonight()
    record.started = start.isoformat()
    cabinet, rig = await bench_cabinet(city, sim_bench, inventory_file, timing, start)
    try:
        schedule = link_pb2.DOCUMENT_KIND_SCHEDULE
        await holds(city, schedule, await admin_put(city, schedule, night(40)))
        await upload(city, "0.2.0", fault)  # signed with the key the agent pins
        campaign_id = await campaign(city, "0.2.0", [GATEWAY])
        rollback = await measure_rollback(city, cabinet, fault, campaign_id, timeout=240)
    finally:
        await cabinet.stop()
        record.trace = rig.trace(start)
    versions = [s.status.split()[-1] for s in rollback.starts if s.ready is not None]
    assert versions[0] == "0.2.0" and versions[-1] == BASE, versions  # the trial ran
    assert len(boots(rig.journal)) >= 3  # base, the trial, base again: each on the pins
    record.measure(
        "time_to_rollback_s", rollback.seconds, unit="s", low=0.0, high=60.0 if LONG else 20.0,
        description="the faulty release's first start to the old release ready again (wall)",
    )  # fmt: skip
    record.faults.append(
        {"at": "", "fault": f"release_{fault}", "target": "firmware 0.2.0", "detail": ""}
    )
    changes = rig.read_journal()
    assert changes, rig.tail()
    for lamp in sim_bench.lamps:
        relay = [c.state for c in changes if c.line == f"lamps.{lamp.id}.relay"]
        record.measure(
            f"{lamp.id}.coil_energised", relay.count(1.0), high=0,
            description="times the relay's coil was energised (lamp dark) during the update",
        )  # fmt: skip
        for boot in boots(rig.journal):
            duty = [state for line, state in boot if line == f"lamps.{lamp.id}.pwm"]
            # Driven from the first instant of each start, never to 0 while driven; the
            # last change of a start that stops is gpiozero releasing the line (an input,
            # as with no agent: the driver's own full level, the relay at rest: lit).
            assert duty and 0.0 not in duty[:-1], duty
    for post in sim_bench.bollards:
        moves = [c for c in changes if c.line.startswith(f"bollards.{post.id}.motor") and c.state]
        record.measure(
            f"{post.id}.motor_runs", len(moves), high=0,
            description="times a motor of the post ran during the update",
        )  # fmt: skip
    assert rollback.outcome is not None
    assert rollback.outcome.stage == firmware_pb2.FIRMWARE_STAGE_ROLLED_BACK
    assert (rollback.outcome.running_version, rollback.outcome.hello_version) == (BASE, BASE)
    shown = await show(city, campaign_id)
    record.measure(
        "campaign_failures", shown.waves[0].failed, low=1, high=1,
        description="the campaign counts the gateway as failed, not updated",
    )  # fmt: skip
    assert shown.waves[0].committed == 0


async def upload(city: City, version: str, fault: str) -> None:
    """A signed release of the agent's own packages with ``fault`` built in, uploaded."""
    releases = make_releases(city)
    directory = city.tmp_path / "releases" / fault
    directory.mkdir(parents=True, exist_ok=True)
    name, wheel = agent_wheel(version, append={"edge/agent.py": RELEASE_FAULTS[fault]})
    (directory / name).write_bytes(wheel)
    release = build_release(
        directory / name, version, BASE, datetime.now(UTC) + timedelta(days=30), directory
    )
    sign_release(release, releases.key)
    await releases.upload(release)


def boots(journal: Path) -> list[list[tuple[str, float]]]:
    """The journal's pin changes, one list per start of the cabinet process."""
    found: list[list[tuple[str, float]]] = []
    for raw in journal.read_text().splitlines():
        words = raw.split()
        if words and words[0] == "B":
            found.append([])
        elif len(words) == 5 and words[0] == "P" and found:
            found[-1].append((words[3], float(words[4])))
    return found


async def admin_put(city: City, kind: link_pb2.DocumentKind.ValueType, payload: bytes) -> int:
    response = await AdminClient(city.admin).put_desired_state(
        control_pb2.PutDesiredStateRequest(gateway_id=GATEWAY, kind=kind, payload=payload)
    )
    return response.document.version
