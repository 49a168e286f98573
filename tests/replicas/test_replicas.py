"""Three replicas, one truth: what an operator sees and what a gateway receives do not
depend on which replica answers, nor on which part of the system failed quietly.

Each test runs the cluster of :mod:`tests.replicas.cluster` (three replicas on PostgreSQL,
real agents behind a round-robin balancer with health checks, a proxy in front of each
agent and of each replica's store) and breaks one thing the way the field does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edge.events import EquipmentEvent, Priority
from edge.identity import load_credentials
from ondijon.client import AdminClient, AdminError
from orchestrator.ingest.routing import LEASE_SECONDS
from orchestrator.store.database import Store
from protos.ondijon.v1 import control_pb2, control_pb2_grpc, link_pb2, link_pb2_grpc
from provisioning.profile import Profile
from tests.edge.test_agent import lighting
from tests.replicas.cluster import (
    AGENT_T0,
    Cabinet,
    Cluster,
    Replica,
    command_status,
    fleet,
    override,
    send,
)

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

PENDING, DONE = link_pb2.COMMAND_STATUS_PENDING, link_pb2.COMMAND_STATUS_DONE


async def until(check: Callable[[], Awaitable[object]], timeout: float = 15.0) -> float:
    """Poll the async ``check`` until truthy; returns the seconds it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def lamp_level(cabinet: Cabinet) -> int:
    return int(cabinet.agent.lamps[0].controller.level)


def other(three: Cluster, *not_these: Replica | None) -> Replica:
    return next(r for r in three.replicas if r not in not_these and r.running is not None)


@contextlib.asynccontextmanager
async def feed_on(
    profile: Profile, replica: Replica
) -> AsyncIterator[list[control_pb2.StoredEvent]]:
    """``ondijon events --watch`` through ``replica``: the list fills as events arrive."""
    seen: list[control_pb2.StoredEvent] = []
    async with profile.channel() as chan:
        stream = control_pb2_grpc.ControlCentreStub(chan).WatchEvents(
            control_pb2.WatchEventsRequest()
        )

        async def read() -> None:
            async for answer in stream:
                seen.append(answer.event)

        reader = asyncio.create_task(read())
        hub = replica.live.app.hub
        for _ in range(200):
            if hub.has_watchers():
                break
            await asyncio.sleep(0.02)
        try:
            yield seen
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader


def mark(cabinet: Cabinet, what: str) -> None:
    """The cabinet records an event (as its equipment would)."""
    cabinet.agent.record(
        EquipmentEvent(
            device_id="lamp-1", type="test.mark", priority=Priority.EVENT, at=AGENT_T0, message=what
        )
    )


# -- 1. the fleet view is the store's --------------------------------------------------------


async def test_every_replica_shows_the_whole_fleet_as_it_is(three: Cluster) -> None:
    cabinets = [await three.cabinet(f"dj-fleet-{i}") for i in range(6)]
    holders = {three.holding(c.gateway_id) for c in cabinets}
    assert len(holders) == 3, "the balancer spreads the streams over the three replicas"
    everyone = {c.gateway_id: True for c in cabinets}
    for replica in three.replicas:
        assert await fleet(three.operator(replica)) == everyone, replica.name

    gone = cabinets[0]
    await three.stop_cabinet(gone)
    for replica in three.replicas:
        profile = three.operator(replica)
        await until(lambda p=profile: _offline(p, gone.gateway_id), timeout=5)


async def _offline(profile: Profile, gateway_id: str) -> bool:
    return (await fleet(profile))[gateway_id] is False


async def test_a_crashed_replicas_gateways_are_served_elsewhere_and_shown_connected(
    three: Cluster,
) -> None:
    cabinets = [await three.cabinet(f"dj-crash-{i}") for i in range(3)]
    victim = three.holding(cabinets[0].gateway_id)
    assert victim is not None
    moved = [c for c in cabinets if three.holding(c.gateway_id) is victim]
    sessions = {c.gateway_id: c.sessions for c in moved}
    await three.crash(victim)
    started = time.monotonic()
    for cabinet in moved:
        await until(lambda c=cabinet: _served(three, c, sessions[c.gateway_id]), timeout=10)
    failover = time.monotonic() - started
    survivor = three.operator(other(three, victim))
    assert await fleet(survivor) == {c.gateway_id: True for c in cabinets}
    # Well inside the lease a dead replica's rows keep: the new streams replaced them.
    assert failover < LEASE_SECONDS / 2, f"failover took {failover:.1f} s"


