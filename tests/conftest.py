"""Fixtures that start real parts: a CA, an orchestrator over mutual TLS on loopback, and
enrolled agents configured on gpiozero's mock pins.

Services the machine may lack (PostgreSQL, Mosquitto) are looked for here; outside CI a
test that needs a missing one is skipped with the reason, in CI (``CI=true``) it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge.config import AgentConfig
from foundation.clock import SystemClock
from orchestrator.config import OrchestratorConfig
from orchestrator.identity.operators import add_operator
from orchestrator.server import Running, start
from provisioning.ca import CertificateAuthority
from provisioning.profile import Profile

os.environ.setdefault("GPIOZERO_PIN_FACTORY", "mock")

IN_CI = os.environ.get("CI", "").lower() == "true"


def need(available: bool, reason: str) -> None:
    """Skip (outside CI) or fail (in CI) when a service a test needs is missing."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def postgres_url() -> str:
    url = os.environ.get(
        "ONDIJON_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    need(port_open("127.0.0.1", 5432), "PostgreSQL is not listening on 127.0.0.1:5432")
    return url


def mosquitto_binary() -> str:
    path = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    need(path is not None, "the mosquitto binary is not installed")
    assert path is not None
    return path


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "ca", now=datetime.now(UTC))


def orchestrator_config(tmp_path: Path, **limits: Any) -> OrchestratorConfig:
    from orchestrator.config import Limits

    return OrchestratorConfig(
        listen="127.0.0.1:0",
        enroll_listen="127.0.0.1:0",
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
        store_url=f"sqlite:///{tmp_path / 'orchestrator.db'}",
        ca_dir=tmp_path / "ca",
        state_dir=tmp_path / "orchestrator",
        gateway_certificate_days=7,
        token_ttl_hours=72,
        limits=Limits(**limits),
    )


@dataclass
class City:
    """An orchestrator, an admin profile, and a way to make enrolled agents."""

    tmp_path: Path
    ca: CertificateAuthority
    config: OrchestratorConfig
    running: Running
    admin: Profile

    @property
    def address(self) -> str:
        return f"localhost:{self.running.port}"

    @property
    def enroll_address(self) -> str:
        return f"localhost:{self.running.enroll_port}"

    def agent_config(self, gateway_id: str, **sections: Any) -> AgentConfig:
        """Write an agent TOML for ``gateway_id`` and load it."""
        from edge.config import AgentConfig

        state_dir = self.tmp_path / "agents" / gateway_id
        state_dir.mkdir(parents=True, exist_ok=True)
        ca_file = self.tmp_path / "root.pem"
        ca_file.write_bytes(self.ca.root_pem)
        lines = [
            "[gateway]",
            f'id = "{gateway_id}"',
            f'serial = "SN-{gateway_id}"',
            f'state_dir = "{state_dir}"',
            "[orchestrator]",
            f'address = "{self.address}"',
            f'enroll_address = "{self.enroll_address}"',
            f'ca_file = "{ca_file}"',
            "[site]",
            "latitude = 47.322",
            "longitude = 5.0415",
            'time_zone = "Europe/Paris"',
            "[link]",
            "report_interval_s = 0.1",
        ]
        for name, body in sections.items():
            lines.append(body if body.lstrip().startswith("[") else f"[{name}]\n{body}")
        path = state_dir / "agent.toml"
        path.write_text("\n".join(lines) + "\n")
        return AgentConfig.load(path)

    async def register(self, gateway_id: str, commune: str = "Dijon") -> str:
        """Register a gateway through the admin API; returns its enrollment token."""
        from ondijon.client import AdminClient
        from protos.ondijon.v1 import control_pb2

        response = await AdminClient(self.admin).add_gateway(
            control_pb2.AddGatewayRequest(
                gateway_id=gateway_id,
                serial=f"SN-{gateway_id}",
                commune=commune,
                latitude=47.322,
                longitude=5.0415,
                time_zone="Europe/Paris",
            ),
        )
        return response.enrollment_token

    async def enrolled(self, gateway_id: str, **sections: Any) -> AgentConfig:
        """Register, configure and enroll a gateway."""
        from edge.identity import enroll

        token = await self.register(gateway_id)
        config = self.agent_config(gateway_id, **sections)
        await enroll(config, token)
        return config

    def operator(self, name: str, role: str, communes: list[str]) -> Profile:
        return add_operator(
            self.config,
            name=name,
            role=role,
            communes=communes,
            profile_dir=self.tmp_path / "profiles" / name,
            address=self.address,
            now=datetime.now(UTC),
        )

    async def restart(self) -> None:
        """Stop the orchestrator and start it again on the same ports and store."""
        port, enroll_port = self.running.port, self.running.enroll_port
        await self.running.stop(0)
        from dataclasses import replace

        config = replace(
            self.config,
            listen=f"127.0.0.1:{port}",
            enroll_listen=f"127.0.0.1:{enroll_port}",
        )
        self.running = await start(config, SystemClock(), ca=self.ca)


@contextlib.asynccontextmanager
async def started_city(
    tmp_path: Path, ca: CertificateAuthority, **limits: Any
) -> AsyncIterator[City]:
    """An orchestrator (with ``limits`` other than the defaults) and an admin profile."""
    config = orchestrator_config(tmp_path, **limits)
    running = await start(config, SystemClock(), ca=ca)
    city = City(tmp_path, ca, config, running, admin=None)  # type: ignore[arg-type]
    city.admin = city.operator("admin", "admin", ["*"])
    try:
        yield city
    finally:
        await city.running.stop(0)


@pytest.fixture
async def city(tmp_path: Path, ca: CertificateAuthority) -> AsyncIterator[City]:
    async with started_city(tmp_path, ca) as started:
        yield started


@pytest.fixture
def lamp_table() -> Callable[[int], str]:
    """TOML for ``n`` simulated lamps."""

    def make(n: int) -> str:
        return "\n".join(
            f'[[lamps]]\nid = "lamp-{i:03d}"\nbackend = "simulated"\nnominal_power_w = 60'
            for i in range(1, n + 1)
        )

    return make


def offline_agent_config(tmp_path: Path, gateway_id: str, equipment: str) -> AgentConfig:
    """An agent configuration whose orchestrator is unreachable (the agent on its own),
    with the given equipment tables (TOML)."""
    (tmp_path / "root.pem").write_text("")
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""[gateway]
id = "{gateway_id}"
serial = "SN-{gateway_id}"
state_dir = "{tmp_path / "state"}"
[orchestrator]
address = "127.0.0.1:9"
ca_file = "{tmp_path / "root.pem"}"
[site]
latitude = 47.322
longitude = 5.0415
time_zone = "Europe/Paris"
{equipment}
"""
    )
    return AgentConfig.load(path)
