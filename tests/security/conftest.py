"""Helpers of the security tests: gateways enrolled for real, GatewayLink streams opened by
hand (with any certificate, sending any bytes), channels with arbitrary credentials, and
snapshots of the store to show that a refused message changed nothing.

Everything runs over real mutual TLS on loopback, against the ``city`` fixture's
orchestrator (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from edge.config import AgentConfig
from edge.identity import Credentials, enroll, load_credentials
from foundation.clock import ManualClock
from orchestrator.access.limits import RateLimits
from orchestrator.server import start
from orchestrator.store.schema import metadata
from orchestrator.wiring import Orchestrator
from protos.ondijon.v1 import link_pb2
from provisioning.ca import CertificateAuthority, key_to_pem, load_certs, new_private_key
from provisioning.identity import Identity, Role
from tests.conftest import City, orchestrator_config
from tests.nothing_lost.harness import LinkProxy

CONNECT = "/ondijon.v1.GatewayLink/Connect"


@dataclasses.dataclass
class ClockedCity(City):
    """A :class:`City` whose orchestrator reads a :class:`ManualClock`."""

    clock: ManualClock = dataclasses.field(default_factory=lambda: ManualClock(datetime.now(UTC)))


async def enrolled(city: City, gateway_id: str, commune: str = "Dijon") -> AgentConfig:
    """Register ``gateway_id`` in ``commune`` and enroll it like an installer would."""
    token = await city.register(gateway_id, commune)
    config = city.agent_config(gateway_id)
    await enroll(config, token)
    return config


def channel(
    address: str,
    root_pem: bytes,
    key_pem: bytes | None = None,
    chain_pem: bytes | None = None,
) -> grpc.aio.Channel:
    """A TLS channel presenting ``chain_pem`` (or no certificate at all)."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root_pem, private_key=key_pem, certificate_chain=chain_pem
    )
    return grpc.aio.secure_channel(address, credentials)


def gateway_channel(city: City, config: AgentConfig) -> grpc.aio.Channel:
    creds = load_credentials(config)
    return channel(city.address, creds.root_pem, creds.key_pem, creds.chain_pem)


def leaf(
    ca: CertificateAuthority, identity: Identity, *, now: datetime, lifetime: timedelta
) -> tuple[bytes, bytes]:
    """A key and chain for ``identity`` signed by ``ca`` (not recorded in any store)."""
    key_pem, issued = ca.issue_keypair(identity, now=now, lifetime=lifetime)
    return key_pem, issued.chain_pem


def fresh_key_pem() -> bytes:
    return key_to_pem(new_private_key())