async def _served(three: Cluster, cabinet: Cabinet, sessions_before: int) -> bool:
    return cabinet.sessions > sessions_before and three.holding(cabinet.gateway_id) is not None


async def test_a_replica_stopping_gracefully_hands_its_gateways_over_at_once(
    three: Cluster,
) -> None:
    cabinets = [await three.cabinet(f"dj-stop-{i}") for i in range(3)]
    leaving = three.holding(cabinets[0].gateway_id)
    assert leaving is not None
    moved = [c for c in cabinets if three.holding(c.gateway_id) is leaving]
    sessions = {c.gateway_id: c.sessions for c in moved}
    # SIGTERM: a long grace for calls under way. A gateway's link never ends by itself:
    # it must not be held on the leaving replica until the grace runs out.
    grace = 30.0
    stopping = asyncio.create_task(leaving.live.stop(grace))
    started = time.monotonic()

    async def elsewhere(cabinet: Cabinet) -> bool:
        holder = three.holding(cabinet.gateway_id)
        return cabinet.sessions > sessions[cabinet.gateway_id] and holder not in (None, leaving)

    try:
        for cabinet in moved:
            await until(lambda c=cabinet: elsewhere(c), timeout=grace / 3)
        took = time.monotonic() - started
    finally:
        await asyncio.wait_for(stopping, grace + 10)
        leaving.running = None
    assert took < grace / 6, f"served elsewhere {took:.1f} s after the stop began"
    survivor = three.operator(other(three, leaving))
    assert await fleet(survivor) == {c.gateway_id: True for c in cabinets}


# -- 2. a feed shows the whole fleet ------------------------------------------------------


async def test_a_feed_on_one_replica_shows_the_events_every_replica_stores(
    three: Cluster,
) -> None:
    cabinets = [await three.cabinet(f"dj-feed-{i}") for i in range(3)]
    watched = three.replicas[0]
    assert {three.holding(c.gateway_id) for c in cabinets} == set(three.replicas)
    async with feed_on(three.operator(watched), watched) as seen:
        for cabinet in cabinets:
            mark(cabinet, cabinet.gateway_id)

        async def all_three() -> bool:
            return len([e for e in seen if e.event.type == "test.mark"]) >= 3

        await until(all_three, timeout=10)
        await asyncio.sleep(0.5)  # nothing twice either
    marks = sorted(e.gateway_id for e in seen if e.event.type == "test.mark")
    assert marks == sorted(c.gateway_id for c in cabinets)


# -- 3. a replica that loses its store ------------------------------------------------------


async def _health(replica: Replica) -> int:
    async with grpc.aio.secure_channel(
        f"localhost:{replica.live.enroll_port}",
        grpc.ssl_channel_credentials(root_certificates=replica_root(replica)),
    ) as chan:
        answer = await health_pb2_grpc.HealthStub(chan).Check(
            health_pb2.HealthCheckRequest(service="ondijon.v1.GatewayLink"), timeout=2
        )
        return int(answer.status)


def replica_root(replica: Replica) -> bytes:
    return replica.live.app.ca.root_pem


