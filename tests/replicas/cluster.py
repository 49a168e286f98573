"""Three orchestrator replicas on one PostgreSQL database, real agents behind a balancer,
and a proxy in front of everything that can fail.

::

    agent ─ proxy ─┐                  ┌─ replica A ─ proxy ─┐
    agent ─ proxy ─┼─ balancer ───────┼─ replica B ─ proxy ─┼─ PostgreSQL
    agent ─ proxy ─┘  (round robin,   └─ replica C ─ proxy ─┘
                       gRPC health)

- each replica is a real orchestrator (:func:`orchestrator.server.start`), mutual TLS on
  loopback, with its own state directory, sharing the CA and the database;
- the balancer is a TCP proxy (:class:`tests.nothing_lost.harness.LinkProxy`) whose
  upstream is the next replica, round robin, among those whose standard gRPC health check
  (``grpc.health.v1``, asked on the enrollment port, as a load balancer would) says
  SERVING;
- every agent and every replica's store connection goes through its own proxy, which can
  black-hole live connections (a cellular or NAT timeout) or stall them (bytes held, no
  error);
- agents are the real :class:`edge.agent.Agent`, in this process, on a manual clock.

Timers are short (keepalives of a second or two, a store deadline of two seconds) so that
what takes a minute in the field takes seconds here; the code paths are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edge.agent import Agent
from edge.link import Backoff
from foundation.clock import ManualClock, SystemClock
from ondijon.client import AdminClient
from orchestrator.config import Limits, OrchestratorConfig
from orchestrator.server import Running, start
from orchestrator.store.connection import StoreSettings
from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2
from provisioning.ca import CertificateAuthority
from provisioning.profile import Profile
from tests.conftest import City, orchestrator_config, postgres_url
from tests.nothing_lost.harness import LinkProxy
from tests.waiting import eventually

T = TypeVar("T")

AGENT_T0 = datetime(2026, 6, 21, 20, 0, tzinfo=UTC)
HEALTH_EVERY_S = 0.2

LIMITS = Limits(
    keepalive_time_s=2,
    keepalive_timeout_s=1,
    min_client_ping_interval_s=1,
    catch_up_s=3.0,
)
STORE = StoreSettings(connect_timeout_s=2, statement_timeout_s=5, deadline_s=2.0)
# The agents' keepalive: a ping every 2 s, dead after 1 s without an answer.
AGENT_KEEPALIVE = {"keepalive_s": 2.0, "keepalive_timeout_s": 1.0}


@contextlib.contextmanager
def database() -> Iterator[sa.URL]:
    """A fresh PostgreSQL database, dropped afterwards."""
    base = sa.make_url(postgres_url())
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"ondijon_replicas_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class StoreProxy:
    """A :class:`LinkProxy` in front of PostgreSQL, on an event loop of its own thread: the
    orchestrator opens its store synchronously at start-up, which would block a proxy
    running on the test's own loop."""

    def __init__(self, upstream_port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy: LinkProxy = self._run(self._open(upstream_port))

    async def _open(self, upstream_port: int) -> LinkProxy:
        proxy = LinkProxy(lambda: upstream_port)
        return await proxy.__aenter__()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def _do(self, action: Callable[[], object]) -> None:
        async def act() -> None:
            action()

        self._run(act())

    @property
    def port(self) -> int:
        return self.proxy.port

    def stall(self) -> None:
        self._do(self.proxy.stall)

    def resume(self) -> None:
        self._do(self.proxy.resume)

    def crash(self) -> None:
        """Refuse new connections and reset the live ones."""

        def down() -> None:
            self.proxy.online = False
            self.proxy.cut_now()

        self._do(down)

    def restore(self) -> None:
        """Accept connections and pass bytes again."""

        def up() -> None:
            self.proxy.online = True
            self.proxy.resume()

        self._do(up)

    def close(self) -> None:
        self._run(self.proxy.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@dataclasses.dataclass(eq=False)
class Replica:
    name: str
    config: OrchestratorConfig
    store_proxy: StoreProxy
    running: Running | None = None

    @property
    def live(self) -> Running:
        assert self.running is not None, f"replica {self.name} is down"
        return self.running


class Balancer:
    """Round robin over the replicas whose gRPC health check answers SERVING."""

    def __init__(
        self, replicas: list[Replica], root_pem: bytes, *, health_every_s: float = HEALTH_EVERY_S
    ) -> None:
        self.replicas = replicas
        self.root_pem = root_pem
        self.health_every_s = health_every_s
        self.serving: dict[str, bool] = {r.name: False for r in replicas}
        self._next = 0
        self.proxy = LinkProxy(self.pick)
        self._task: asyncio.Task[None] | None = None

    def pick(self) -> int:
        for _ in range(len(self.replicas)):
            replica = self.replicas[self._next % len(self.replicas)]
            self._next += 1
            if replica.running is not None and self.serving[replica.name]:
                return replica.running.port
        return next((r.running.port for r in self.replicas if r.running is not None), 9)

    async def __aenter__(self) -> Balancer:
        await self.proxy.__aenter__()
        self._task = asyncio.create_task(self._check_health())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.proxy.__aexit__(*exc)

    async def _check_health(self) -> None:
        credentials = grpc.ssl_channel_credentials(root_certificates=self.root_pem)
        channels: dict[int, grpc.aio.Channel] = {}
        try:
            while True:
                for replica in self.replicas:
                    self.serving[replica.name] = await self._serving(replica, channels, credentials)
                await asyncio.sleep(self.health_every_s)
        finally:
            for channel in channels.values():
                await channel.close()

    @staticmethod
    async def _serving(
        replica: Replica,
        channels: dict[int, grpc.aio.Channel],
        credentials: grpc.ChannelCredentials,
    ) -> bool:
        if replica.running is None:
            return False
        port = replica.running.enroll_port
        if port not in channels:
            channels[port] = grpc.aio.secure_channel(f"localhost:{port}", credentials)
        stub = health_pb2_grpc.HealthStub(channels[port])
        try:
            answer = await stub.Check(
                health_pb2.HealthCheckRequest(service="ondijon.v1.GatewayLink"), timeout=0.5
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


@dataclasses.dataclass
class Cabinet:
    """A running agent and the proxy its link goes through."""

    gateway_id: str
    agent: Agent
    proxy: LinkProxy
    task: asyncio.Task[None]

    @property
    def sessions(self) -> int:
        return self.agent.link.status.sessions


@dataclasses.dataclass
class Cluster:
    tmp_path: Path
    ca: CertificateAuthority
    db: sa.URL
    replicas: list[Replica]
    balancer: Balancer
    city: City
    cabinets: dict[str, Cabinet] = dataclasses.field(default_factory=dict)
    agent_keepalive: dict[str, float] = dataclasses.field(default_factory=dict)
    _stack: contextlib.AsyncExitStack = dataclasses.field(default_factory=contextlib.AsyncExitStack)

    # -- replicas ----------------------------------------------------------------------------

    async def start_replica(self, replica: Replica) -> None:
        replica.running = await start(replica.config, SystemClock(), ca=self.ca)
        await asyncio.wait_for(replica.running.app.router.listening.wait(), 10)

    async def crash(self, replica: Replica) -> None:
        """The replica's process dies: its database connections drop, its sockets close,
        nothing of it says goodbye (its streams' rows stay in the store until their lease
        runs out or newer streams replace them)."""
        replica.store_proxy.crash()
        running, replica.running = replica.live, None
        await running.stop(0)

    def holding(self, gateway_id: str) -> Replica | None:
        """The replica whose hub holds the gateway's stream."""
        for replica in self.replicas:
            if replica.running is not None and replica.running.app.hub.session(gateway_id):
                return replica
        return None

    def operator(self, replica: Replica) -> Profile:
        return dataclasses.replace(self.city.admin, address=f"localhost:{replica.live.port}")

    # -- agents ----------------------------------------------------------------------------------

    async def cabinet(self, gateway_id: str) -> Cabinet:
        """Register, enroll and run an agent with one simulated lamp, through its proxy and
        the balancer; returns once it is connected."""
        token = await self.city.register(gateway_id)
        config = self.city.agent_config(
            gateway_id,
            lamps='[[lamps]]\nid = "lamp-1"\nbackend = "simulated"\nnominal_power_w = 60',
        )
        from edge.identity import enroll

        await enroll(config, token)
        proxy = await self._stack.enter_async_context(LinkProxy(lambda: self.balancer.proxy.port))
        config = dataclasses.replace(config, address=proxy.address, **self.agent_keepalive)
        agent = Agent(config, ManualClock(AGENT_T0))
        agent.link.backoff = Backoff(base_s=0.05, cap_s=0.5)
        cabinet = Cabinet(gateway_id, agent, proxy, asyncio.create_task(agent.run()))
        self.cabinets[gateway_id] = cabinet
        await asyncio.wait_for(agent.link.status.connected.wait(), 20)
        return cabinet

    async def stop_cabinet(self, cabinet: Cabinet) -> None:
        cabinet.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cabinet.task
        self.cabinets.pop(cabinet.gateway_id, None)

    async def close(self) -> None:
        for cabinet in list(self.cabinets.values()):
            await self.stop_cabinet(cabinet)
        for replica in self.replicas:
            replica.store_proxy.resume()
            if replica.running is not None:
                running, replica.running = replica.running, None
                await running.stop(0)
        await self._stack.aclose()


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path,
    ca: CertificateAuthority,
    replicas: int = 3,
    *,
    limits: Limits = LIMITS,
    store: StoreSettings = STORE,
    agent_keepalive: dict[str, float] | None = None,
) -> AsyncIterator[Cluster]:
    with database() as db:
        async with contextlib.AsyncExitStack() as stack:
            members: list[Replica] = []
            for i in range(replicas):
                name = "ABCDEFGH"[i]
                store_proxy = StoreProxy(db.port or 5432)
                stack.callback(store_proxy.close)
                url = db.set(host="127.0.0.1", port=store_proxy.port)
                config = dataclasses.replace(
                    orchestrator_config(tmp_path / name),
                    store_url=url.render_as_string(hide_password=False),
                    ca_dir=tmp_path / "ca",
                    limits=limits,
                    store=store,
                )
                members.append(Replica(name, config, store_proxy))
            balancer = await stack.enter_async_context(Balancer(members, ca.root_pem))
            built = Cluster(tmp_path, ca, db, members, balancer, city=None)  # type: ignore[arg-type]
            built.agent_keepalive = agent_keepalive or AGENT_KEEPALIVE
            for replica in members:
                await built.start_replica(replica)
            city = City(tmp_path, ca, members[0].config, members[0].live, admin=None)  # type: ignore[arg-type]
            city.admin = city.operator("admin", "admin", ["*"])
            built.city = city
            try:
                await _until(lambda: all(balancer.serving.values()), 10)
                yield built
            finally:
                await built.close()


async def _until(check: Callable[[], object], timeout: float) -> None:
    await eventually(check, timeout=timeout)


# -- what operators do -----------------------------------------------------------------------


def override(command_id: str, level: int, minutes: float = 60) -> link_pb2.Command:
    """A lamp override on the agents' clock (:data:`AGENT_T0`), valid ten minutes of wall time."""
    command = link_pb2.Command(
        command_id=command_id,
        override=schedule_pb2.Override(
            id=command_id, priority=5, kind=schedule_pb2.DEVICE_KIND_LAMP, lamp_level=level
        ),
    )
    command.override.start.FromDatetime(AGENT_T0 - timedelta(hours=1))
    command.override.expiry.FromDatetime(AGENT_T0 + timedelta(minutes=minutes))
    command.expires_at.FromDatetime(datetime.now(UTC) + timedelta(minutes=10))
    return command


async def send(profile: Profile, gateway_id: str, command: link_pb2.Command) -> None:
    await AdminClient(profile).send_command(
        control_pb2.SendCommandRequest(gateway_id=gateway_id, command=command),
    )


async def command_status(profile: Profile, command_id: str) -> int:
    answer = await AdminClient(profile).get_command(
        control_pb2.GetCommandRequest(command_id=command_id)
    )
    return int(answer.status)


async def fleet(profile: Profile) -> dict[str, bool]:
    """``gateway list`` through ``profile``'s replica: gateway id -> connected."""
    answer = await AdminClient(profile).list_gateways(control_pb2.ListGatewaysRequest())
    return {g.gateway_id: g.connected for g in answer.gateways}