class GatewayStream:
    """One GatewayLink stream driven by hand: any message, any bytes, in any order."""

    def __init__(self, chan: grpc.aio.Channel) -> None:
        self.channel = chan
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        connect = chan.stream_stream(
            CONNECT,
            request_serializer=None,
            response_deserializer=link_pb2.ConnectResponse.FromString,
        )
        self.call: Any = connect(self._requests())

    async def _requests(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._out.get()
            if item is None:
                return
            yield item

    def send(self, request: link_pb2.ConnectRequest) -> None:
        self._out.put_nowait(request.SerializeToString())

    def send_raw(self, raw: bytes) -> None:
        self._out.put_nowait(raw)

    def end(self) -> None:
        self._out.put_nowait(None)

    async def recv(self, timeout: float = 10.0) -> link_pb2.ConnectResponse:
        """The next message; raises ``grpc.aio.AioRpcError`` if the stream ended in error."""
        response = await asyncio.wait_for(self.call.read(), timeout)
        if response is grpc.aio.EOF:
            raise EOFError("the orchestrator ended the stream")
        assert isinstance(response, link_pb2.ConnectResponse)
        return response

    async def hello(self, **fields: Any) -> link_pb2.Welcome:
        self.send(link_pb2.ConnectRequest(hello=link_pb2.Hello(protocol_revision=1, **fields)))
        first = await self.recv()
        assert first.WhichOneof("body") == "welcome", first
        return first.welcome

    async def closing_status(self, timeout: float = 10.0) -> grpc.StatusCode:
        """Read until the stream ends; the status it ended with."""
        with contextlib.suppress(grpc.aio.AioRpcError, EOFError):
            while True:
                await self.recv(timeout)
        code = await asyncio.wait_for(self.call.code(), timeout)
        assert isinstance(code, grpc.StatusCode)
        return code


@contextlib.asynccontextmanager
async def stream(chan: grpc.aio.Channel) -> AsyncIterator[GatewayStream]:
    s = GatewayStream(chan)
    try:
        yield s
    finally:
        s.end()
        s.call.cancel()


def credentials_of(config: AgentConfig) -> Credentials:
    return load_credentials(config)


def serial_of(config: AgentConfig) -> str:
    """The serial (hex, as the store keeps it) of the gateway's current certificate."""
    chain = load_credentials(config).chain_pem
    return format(load_certs(chain, "gateway.pem")[0].serial_number, "x")


def relax(app: Orchestrator, **overrides: Any) -> None:
    """Replace the rate limits in force (admission and enrollment follow at once)."""
    app.live_rates.current = dataclasses.replace(RateLimits(), **overrides)


GENEROUS = {
    "calls_per_s": 1e6,
    "call_burst": 1e6,
    "stream_opens_per_s": 1e6,
    "stream_open_burst": 1e6,
    "renewals_per_s": 1e6,
    "renewal_burst": 1e6,
    "enroll_failures_per_s": 1e6,
    "enroll_failure_burst": 1e6,
}


def snapshot(app: Orchestrator, *, skip: tuple[str, ...] = ("audit_log",)) -> dict[str, Any]:
    """Every row of every table but ``skip``, in a comparable form (which replica holds a
    gateway's stream is liveness, not data: a refused stream ends and its row goes)."""
    out: dict[str, Any] = {}
    with app.runner.store.engine.connect() as conn:
        for name in sorted(sa.inspect(conn).get_table_names()):
            if name in skip or name in ("alembic_version", "gateway_streams"):
                continue
            table = metadata.tables.get(name)
            if table is None:
                table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            rows = conn.execute(sa.select(table)).all()
            out[name] = sorted(repr(tuple(r)) for r in rows)
    return out


def audit_rows(app: Orchestrator) -> list[dict[str, Any]]:
    with app.runner.store.engine.connect() as conn:
        return app.runner.store.audit_entries(conn, limit=100_000)


def operator_identity(name: str) -> Identity:
    return Identity(Role.OPERATOR, name)


@pytest.fixture
async def clocked_city(tmp_path: Path, ca: CertificateAuthority) -> AsyncIterator[ClockedCity]:
    """A city whose orchestrator runs on a manual clock (token expiry without waiting)."""
    clock = ManualClock(datetime.now(UTC))
    config = orchestrator_config(tmp_path)
    running = await start(config, clock, ca=ca)
    city = ClockedCity(tmp_path, ca, config, running, admin=None, clock=clock)  # type: ignore[arg-type]
    city.admin = city.operator("admin", "admin", ["*"])
    try:
        yield city
    finally:
        await city.running.stop(0)


def another_host(port: int) -> LinkProxy:
    """A proxy whose connections reach ``port`` from 127.0.0.2: another client host, for
    budgets kept per address."""
    return LinkProxy(lambda: port, source="127.0.0.2")


async def codes_of(calls: list[Any], timeout: float) -> list[grpc.StatusCode]:
    """The status each call ended with; fails if any is still open after ``timeout``."""

    async def code(held: Any) -> grpc.StatusCode:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await held
        result = await held.code()
        assert isinstance(result, grpc.StatusCode)
        return result

    return list(await asyncio.wait_for(asyncio.gather(*(code(c) for c in calls)), timeout))


async def revoked_and_enrolled_again(city: City, config: AgentConfig) -> Credentials:
    """Revoke the gateway (its key stolen), enroll it again with a fresh token; the stolen
    credentials."""
    from ondijon.client import AdminClient
    from protos.ondijon.v1 import control_pb2

    stolen = load_credentials(config)
    await AdminClient(city.admin).revoke_gateway(
        control_pb2.RevokeGatewayRequest(gateway_id=config.gateway_id, reason="key-compromise"),
    )
    fresh = await AdminClient(city.admin).issue_enrollment_token(
        control_pb2.IssueEnrollmentTokenRequest(gateway_id=config.gateway_id),
    )
    await enroll(config, fresh.enrollment_token)
    return stolen


async def never_sent() -> AsyncIterator[bytes]:
    """A request stream that never sends anything: a call held open without its request."""
    await asyncio.Event().wait()
    yield b""  # pragma: no cover


def held_calls(chan: grpc.aio.Channel, method: str, count: int) -> list[Any]:
    """``count`` calls of ``method`` opened on ``chan`` that never send their request."""
    opened = chan.stream_unary(method, request_serializer=None, response_deserializer=None)
    return [opened(never_sent()) for _ in range(count)]
