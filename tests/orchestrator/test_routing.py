"""Two orchestrator replicas on one PostgreSQL database: an operator on one replica reaches
a gateway whose stream is held by the other (LISTEN/NOTIFY), at once, not at its next hello.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from foundation.clock import SystemClock
from ondijon.client import AdminClient
from orchestrator.server import Running, start
from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2
from provisioning.ca import CertificateAuthority
from tests.conftest import City, orchestrator_config, postgres_url
from tests.edge.test_agent import lighting, running
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def pg_url() -> AsyncIterator[str]:
    base = postgres_url()
    name = f"ondijon_routing_{uuid.uuid4().hex[:10]}"
    admin = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.rsplit("/", 1)[0] + f"/{name}"
    yield url  # type: ignore[misc]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def two_replicas(
    tmp_path: Path, ca: CertificateAuthority, pg_url: str
) -> AsyncIterator[tuple[City, Running]]:
    config_a = replace(
        orchestrator_config(tmp_path / "a"), store_url=pg_url, ca_dir=tmp_path / "ca"
    )
    config_b = replace(
        orchestrator_config(tmp_path / "b"), store_url=pg_url, ca_dir=tmp_path / "ca"
    )
    replica_a = await start(config_a, SystemClock(), ca=ca)
    replica_b = await start(config_b, SystemClock(), ca=ca)
    city = City(tmp_path, ca, config_a, replica_a, admin=None)  # type: ignore[arg-type]
    city.admin = city.operator("admin", "admin", ["*"])
    await asyncio.wait_for(replica_a.app.router.listening.wait(), 10)
    await asyncio.wait_for(replica_b.app.router.listening.wait(), 10)
    try:
        yield city, replica_b
    finally:
        await replica_b.stop(0)
        await city.running.stop(0)


async def test_a_schedule_and_a_command_typed_on_another_replica_reach_the_gateway(
    two_replicas: tuple[City, Running], tmp_path: Path
) -> None:
    city, replica_b = two_replicas
    config = await city.enrolled(
        "dj-routed", lamps='[[lamps]]\nid = "lamp-1"\nbackend = "simulated"\nnominal_power_w = 60'
    )
    on_b = city.operator("operator-b", "operator", ["*"])
    on_b = replace(on_b, address=f"localhost:{replica_b.port}")
    async with running(config) as agent:
        await asyncio.wait_for(agent.link.status.connected.wait(), 15)
        assert replica_b.app.hub.session("dj-routed") is None  # the stream is on replica A

        await AdminClient(on_b).put_desired_state(
            control_pb2.PutDesiredStateRequest(
                gateway_id="dj-routed", kind=link_pb2.DOCUMENT_KIND_SCHEDULE, payload=lighting(30)
            ),
        )
        await eventually(lambda: agent.lamps[0].controller.level == 30, timeout=10)

        command = link_pb2.Command(
            command_id="routed-1",
            override=schedule_pb2.Override(
                id="incident", priority=5, kind=schedule_pb2.DEVICE_KIND_LAMP, lamp_level=100
            ),
        )
        # The override lives on the agent's clock (21 June 2026, see ``running``).
        agent_now = agent.clock.now()
        command.override.start.FromDatetime(agent_now - timedelta(hours=1))
        command.override.expiry.FromDatetime(agent_now + timedelta(hours=1))
        command.expires_at.FromDatetime(datetime.now(UTC) + timedelta(minutes=10))
        await AdminClient(on_b).send_command(
            control_pb2.SendCommandRequest(gateway_id="dj-routed", command=command),
        )
        await eventually(lambda: agent.lamps[0].controller.level == 100, timeout=10)


async def test_a_revocation_on_one_replica_closes_the_stream_held_by_another_at_once(
    two_replicas: tuple[City, Running],
) -> None:
    city, replica_b = two_replicas
    config = await city.enrolled("dj-revoked")
    admin_b = replace(city.admin, address=f"localhost:{replica_b.port}")
    async with running(config) as agent:
        await asyncio.wait_for(agent.link.status.connected.wait(), 15)
        assert city.running.app.hub.session("dj-revoked") is not None
        started = asyncio.get_running_loop().time()
        await AdminClient(admin_b).revoke_gateway(
            control_pb2.RevokeGatewayRequest(gateway_id="dj-revoked", reason="stolen cabinet"),
        )
        await eventually(lambda: city.running.app.hub.session("dj-revoked") is None, timeout=10)
        # Well before replica A's own sweep (every 5 s) would have found it.
        assert asyncio.get_running_loop().time() - started < 2.5
