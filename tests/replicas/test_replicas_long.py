"""The long replica run: ten cabinets on three replicas, every fault of the short suite in
rounds, with the shipped keepalive and store timings, and the figures for the record.

    ONDIJON_REPLICAS_LONG=3 .venv/bin/pytest tests/replicas/test_replicas_long.py -s -p no:randomly

runs 3 rounds (about a minute and a half each) and prints: cross-replica command and
document latency, failover time after a replica dies, time to catch up after a lost
notification, time to find a half-open stream (from the agent's side, then on the
replica that held it), and time to hand gateways over when a replica's store stalls. At
the end no command is left unanswered, every cabinet holds the last schedule, and every
event a cabinet recorded is stored exactly once. Skipped unless the variable is set.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
import pytest

from ondijon.client import AdminClient
from orchestrator.config import Limits
from orchestrator.store.connection import StoreSettings
from protos.ondijon.v1 import control_pb2, link_pb2
from provisioning.ca import CertificateAuthority
from tests.edge.test_agent import lighting
from tests.replicas.cluster import Cabinet, Cluster, Replica, cluster, command_status, override
from tests.replicas.test_replicas import mark, other, until

ROUNDS = int(os.environ.get("ONDIJON_REPLICAS_LONG", "0") or 0)
CABINETS = 10
COMMANDS_PER_ROUND = 20

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.timeout(600 + 240 * ROUNDS),
    pytest.mark.skipif(not ROUNDS, reason="long run: set ONDIJON_REPLICAS_LONG=<rounds>"),
]

# The shipped keepalives and store deadline (not the short suite's), for honest figures.
SHIPPED = Limits(catch_up_s=30.0)
SHIPPED_AGENT = {"keepalive_s": 15.0, "keepalive_timeout_s": 5.0}


def quantiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {ordered[-1] * 1000:.0f} ms (n={len(ordered)})"
    )


async def stored_marks(three: Cluster, gateway_id: str) -> list[int]:
    profile = three.operator(other(three))
    sequences: list[int] = []
    after = 0
    while True:
        answer = await AdminClient(profile).list_events(
            control_pb2.ListEventsRequest(gateway_id=gateway_id, after_sequence=after, limit=1000),
        )
        if not answer.events:
            return sequences
        sequences += [e.event.sequence for e in answer.events if e.event.type == "test.mark"]
        after = answer.events[-1].event.sequence


async def test_the_long_replica_run(tmp_path: Path, ca: CertificateAuthority) -> None:
    figures: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        figures.setdefault(name, []).append(seconds)

    async with cluster(
        tmp_path, ca, limits=SHIPPED, store=StoreSettings(), agent_keepalive=SHIPPED_AGENT
    ) as three:
        cabinets = [await three.cabinet(f"dj-long-{i:02d}") for i in range(CABINETS)]
        marks = {c.gateway_id: 0 for c in cabinets}
        commands: list[str] = []
        for round_ in range(ROUNDS):
            # Cross-replica commands: typed on a replica that does not hold the stream.
            for i in range(COMMANDS_PER_ROUND):
                cabinet = cabinets[i % CABINETS]
                holder = three.holding(cabinet.gateway_id)
                level = 1 + (round_ * COMMANDS_PER_ROUND + i) % 99
                command_id = f"r{round_}-c{i}"
                commands.append(command_id)
                started = time.monotonic()
                await _send(three, other(three, holder), cabinet, command_id, level)
                await until(_has_override(cabinet, command_id), timeout=20)
                record("cross-replica command (typed → applied)", time.monotonic() - started)
            # Cross-replica documents: every cabinet's schedule, through another replica.
            for cabinet in cabinets:
                started = time.monotonic()
                via = other(three, three.holding(cabinet.gateway_id))
                version = await _put_schedule(three, via, cabinet, 10 + round_)
                await until(_holds(cabinet, version), timeout=20)
                record("cross-replica schedule (put → held)", time.monotonic() - started)
            for cabinet in cabinets:
                mark(cabinet, f"round {round_}")
                marks[cabinet.gateway_id] += 1

            # A lost notification: the listener of a holder is reset, a command is typed.
            cabinet = cabinets[round_ % CABINETS]
            holder = three.holding(cabinet.gateway_id)
            assert holder is not None
            _terminate_listener(three, holder)
            await until(_not_listening(holder), timeout=10)
            command_id = f"r{round_}-lost"
            commands.append(command_id)
            started = time.monotonic()
            await _send(three, other(three, holder), cabinet, command_id, 55)
            await until(_has_override(cabinet, command_id), timeout=60)
            record("catch-up after a lost notification", time.monotonic() - started)

            # A half-open stream: the cabinet's network drops it silently.
            cabinet = cabinets[(round_ + 1) % CABINETS]
            holder = three.holding(cabinet.gateway_id)
            assert holder is not None
            session = holder.live.app.hub.session(cabinet.gateway_id)
            sessions = cabinet.sessions
            cabinet.proxy.black_hole()
            started = time.monotonic()
            await until(_reconnected(cabinet, sessions), timeout=60)
            record("half-open: agent reconnected", time.monotonic() - started)
            await until(_session_gone(holder, cabinet, session), timeout=60)
            record("half-open: held stream ended on its replica", time.monotonic() - started)

            # A replica dies; its cabinets are served elsewhere.
            victim = three.replicas[round_ % len(three.replicas)]
            moved = [c for c in cabinets if three.holding(c.gateway_id) is victim]
            before = {c.gateway_id: c.sessions for c in moved}
            await three.crash(victim)
            started = time.monotonic()
            for c in moved:
                await until(_reconnected(c, before[c.gateway_id]), timeout=60)
            if moved:
                record(
                    "failover after a replica dies (all its cabinets)", time.monotonic() - started
                )
            victim.store_proxy.restore()
            await three.start_replica(victim)

            # A replica's store stalls; its cabinets move, it comes back by itself.
            stalled = three.replicas[(round_ + 1) % len(three.replicas)]
            moved = [c for c in cabinets if three.holding(c.gateway_id) is stalled]
            before = {c.gateway_id: c.sessions for c in moved}
            stalled.store_proxy.stall()
            started = time.monotonic()
            for c in moved:
                await until(_reconnected_elsewhere(three, c, before[c.gateway_id], stalled), 90)
            if moved:
                record("store stalled: its cabinets served elsewhere", time.monotonic() - started)
            stalled.store_proxy.resume()
            started = time.monotonic()
            await until(_ready(stalled), timeout=60)
            record("store back: replica ready again", time.monotonic() - started)

        # Nothing left unanswered, nothing lost, nothing twice.
        profile = three.operator(three.replicas[0])
        statuses = [await command_status(profile, c) for c in commands]
        assert statuses == [link_pb2.COMMAND_STATUS_DONE] * len(commands)
        for cabinet in cabinets:
            await until(_all_marks_stored(three, cabinet, marks[cabinet.gateway_id]), 60)

    print(f"\nreplica figures ({ROUNDS} rounds, {CABINETS} cabinets, 3 replicas):")
    for name, values in figures.items():
        print(f"  {name}: {quantiles(values)}")


async def _send(
    three: Cluster, via: Replica, cabinet: Cabinet, command_id: str, level: int
) -> None:
    await AdminClient(three.operator(via)).send_command(
        control_pb2.SendCommandRequest(
            gateway_id=cabinet.gateway_id, command=override(command_id, level)
        ),
    )


async def _put_schedule(three: Cluster, via: Replica, cabinet: Cabinet, level: int) -> int:
    answer = await AdminClient(three.operator(via)).put_desired_state(
        control_pb2.PutDesiredStateRequest(
            gateway_id=cabinet.gateway_id,
            kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
            payload=lighting(level),
        ),
    )
    return int(answer.document.version)


Check = Callable[[], Awaitable[bool]]


def _has_override(cabinet: Cabinet, override_id: str) -> Check:
    async def check() -> bool:
        return any(o.id == override_id for o in cabinet.agent.overrides)

    return check


def _holds(cabinet: Cabinet, version: int) -> Check:
    async def check() -> bool:
        return any(
            h.kind == link_pb2.DOCUMENT_KIND_SCHEDULE and h.version == version
            for h in cabinet.agent.held_documents()
        )

    return check


def _not_listening(replica: Replica) -> Check:
    async def check() -> bool:
        return not replica.live.app.router.listening.is_set()

    return check


def _reconnected(cabinet: Cabinet, sessions: int) -> Check:
    async def check() -> bool:
        return cabinet.sessions > sessions and cabinet.agent.link.status.connected.is_set()

    return check


def _reconnected_elsewhere(three: Cluster, cabinet: Cabinet, sessions: int, away: Replica) -> Check:
    async def check() -> bool:
        holder = three.holding(cabinet.gateway_id)
        return cabinet.sessions > sessions and holder is not None and holder is not away

    return check


def _session_gone(replica: Replica, cabinet: Cabinet, session: object) -> Check:
    async def check() -> bool:
        return (
            replica.running is None
            or replica.live.app.hub.session(cabinet.gateway_id) is not session
        )

    return check


def _ready(replica: Replica) -> Check:
    async def check() -> bool:
        readiness = replica.live.app.readiness
        return readiness is not None and readiness.ready

    return check


def _all_marks_stored(three: Cluster, cabinet: Cabinet, count: int) -> Check:
    async def check() -> bool:
        sequences = await stored_marks(three, cabinet.gateway_id)
        assert len(sequences) == len(set(sequences)), "an event stored twice"
        return len(sequences) == count

    return check


def _terminate_listener(three: Cluster, replica: Replica) -> None:
    admin = three.db.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"ondijon-orchestrator-{replica.live.app.replica}-listen",),
        )
