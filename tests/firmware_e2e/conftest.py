"""Firmware end to end: a real orchestrator over mutual TLS, real agents with firmware slots.

Releases are built and signed with ``provisioning.release`` (the ``ondijon release``
commands) from small wheels, uploaded through the Campaigns admin API, and rolled out by
campaigns to agents running in this process on manual clocks.

The process supervisor is played by :class:`Cabinet`: when an agent asks for a restart,
the test stops that Agent, runs the launcher's boot step on the same firmware state
directory (:func:`edge.firmware.launch.exec_plan`, what ``python -m edge.firmware.launch``
does before exec) and starts a new Agent there with the environment the launcher gives it.
The new Agent still runs the base code (a real restart would import the slot), but reports
the version the launcher booted, takes its health checks and commits or rolls back exactly
as the real one would. :mod:`tests.firmware_e2e.test_firmware_outcomes_processes` runs real
agent processes through the real launcher instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.agent import Agent
from edge.config import AgentConfig
from edge.firmware.agent_side import RetryPolicy
from edge.firmware.launch import SLOT_ENV, exec_plan
from edge.firmware.simulator import make_wheel
from edge.identity import enroll
from foundation.clock import ManualClock
from ondijon import firmware_cli
from ondijon.client import AdminClient
from orchestrator.server import start
from protos.ondijon.v1 import firmware_pb2
from provisioning.ca import CertificateAuthority
from provisioning.profile import Profile
from provisioning.release import build_release, generate_release_key, sign_release
from tests.conftest import City, orchestrator_config
from tests.waiting import eventually

BASE = "0.1.0"  # the version of the installed ondijon distribution, the agents' base install


@dataclass
class Releases:
    """Builds, signs and uploads releases."""

    directory: Path
    profile: Profile
    key: Path
    stranger: Path

    def build(
        self,
        version: str,
        *,
        key: Path | None = None,
        expires: datetime | None = None,
        size: int = 200_000,
    ) -> Path:
        """A signed release of ``version`` whose wheel holds ``size`` incompressible bytes."""
        _, wheel = make_wheel(
            version,
            {
                "ondijon_probe.py": f'VERSION = "{version}"\n'.encode(),
                "ondijon_ballast.bin": os.urandom(size),
            },
        )
        wheel_path = self.directory / "wheels" / f"ondijon-{version}-py3-none-any.whl"
        wheel_path.parent.mkdir(parents=True, exist_ok=True)
        wheel_path.write_bytes(wheel)
        now = datetime.now(UTC)
        release = build_release(
            wheel_path, version, "0.1.0", expires or now + timedelta(days=30), self.directory
        )
        sign_release(release, key or self.key)
        return release

    async def upload(self, release: Path) -> firmware_pb2.ReleaseInfo:
        return await firmware_cli.upload_release(AdminClient(self.profile), release)

    async def campaign(self, version: str, gateways: list[str], **fields: Any) -> str:
        """Start a campaign (any time of day, one wave by default); returns its id."""
        fields.setdefault("allow_night", True)
        fields.setdefault("waves", [firmware_pb2.CampaignWave(percent=100)])
        response = await AdminClient(self.profile).create_campaign(
            firmware_pb2.CreateCampaignRequest(
                version=version,
                target=firmware_pb2.CampaignTarget(gateway_ids=gateways),
                **fields,
            ),
        )
        return response.campaign.campaign_id

    async def show(self, campaign_id: str) -> firmware_pb2.Campaign:
        response = await AdminClient(self.profile).get_campaign(
            firmware_pb2.GetCampaignRequest(campaign_id=campaign_id)
        )
        return response.campaign

    async def outcome(self, campaign_id: str, gateway_id: str) -> firmware_pb2.GatewayOutcome:
        campaign = await self.show(campaign_id)
        return next(g for g in campaign.gateways if g.gateway_id == gateway_id)

    async def reaches(
        self, campaign_id: str, gateway_id: str, stage: int, timeout: float = 20.0
    ) -> firmware_pb2.GatewayOutcome:
        async def reached() -> bool:
            return (await self.outcome(campaign_id, gateway_id)).stage == stage

        await eventually(reached, timeout)
        return await self.outcome(campaign_id, gateway_id)


def make_releases(city: City) -> Releases:
    """Release keys (the one agents pin, and a stranger's) and a release directory."""
    keys = city.tmp_path / "release-keys"
    if not keys.exists():
        keys.mkdir()
        generate_release_key(keys / "release.key")
        generate_release_key(keys / "stranger.key")
    return Releases(
        city.tmp_path / "releases", city.admin, keys / "release.key", keys / "stranger.key"
    )


@pytest.fixture
def releases(city: City) -> Releases:
    return make_releases(city)


@dataclass
class Cabinet:
    """One gateway's agent, restarted like systemd would (see the module docstring)."""

    config: AgentConfig
    clock: ManualClock
    clock_step_s: float = 1.0
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=4, base_s=0.05))
    agent: Agent | None = None
    restart_requested: asyncio.Event = field(default_factory=asyncio.Event)
    boots: int = 0
    # What the launcher said at the last start (its environment for the agent).
    environ: dict[str, str] = field(default_factory=dict)
    boot_id: str = "boot-1"
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        assert self.config.firmware is not None
        return self.config.firmware.state_dir

    def slot_state(self) -> dict[str, Any]:
        path = self.state_dir / "state.json"
        return json.loads(path.read_bytes()) if path.exists() else {}

    async def start(self, *, address: str | None = None) -> Agent:
        """Start an Agent (``address``: reach the orchestrator elsewhere, e.g. nowhere)."""
        config = self.config if address is None else replace(self.config, address=address)
        self.restart_requested = asyncio.Event()
        if not self.environ and self.config.firmware is not None:
            self.boot_step()
        agent = Agent(config, self.clock, environ=self.environ)
        agent.firmware.request_restart = self.restart_requested.set
        agent.firmware.restart_grace_s = 0.0
        agent.firmware.retry = self.retry
        self.agent = agent
        self.boots += 1
        self._tasks = [asyncio.create_task(agent.run()), asyncio.create_task(self._tick())]
        return agent

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.clock.advance(self.clock_step_s)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.agent = None

    def boot_step(self) -> str:
        """The launcher's decision for the next start: ``a``, ``b`` or ``base``."""
        _, self.environ = exec_plan(
            self.state_dir, ["-m", "edge.agent"], {}, now=self.clock.now(), boot_id=self.boot_id
        )
        return self.environ[SLOT_ENV]

    async def restart(self, *, address: str | None = None) -> Agent:
        """Stop, run the launcher's boot step, start again."""
        await self.stop()
        self.boot_step()
        return await self.start(address=address)