async def test_a_replica_whose_store_stalls_says_so_hands_its_gateways_over_and_comes_back(
    three: Cluster,
) -> None:
    cabinets = [await three.cabinet(f"dj-stall-{i}") for i in range(3)]
    stalled = three.holding(cabinets[0].gateway_id)
    assert stalled is not None
    before = {c.gateway_id: c.sessions for c in cabinets}
    stalled.store_proxy.stall()
    started = time.monotonic()

    # An operator on the stalled replica hears UNAVAILABLE, well before a client's deadline.
    with pytest.raises(AdminError) as caught:
        await AdminClient(three.operator(stalled)).list_gateways(control_pb2.ListGatewaysRequest())
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 10

    # It says it is not ready, and its gateway moved to a replica that stores.
    async def not_serving() -> bool:
        return await _health(stalled) == health_pb2.HealthCheckResponse.NOT_SERVING

    await until(not_serving, timeout=10)
    moved = cabinets[0]
    await until(lambda: _served(three, moved, before[moved.gateway_id]), timeout=15)
    assert three.holding(moved.gateway_id) is not stalled
    mark(moved, "while the store of its old replica stalls")
    healthy = three.operator(other(three, stalled))

    async def stored() -> bool:
        answer = await AdminClient(healthy).list_events(
            control_pb2.ListEventsRequest(gateway_id=moved.gateway_id)
        )
        return any(e.event.type == "test.mark" for e in answer.events)

    await until(stored, timeout=10)

    # The store answers again: the replica is ready by itself.
    stalled.store_proxy.resume()

    async def serving() -> bool:
        return await _health(stalled) == health_pb2.HealthCheckResponse.SERVING

    await until(serving, timeout=10)
    assert await fleet(three.operator(stalled)) == {c.gateway_id: True for c in cabinets}


# -- 4. notifications are a hint ---------------------------------------------------------------


async def test_a_command_and_a_schedule_whose_notification_was_lost_still_arrive(
    three: Cluster,
) -> None:
    cabinet = await three.cabinet("dj-lost")
    holder = three.holding(cabinet.gateway_id)
    assert holder is not None
    elsewhere = three.operator(other(three, holder))
    router = holder.live.app.router

    # The holder's LISTEN connection is reset; what is sent meanwhile is not heard.
    admin = three.db.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"ondijon-orchestrator-{holder.live.app.replica}-listen",),
        ).fetchall()
    assert killed == [(True,)]
    await until(_not_listening(holder), timeout=5)
    started = time.monotonic()
    await send(elsewhere, cabinet.gateway_id, override("lost-1", 80))
    await AdminClient(elsewhere).put_desired_state(
        control_pb2.PutDesiredStateRequest(
            gateway_id=cabinet.gateway_id,
            kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
            payload=lighting(35),
        ),
    )

    async def settled() -> bool:
        return await command_status(elsewhere, "lost-1") == DONE

    await until(settled, timeout=10)
    await until(_held_schedule(cabinet), timeout=10)
    caught_up = time.monotonic() - started
    assert router.listening.is_set()
    assert caught_up < 5, f"caught up after {caught_up:.1f} s"


async def test_an_operator_waiting_on_another_replica_has_the_answer_at_once(
    three: Cluster,
) -> None:
    """``GetCommand`` with ``wait_ms`` on a replica that does not hold the gateway's
    stream: the holder's notice of the answer wakes it (not the end of its wait)."""
    cabinet = await three.cabinet("dj-wait")
    holder = three.holding(cabinet.gateway_id)
    elsewhere = three.operator(other(three, holder))
    await send(elsewhere, cabinet.gateway_id, override("wait-1", 65))
    answer = await asyncio.wait_for(
        AdminClient(elsewhere).get_command(
            control_pb2.GetCommandRequest(command_id="wait-1", wait_ms=20_000)
        ),
        10,
    )
    assert answer.status == DONE and lamp_level(cabinet) == 65


def _not_listening(replica: Replica) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not replica.live.app.router.listening.is_set()

    return check


def _held_schedule(cabinet: Cabinet) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        held = cabinet.agent.held_documents()
        return any(h.kind == link_pb2.DOCUMENT_KIND_SCHEDULE for h in held)

    return check


async def test_a_command_stored_without_any_notification_is_delivered_by_the_periodic_catch_up(
    three: Cluster,
) -> None:
    cabinet = await three.cabinet("dj-quiet")
    holder = three.holding(cabinet.gateway_id)
    assert holder is not None
    command = override("quiet-1", 70)
    store: Store = holder.live.app.runner.store
    with store.engine.begin() as conn:  # as a replica that died between write and notify
        store.add_command(
            conn,
            command_id="quiet-1",
            gateway_id=cabinet.gateway_id,
            payload=command.SerializeToString(),
            expires_at=command.expires_at.ToDatetime().astimezone(),
            status=PENDING,
            created_by="test",
            now=AGENT_T0.now().astimezone(),
        )
    catch_up_s = holder.config.limits.catch_up_s
    took = await until(
        lambda: _status_is(three.operator(holder), "quiet-1", DONE), timeout=catch_up_s + 5
    )
    assert took <= catch_up_s + 2
    assert lamp_level(cabinet) == 70


