"""Firmware outcomes with real processes: the agent runs through the real launcher
(``python -m edge.firmware.launch``), under :class:`edge.firmware.systemd_standin.ServiceSupervisor`
playing systemd with the shipped unit's settings, and updates to a real release of its own
packages into which a fault may be built.

Each :data:`FAULTS` entry is code appended to the release's ``edge/agent.py``: it runs in
the slot process only, exactly as a faulty release would. ``cut_off`` has no fault: the
release is sound, but a proxy in front of the orchestrator is switched off while it is on
trial. :func:`measure_rollback` runs one failure kind from the offer to the version rolled
back to running again, and returns what was seen (used by the firmware-outcome tests and by
``bench/firmware_bench.py --rollback``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.firmware.simulator import agent_wheel
from edge.firmware.systemd_standin import ServiceSupervisor, Start, UnitSettings
from edge.identity import enroll
from protos.ondijon.v1 import firmware_pb2
from provisioning.release import build_release, sign_release
from tests.conftest import City
from tests.firmware_e2e.conftest import make_releases
from tests.nothing_lost.harness import LinkProxy
from tests.waiting import eventually

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "ondijon-agent.service"
BASE = "0.1.0"
NEW = "0.2.0"
FAULT_AFTER_ENV = "ONDIJON_TEST_FAULT_AFTER_S"

_PREAMBLE = f"""
# --- a fault built into this test release (tests/firmware_e2e/processes.py) ---
import os as _os
import threading as _threading
import time as _time

_AFTER = float(_os.environ.get("{FAULT_AFTER_ENV}", "12"))
_real_run_agent = run_agent
"""
FAULTS = {
    # Hangs at start-up, before READY=1: systemd's start timeout ends it.
    "hung": _PREAMBLE
    + """
async def run_agent(config):
    _time.sleep(10**6)
""",
    # Runs, then dies _AFTER seconds after every start.
    "crashing": _PREAMBLE
    + """
async def run_agent(config):
    def crash():
        _time.sleep(_AFTER)
        _os._exit(70)

    _threading.Thread(target=crash, daemon=True).start()
    await _real_run_agent(config)
""",
    # Runs, but its drivers never come up: the health check fails.
    "unhealthy": _PREAMBLE
    + """
async def _drivers_down():
    return False

Agent.health_checks = lambda self: {"drivers": _drivers_down}
""",
    # Sound on trial; once committed, dies _AFTER seconds after every start.
    "crash_loop_after_commit": _PREAMBLE
    + """
async def run_agent(config):
    from edge.firmware.slots import SlotStore

    def crash_once_committed():
        started = _time.monotonic()
        store = SlotStore(config.firmware.state_dir)
        while True:
            _time.sleep(0.1)
            committed = store.read().committed == _os.environ.get("ONDIJON_SLOT")
            if committed and _time.monotonic() - started >= _AFTER:
                _os._exit(70)

    _threading.Thread(target=crash_once_committed, daemon=True).start()
    await _real_run_agent(config)
""",
    "cut_off": "",
}


@dataclass(frozen=True)
class Timing:
    """How fast things go: the unit's settings and the agent's firmware settings."""

    unit: UnitSettings
    health_deadline_s: float
    stability_s: float
    health_interval_s: float = 1.0
    fault_after_s: float = 12.0

    @classmethod
    def shipped(cls, *, stability_s: float = 600.0) -> Timing:
        """The shipped unit and the agent's defaults (``[firmware]``)."""
        return cls(UnitSettings.from_file(UNIT), 120.0, stability_s, 10.0)

    @classmethod
    def short(cls) -> Timing:
        """Everything a fifth of the shipped unit, seconds for the agent: for ``make test``."""
        return cls(UnitSettings.from_file(UNIT).scaled(0.2), 4.0, 3.0, 0.5, 1.0)