CabinetFactory = Callable[..., Awaitable[Cabinet]]


@pytest.fixture
async def cabinets() -> AsyncIterator[CabinetFactory]:
    """``await cabinets(city, gateway_id)``: an enrolled, running agent whose firmware pins
    the city's release key (``firmware=False``: no [firmware] section); all stopped after."""
    made: list[Cabinet] = []

    async def make(
        city: City,
        gateway_id: str,
        *,
        firmware: bool = True,
        lamps: int = 0,
        stability_s: float = 30,
        commune: str = "Dijon",
        **kw: Any,
    ) -> Cabinet:
        sections: dict[str, str] = {}
        if firmware:
            keys = make_releases(city).key.parent
            state = city.tmp_path / "firmware" / gateway_id
            sections["firmware"] = (
                f'release_keys = ["{keys / "release.key.pub"}"]\n'
                f'state_dir = "{state}"\nhealth_deadline_s = 60\nhealth_interval_s = 5\n'
                f"stability_s = {stability_s}"
            )
        if lamps:
            sections["lamps"] = "\n".join(
                f'[[lamps]]\nid = "lamp-{i}"\nbackend = "simulated"\nnominal_power_w = 60'
                for i in range(lamps)
            )
        token = await city.register(gateway_id, commune)
        config = city.agent_config(gateway_id, **sections)
        await enroll(config, token)
        cabinet = Cabinet(config, ManualClock(datetime.now(UTC)), **kw)
        made.append(cabinet)
        agent = await cabinet.start()
        await asyncio.wait_for(agent.link.status.connected.wait(), 15)
        return cabinet

    yield make
    for cabinet in made:
        await cabinet.stop()


@pytest.fixture
async def manual_city(
    tmp_path: Path, ca: CertificateAuthority
) -> AsyncIterator[tuple[City, ManualClock]]:
    """A city whose orchestrator runs on a manual clock (campaign windows, daylight)."""
    clock = ManualClock(datetime.now(UTC))
    config = orchestrator_config(tmp_path)
    running = await start(config, clock, ca=ca)
    city = City(tmp_path, ca, config, running, admin=None)  # type: ignore[arg-type]
    city.admin = city.operator("admin", "admin", ["*"])
    try:
        yield city, clock
    finally:
        await city.running.stop(0)