async def _status_is(profile: Profile, command_id: str, status: int) -> bool:
    return await command_status(profile, command_id) == status


# -- 5. a half-open stream ---------------------------------------------------------------------


async def test_a_half_open_stream_swallows_nothing(three: Cluster) -> None:
    cabinet = await three.cabinet("dj-half")
    old = three.holding(cabinet.gateway_id)
    assert old is not None
    old_session = old.live.app.hub.session(cabinet.gateway_id)
    sessions = cabinet.sessions
    # The cellular network drops the cabinet's connection without a word to either side;
    # a command sent through the replica holding it goes into the dead stream.
    assert cabinet.proxy.black_hole() == 1
    cut = time.monotonic()
    await send(three.operator(old), cabinet.gateway_id, override("into-the-void", 90))
    assert await command_status(three.operator(old), "into-the-void") == PENDING

    # The agent's keepalive finds the link dead and it reconnects through the balancer;
    # the old stream ends wherever the new one opened.
    await until(lambda: _served(three, cabinet, sessions), timeout=10)

    async def old_gone() -> bool:
        return old.live.app.hub.session(cabinet.gateway_id) is not old_session

    detected = await until(old_gone, timeout=10) + (time.monotonic() - cut)
    assert detected < 8, f"the half-open stream was held {detected:.1f} s"

    # The command lost in the dead stream was sent again and answered.
    anywhere = three.operator(other(three))
    await until(lambda: _status_is(anywhere, "into-the-void", DONE), timeout=10)
    assert lamp_level(cabinet) == 90
    # And later commands, through any replica, are answered too.
    for i, replica in enumerate(three.replicas):
        await send(three.operator(replica), cabinet.gateway_id, override(f"after-{i}", 10 + i))
    for i in range(3):
        await until(lambda i=i: _status_is(anywhere, f"after-{i}", DONE), timeout=10)


async def test_a_stream_whose_cabinet_went_silent_is_dropped_by_the_server_keepalive(
    three: Cluster,
) -> None:
    cabinet = await three.cabinet("dj-silent")
    holder = three.holding(cabinet.gateway_id)
    assert holder is not None
    cabinet.proxy.online = False  # it cannot come back either
    cabinet.proxy.black_hole()
    limits = holder.config.limits

    async def dropped() -> bool:
        return holder.live.app.hub.session(cabinet.gateway_id) is None

    took = await until(dropped, timeout=15)
    assert took <= limits.keepalive_time_s + limits.keepalive_timeout_s + 2
    assert (await fleet(three.operator(holder)))[cabinet.gateway_id] is False


async def test_a_newer_stream_on_another_replica_ends_the_older_one_at_once(
    three: Cluster,
) -> None:
    cabinet = await three.cabinet("dj-twice")
    old = three.holding(cabinet.gateway_id)
    assert old is not None
    newer = other(three, old)
    old_session = old.live.app.hub.session(cabinet.gateway_id)
    # The same gateway (same certificate) opens a stream straight to another replica,
    # as it would after its network dropped the first one silently.
    credentials = load_credentials(cabinet.agent.config)
    async with grpc.aio.secure_channel(
        f"localhost:{newer.live.port}", credentials.channel_credentials()
    ) as chan:
        hello = link_pb2.ConnectRequest(hello=link_pb2.Hello(protocol_revision=2))
        stream = link_pb2_grpc.GatewayLinkStub(chan).Connect(iter([hello]))
        first = await stream.read()
        assert first.WhichOneof("body") == "welcome"

        async def old_closed() -> bool:
            return old.live.app.hub.session(cabinet.gateway_id) is not old_session

        # At once: not at a keepalive (the old stream's cabinet still answers its pings).
        assert await until(old_closed, timeout=5) < 1.0
        stream.cancel()