@dataclass
class ProcessCabinet:
    """A gateway whose agent runs as real processes, through a proxy the test controls."""

    gateway_id: str
    config: Path
    firmware_dir: Path
    supervisor: ServiceSupervisor
    proxy: LinkProxy

    def ready_runs(self, version: str) -> list[Start]:
        """Starts that became ready running ``version``."""
        return [
            s
            for s in self.supervisor.starts
            if s.ready is not None and s.status.endswith(f" {version}")
        ]

    async def stop(self) -> None:
        await self.supervisor.stop()
        await self.proxy.__aexit__()

    async def until(self, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                starts = [(s.status, s.result) for s in self.supervisor.starts]
                raise AssertionError(f"{self.gateway_id}: not reached in time; starts {starts}")
            await asyncio.sleep(0.05)


async def process_cabinet(
    city: City, gateway_id: str, timing: Timing, *, commune: str = "Dijon"
) -> ProcessCabinet:
    """An enrolled gateway whose agent runs under the supervisor, started and connected."""
    keys = make_releases(city).key.parent
    proxy = LinkProxy(lambda: city.running.port)
    await proxy.__aenter__()
    firmware_dir = city.tmp_path / "firmware" / gateway_id
    token = await city.register(gateway_id, commune)
    config = city.agent_config(
        gateway_id,
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
    # The agent reaches the orchestrator through the proxy (enrollment went direct).
    text = config.source.read_text()
    text = text.replace(f'address = "{city.address}"', f'address = "{proxy.address}"')
    config.source.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(GPIOZERO_PIN_FACTORY="mock", **{FAULT_AFTER_ENV: str(timing.fault_after_s)})
    argv = [
        sys.executable,
        "-m",
        "edge.firmware.launch",
        "--state-dir",
        str(firmware_dir),
        "--",
        "-m",
        "ondijon.cli",
        "edge",
        "run",
        "--config",
        str(config.source),
    ]
    supervisor = ServiceSupervisor(
        argv, timing.unit, env=env, log=city.tmp_path / f"{gateway_id}.log"
    )
    cabinet = ProcessCabinet(gateway_id, config.source, firmware_dir, supervisor, proxy)
    supervisor.start()
    await cabinet.until(lambda: bool(cabinet.ready_runs(BASE)), 60)
    return cabinet


async def upload(city: City, version: str, fault: str) -> None:
    """Build a release of the agent's own packages (with ``fault`` built in), sign it with
    the key the agents pin and upload it."""
    releases = make_releases(city)
    directory = city.tmp_path / "releases" / fault
    directory.mkdir(parents=True, exist_ok=True)
    name, wheel = agent_wheel(version, append={"edge/agent.py": FAULTS[fault]})
    (directory / name).write_bytes(wheel)
    release = build_release(
        directory / name, version, BASE, datetime.now(UTC) + timedelta(days=30), directory
    )
    sign_release(release, releases.key)
    await releases.upload(release)


async def campaign(city: City, version: str, gateway_ids: list[str]) -> str:
    """A campaign of ``version`` to ``gateway_ids``, one wave, any time of day."""
    return await make_releases(city).campaign(version, gateway_ids)


async def show(city: City, campaign_id: str) -> firmware_pb2.Campaign:
    return await make_releases(city).show(campaign_id)


async def outcome(city: City, campaign_id: str, gateway_id: str) -> firmware_pb2.GatewayOutcome:
    return await make_releases(city).outcome(campaign_id, gateway_id)


@dataclass
class Rollback:
    """One failure kind, from the offer to the version rolled back to running again."""

    kind: str
    began: float  # the faulty release's first start (monotonic)
    recovered: float  # the rolled-back-to version ready again
    starts: list[Start] = field(default_factory=list)
    outcome: firmware_pb2.GatewayOutcome | None = None

    @property
    def seconds(self) -> float:
        return self.recovered - self.began


async def measure_rollback(
    city: City,
    cabinet: ProcessCabinet,
    kind: str,
    campaign_id: str,
    *,
    timeout: float,
    version: str = NEW,
    on_trial: Callable[[], Awaitable[None]] | None = None,
) -> Rollback:
    """Follow ``cabinet`` through ``kind`` (its campaign already created) until the version
    rolled back to is ready again and the campaign has the ROLLED_BACK outcome.

    For ``cut_off``, the proxy is switched off from the REBOOTING report until the trial
    process has ended; for ``crash_loop_after_commit``, the measure starts at the first
    start of the committed release that ends (the first crash after the commit).
    """
    first_new = len(cabinet.supervisor.starts)
    if kind == "cut_off":

        async def rebooting() -> bool:
            found = await outcome(city, campaign_id, cabinet.gateway_id)
            return found.stage == firmware_pb2.FIRMWARE_STAGE_REBOOTING

        await eventually(rebooting, timeout)
        cabinet.proxy.online = False
        cabinet.proxy.cut_now()
    await cabinet.until(lambda: len(cabinet.supervisor.starts) > first_new, timeout)
    trial = cabinet.supervisor.starts[first_new]
    began = trial.started
    if kind == "crash_loop_after_commit":
        await cabinet.until(
            lambda: any(s.ended is not None for s in cabinet.ready_runs(version)), timeout
        )
        crashed = next(s for s in cabinet.ready_runs(version) if s.ended is not None)
        assert crashed.ended is not None
        began = crashed.ended
    if on_trial is not None:
        await on_trial()

    def recovered() -> bool:
        return any(s.started >= trial.started for s in cabinet.ready_runs(BASE))

    await cabinet.until(recovered, timeout)
    back = next(s for s in cabinet.ready_runs(BASE) if s.started >= trial.started)
    assert back.ready is not None
    cabinet.proxy.online = True

    async def reported() -> firmware_pb2.GatewayOutcome:
        while True:
            found = await outcome(city, campaign_id, cabinet.gateway_id)
            rolled_back = found.stage == firmware_pb2.FIRMWARE_STAGE_ROLLED_BACK
            if rolled_back and found.hello_version == BASE:
                return found
            await asyncio.sleep(0.05)

    found = await asyncio.wait_for(reported(), timeout)
    starts = cabinet.supervisor.starts[first_new:]
    return Rollback(kind, began, back.ready, list(starts), found)
