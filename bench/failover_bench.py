"""Benchmark: failover, a replica killed under a fleet of gateways, and nothing lost.

    .venv/bin/python bench/failover_bench.py [--gateways 300] [--replicas 3] [--kills 3]
                                             [--agents 3] [--quick] [--json]

Three orchestrator replicas (``ondijon orchestrator serve``, ``--replicas 2`` for two) on a
fresh PostgreSQL database (127.0.0.1:5432, trust auth), behind the health-checked
round-robin TCP balancer of ``tests/replicas`` (it asks each replica's standard
``grpc.health.v1`` every ``--health-every`` seconds, 0.2 by default, and sends a new
connection to the next replica that answered SERVING). An agent has one orchestrator
address (``[orchestrator] address``): several replicas are reached through such a
balancer (README, "Several replicas"); it is how gateways spread over replicas and move
when one goes.

Behind the balancer: ``--gateways`` load gateways (``fleet.LoadGateway``, each its
own certificate and mutual-TLS stream, in ``--procs`` processes) extended with what an
agent does on its link: the agent's own channel options (keepalive 15 s + 5 s), its own
reconnect policy (:class:`edge.link.Backoff`, imported: full jitter, 1 s base doubling to
60 s, back to the base once a stream was welcomed), an outbox of numbered events (one every
``--event-every`` seconds, kept until acknowledged, all sent again on each new stream) and
a report of its devices right after each welcome. Beside them, ``--agents`` REAL agents
(``ondijon edge run``, four simulated lamps, a simulated clock at 300x so their
quarter-hour metering makes events every few seconds) through the same balancer: their
figure anchors the load gateways' one.

Each round (``--kills`` rounds) hits a replica three ways, one after the other, the
replica started again in between. Before each hit every link is cut at the balancer, so
the fleet spreads evenly again (hits gather it on fewer replicas) and each hit moves about
as many gateways; the replica hit is the one holding the most real agents, then the most
gateways:

- **kill**: SIGKILL;
- **term**: SIGTERM, the graceful stop;
- **cut**: the balancer resets the connections to that replica, which lives on.

(``--kinds`` picks others; ``hang`` is SIGSTOP: a replica frozen, its sockets open, as a
host that stopped answering.) Per hit and per gateway that was on the replica: the time
from the hit until its stream ended (and how: status and details), until it was welcomed
again and until it was served (its first acknowledgement on the new stream), p50/p99/max,
and until every one of them was served;
for the real agents and, alike, for the load gateways, until the store recorded their new
stream (``gateway_streams.opened_at``, the hello). The kill's cost is stated as its ratio to
the term's and the cut's, measured in the same run.

At the end the events stop, the outboxes drain, and the store is checked: every sequence
each load gateway numbered is stored exactly once, every sequence a real agent numbered is
stored or still in its outbox, no gap event (``outbox.gap``), no sequence refused as
conflicting.

``--quick``: 30 gateways, 2 replicas, 1 round, 1 real agent (what tests/bench runs).
The machine's cores are shared by the replicas, PostgreSQL, the balancer, the load
processes and the agents: figures are for this machine, not for separate ones.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import grpc
import psycopg
from city import BenchCity  # bench/city.py, beside this script
from cryptography.hazmat.primitives import serialization
from fleet import LoadGateway
from ingest_curve import DEFAULT_POSTGRES, fresh_database
from link_bench import devices_blob, encode_state

from edge.config import AgentConfig
from edge.identity import channel_options, install_identity
from edge.link import Backoff
from edge.storage.outbox import Outbox
from edge.storage.overflow import GAP_EVENT_TYPE
from foundation.clock import SystemClock
from protos.ondijon.v1 import link_pb2
from tests.replicas.cluster import HEALTH_EVERY_S, Balancer

T = TypeVar("T")

KINDS = ("kill", "term", "cut", "hang")
SETTLE_S = 2.0  # the fleet back, before a hit: quiet again
HIT_TIMEOUT_S = 90.0
DRAIN_S = 60.0
AGENT_LAMPS = 4
AGENT_SPEED = 300  # the real agents' simulated clock: a quarter hour every 3 s


# -- load gateways with an agent's link behaviour --------------------------------------------


@dataclass(eq=False)
class FailoverGateway(LoadGateway):
    """``LoadGateway`` with the agent's reconnect policy, an outbox of numbered events, and
    the times of its welcomes, of its first acknowledgement after each, and of its ends."""

    gateway_id: str = ""
    backoff: Backoff = field(default_factory=Backoff)  # the agent's, as it ships
    rng: random.Random = field(default_factory=random.Random)
    last_sequence: int = 0
    unacked: dict[int, link_pb2.Event] = field(default_factory=dict)
    to_send: collections.deque[int] = field(default_factory=collections.deque)
    in_flight: int = 0
    window: int = 0
    live: bool = False
    welcomes: list[float] = field(default_factory=list)
    served: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # how each stream ended
    conflicts: int = 0
    _served_this: bool = False

    def hello(self) -> link_pb2.Hello:
        return link_pb2.Hello(firmware_version="bench", last_sequence=self.last_sequence)

    def record(self) -> None:
        """An event happens on the street: numbered, kept until acknowledged."""
        self.last_sequence += 1
        event = link_pb2.Event(
            sequence=self.last_sequence,
            priority=link_pb2.EVENT_PRIORITY_EVENT,
            device_id="lamp-0000",
            type="failover.tick",
        )
        event.at.FromDatetime(datetime.now(UTC))
        self.unacked[self.last_sequence] = event
        self.to_send.append(self.last_sequence)
        self.pump()

    def pump(self) -> None:
        """Send what waits, within the window the welcome granted."""
        while self.live and self.to_send and self.in_flight < self.window:
            room = min(len(self.to_send), self.window - self.in_flight, 200)
            events = [self.unacked[self.to_send.popleft()] for _ in range(room)]
            self.in_flight += room
            batch = link_pb2.ConnectRequest(events=link_pb2.EventBatch(events=events))
            self.queue.put_nowait(batch.SerializeToString())

    def on_welcome(self, welcome: link_pb2.Welcome) -> None:
        self.welcomes.append(time.time())
        self.live, self._served_this = True, False
        self.window, self.in_flight = max(1, welcome.event_window), 0
        # Everything not acknowledged goes again, in order (the orchestrator stores it once).
        self.to_send = collections.deque(sorted(self.unacked))
        # As the agent does after a welcome: every device's state once.
        self.batch += 1
        self.queue.put_nowait(encode_state(self.batch, self.blobs[0]))
        self.pump()

    def _answered(self) -> None:
        if not self._served_this:
            self._served_this = True
            self.served.append(time.time())

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            while (response := await self.call.read()) is not grpc.aio.EOF:
                body = response.WhichOneof("body")
                if body == "event_ack":
                    ack = response.event_ack
                    for r in ack.stored:
                        for sequence in range(r.first, r.last + 1):
                            self.unacked.pop(sequence, None)
                    self.in_flight = max(
                        0, self.in_flight - sum(r.last - r.first + 1 for r in ack.stored)
                    )
                    self.conflicts += sum(r.last - r.first + 1 for r in ack.conflicting)
                    self._answered()
                    self.pump()
                elif body == "state_ack":
                    self._answered()

    async def keep_linked(self) -> None:
        """The agent's connection loop (edge.link.GatewayLinkClient.run), on this gateway."""
        attempt = 0
        while True:
            self.queue = asyncio.Queue()
            welcomed = False
            try:
                if await self.open():
                    welcomed = True
                    assert self.welcome is not None and self.reader is not None
                    self.on_welcome(self.welcome)
                    await self.reader
            except grpc.aio.AioRpcError:
                pass
            finally:
                self.live = False
                if welcomed:
                    self.ends.append(time.time())
                    self.reasons.append(await self._ended_with())
                await self.close()
                self.reader = None
            attempt = 0 if welcomed else attempt + 1
            await asyncio.sleep(self.backoff.delay(attempt, self.rng))

    async def _ended_with(self) -> str:
        try:
            code = await asyncio.wait_for(self.call.code(), 1.0)
            return f"{code.name}: {await self.call.details()}"[:80]
        except (TimeoutError, grpc.aio.AioRpcError, AttributeError) as exc:
            return type(exc).__name__

    async def tick(self, every: float, stop: asyncio.Event) -> None:
        await asyncio.sleep(random.random() * every)
        while not stop.is_set():
            self.record()
            await asyncio.sleep(every)


async def _load(
    pipe: multiprocessing.connection.Connection,
    root: bytes,
    gateways: list[tuple[str, bytes, bytes]],
    address: str,
    options: list[tuple[str, Any]],
    event_every: float,
) -> None:
    loop = asyncio.get_running_loop()
    blob = devices_blob(1)
    fleet = [
        FailoverGateway(
            address,
            grpc.ssl_channel_credentials(root, key, chain),
            (blob,),
            options=options,
            gateway_id=gid,
        )
        for gid, key, chain in gateways
    ]
    stop = asyncio.Event()
    links = [asyncio.create_task(g.keep_linked()) for g in fleet]
    ticks = [asyncio.create_task(g.tick(event_every, stop)) for g in fleet]
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command == "times":
            pipe.send({g.gateway_id: (g.welcomes, g.served, g.ends, g.reasons) for g in fleet})
        elif command == "stop":
            # The street goes quiet; what the outboxes hold drains.
            stop.set()
            await asyncio.gather(*ticks)
            deadline = time.monotonic() + DRAIN_S
            while any(g.unacked for g in fleet) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            pipe.send(
                {
                    g.gateway_id: {
                        "last": g.last_sequence,
                        "unacked": sorted(g.unacked),
                        "conflicts": g.conflicts,
                    }
                    for g in fleet
                }
            )
            break
    for task in links:
        task.cancel()
    await asyncio.gather(*links, return_exceptions=True)
    await asyncio.gather(*(g.close() for g in fleet), return_exceptions=True)


def load_process(
    pipe: multiprocessing.connection.Connection,
    root: bytes,
    gateways: list[tuple[str, bytes, bytes]],
    address: str,
    options: list[tuple[str, Any]],
    event_every: float,
) -> None:
    asyncio.run(_load(pipe, root, gateways, address, options, event_every))


# -- the balancer, on an event loop of its own thread ----------------------------------------


@dataclass(eq=False)
class Replica:
    """An orchestrator process; ``name``/``running`` are what the balancer reads (its ports,
    fixed: whether it answers is for the health check to find out)."""

    index: int
    port: int
    enroll_port: int
    proc: subprocess.Popen[bytes] | None = None
    replica_id: str = ""  # its name in the store (new at every start)

    @property
    def name(self) -> str:
        return f"replica-{self.index}"

    @property
    def running(self) -> SimpleNamespace:
        return SimpleNamespace(port=self.port, enroll_port=self.enroll_port)


class BalancerThread:
    """tests/replicas' balancer (health-checked round robin over TCP), on its own loop."""

    def __init__(self, replicas: list[Replica], root_pem: bytes, health_every_s: float) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def open_() -> Balancer:
            balancer = Balancer(replicas, root_pem, health_every_s=health_every_s)  # type: ignore[arg-type]
            return await balancer.__aenter__()

        self.balancer = self._run(open_())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    @property
    def port(self) -> int:
        return self.balancer.proxy.port

    def serving(self, name: str) -> bool:
        return self.balancer.serving.get(name, False)

    def cut_to(self, port: int) -> int:
        async def cut() -> int:
            return self.balancer.proxy.cut_to(port)

        return self._run(cut())

    def cut_all(self) -> None:
        async def cut() -> None:
            self.balancer.proxy.cut_now()

        self._run(cut())

    def close(self) -> None:
        self._run(self.balancer.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


# -- the store's view -------------------------------------------------------------------------


class StoreView:
    """Read-only queries on the bench's database."""

    def __init__(self, url: str) -> None:
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        self.conn = psycopg.connect(dsn, autocommit=True)

    def app_names(self) -> set[str]:
        rows = self.conn.execute(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'ondijon-orchestrator-%'"
        ).fetchall()
        return {r[0] for r in rows}

    def streams(self) -> dict[str, tuple[str, float]]:
        """gateway id -> (replica id, when its stream opened, Unix time)."""
        rows = self.conn.execute(
            "SELECT gateway_id, replica, opened_at FROM gateway_streams"
        ).fetchall()
        return {gid: (replica, _epoch(opened)) for gid, replica, opened in rows}

    def sequences(self) -> dict[str, tuple[int, int, int, int]]:
        """gateway id -> (rows, distinct sequences, lowest, highest)."""
        rows = self.conn.execute(
            "SELECT gateway_id, count(*), count(DISTINCT sequence), min(sequence), max(sequence) "
            "FROM events GROUP BY gateway_id"
        ).fetchall()
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    def stored(self, gateway_id: str) -> list[int]:
        rows = self.conn.execute(
            "SELECT sequence FROM events WHERE gateway_id = %s ORDER BY sequence", (gateway_id,)
        ).fetchall()
        return [r[0] for r in rows]

    def gaps(self) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM events WHERE type = %s", (GAP_EVENT_TYPE,)
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


def _epoch(value: Any) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def same_replica(stored: str, replica_id: str) -> bool:
    """A replica id from the store against one read from ``pg_stat_activity`` (where the
    connection's name may be cut at 63 characters)."""
    return bool(replica_id) and (stored.startswith(replica_id) or replica_id.startswith(stored))


# -- real agents ------------------------------------------------------------------------------


def agent_toml(root: Path, gateway_id: str, address: str, ca_file: Path) -> str:
    lamps = "\n".join(
        f'[[lamps]]\nid = "lamp-{i}"\nbackend = "simulated"\nnominal_power_w = 60\n'
        for i in range(1, AGENT_LAMPS + 1)
    )
    start = datetime.now(UTC).isoformat(timespec="seconds")
    return (
        f'[gateway]\nid = "{gateway_id}"\nserial = "{gateway_id}"\n'
        f'state_dir = "{root / "state"}"\n'
        f'[orchestrator]\naddress = "{address}"\nca_file = "{ca_file}"\n'
        '[site]\nlatitude = 47.32\nlongitude = 5.04\ntime_zone = "Europe/Paris"\n'
        f'[clock]\nmode = "simulated"\nstart = "{start}"\nspeed = {AGENT_SPEED}\n'
        f"{lamps}"
    )


@dataclass(eq=False)
class RealAgent:
    gateway_id: str
    config: AgentConfig
    proc: subprocess.Popen[bytes]


def start_agent(work: Path, gateway_id: str, key: bytes, chain: bytes, address: str) -> RealAgent:
    """``ondijon edge run`` with the gateway's identity installed as enrollment leaves it."""
    root = work / "agents" / gateway_id
    root.mkdir(parents=True)
    path = root / "agent.toml"
    path.write_text(agent_toml(root, gateway_id, address, work / "ca" / "root.pem"))
    config = AgentConfig.load(path)
    private = serialization.load_pem_private_key(key, None)
    install_identity(config, private, chain)  # type: ignore[arg-type]
    log = open(root / "agent.log", "wb")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "ondijon.cli", "edge", "run", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1", GPIOZERO_PIN_FACTORY="mock"),
    )
    return RealAgent(gateway_id, config, proc)


# -- hits ------------------------------------------------------------------------------------


@dataclass
class Hit:
    """One replica hit one way, and how its gateways came back."""

    kind: str
    replica: str
    gateways: int  # load gateways that were on it
    agents: int  # real agents that were on it
    down_s: list[float]  # per load gateway: hit -> its stream ended (it noticed)
    welcome_s: list[float]  # per load gateway: hit -> welcomed again
    served_s: list[float]  # per load gateway: hit -> first acknowledgement on the new stream
    store_s: list[float]  # per load gateway: hit -> new stream recorded in the store
    agents_store_s: list[float]  # per real agent, the same
    not_back: int  # gateways (load or real) not served again within the timeout
    others_moved: int  # load gateways on other replicas that reconnected meanwhile
    ended_with: dict[str, int]  # how their streams ended (status: details), how many

    @property
    def all_served_s(self) -> float:
        return max(self.served_s + self.agents_store_s, default=0.0)

    def line(self) -> str:
        return (
            f"{self.kind:<5} {self.replica:<10} {self.gateways:>4} gw {self.agents} ag  "
            f"down {_ps(self.down_s)}  welcome {_ps(self.welcome_s)}  "
            f"served {_ps(self.served_s)}  "
            f"all {self.all_served_s:5.2f} s  store {_ps(self.store_s)}  "
            f"agents {', '.join(f'{x:.2f}' for x in self.agents_store_s) or '-'}"
            + (f"  NOT BACK {self.not_back}" if self.not_back else "")
            + (f"  others moved {self.others_moved}" if self.others_moved else "")
            + "\n      ended: "
            + "; ".join(f"{n} {why}" for why, n in sorted(self.ended_with.items()))
        )


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def _ps(values: list[float]) -> str:
    """p50/p99/max, seconds."""
    return f"{_pct(values, 0.5):.2f}/{_pct(values, 0.99):.2f}/{max(values, default=0):.2f}"


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, store_url: str) -> None:
        self.args, self.work = args, work
        total = args.gateways + args.agents
        self.city = BenchCity.build(work, total, "failover", store_url)
        self.store = StoreView(store_url)
        self.replicas: list[Replica] = []
        self.agents: list[RealAgent] = []
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.loaders: list[Any] = []
        self.balancer: BalancerThread | None = None
        ids = [f"failover-{g:05d}" for g in range(total)]
        self.load_ids, self.agent_ids = ids[: args.gateways], ids[args.gateways :]

    # -- replicas --

    def start(self, replica: Replica) -> None:
        before = self.store.app_names()
        replica.proc, _ = self.city.start_replica(replica.index)
        deadline = time.monotonic() + 30
        while not (new := self.store.app_names() - before):
            if time.monotonic() > deadline or replica.proc.poll() is not None:
                raise RuntimeError(f"{replica.name} did not open its store; see {self.work}")
            time.sleep(0.05)
        tail = min(new, key=len).removeprefix("ondijon-orchestrator-")
        replica.replica_id = tail.removesuffix("-listen")

    def start_replicas(self) -> None:
        for i in range(self.args.replicas):
            replica = Replica(i, 0, 0)
            self.start(replica)
            replica.port, replica.enroll_port = self.city.replica_ports[i]
            self.replicas.append(replica)
        self.balancer = BalancerThread(self.replicas, self.city.ca.root_pem, self.args.health_every)
        self.until(lambda: all(self.balancer_serving(r) for r in self.replicas), 30, "serving")

    def balancer_serving(self, replica: Replica) -> bool:
        assert self.balancer is not None
        return self.balancer.serving(replica.name)

    # -- gateways --

    def start_gateways(self) -> None:
        assert self.balancer is not None
        address = f"localhost:{self.balancer.port}"
        identities = self.city.identities
        n = self.args.gateways
        for i, gid in enumerate(self.agent_ids):
            key, chain = identities[n + i]
            self.agents.append(start_agent(self.work, gid, key, chain, address))
        # The agent's own channel options (keepalive), from a real agent's configuration.
        template = self.work / "template.toml"
        template.write_text(
            agent_toml(self.work, "template", address, self.work / "ca" / "root.pem")
        )
        options = channel_options(AgentConfig.load(template))
        ctx = multiprocessing.get_context("spawn")
        fleet = [(gid, *identities[i]) for i, gid in enumerate(self.load_ids)]
        procs = self.args.procs
        for p in range(procs):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=load_process,
                args=(
                    theirs,
                    self.city.ca.root_pem,
                    fleet[p::procs],
                    address,
                    options,
                    self.args.event_every,
                ),
            )
            proc.start()
            self.pipes.append(ours)
            self.loaders.append(proc)
        everyone = set(self.load_ids) | set(self.agent_ids)
        self.until(lambda: everyone <= set(self.store.streams()), 120, "every gateway connected")

    def times(self) -> dict[str, tuple[list[float], list[float], list[float], list[str]]]:
        out: dict[str, tuple[list[float], list[float], list[float], list[str]]] = {}
        for pipe in self.pipes:
            pipe.send("times")
        for pipe in self.pipes:
            out.update(pipe.recv())
        return out

    @staticmethod
    def until(check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"not reached in {timeout:.0f} s: {what}")
            time.sleep(0.1)

    # -- a hit --

    def victim(self) -> Replica:
        """The live replica holding the most real agents, then the most gateways."""
        holders = {gid: replica for gid, (replica, _) in self.store.streams().items()}
        agents = set(self.agent_ids)

        def weight(r: Replica) -> tuple[int, int]:
            held = [gid for gid, rid in holders.items() if same_replica(rid, r.replica_id)]
            return sum(gid in agents for gid in held), len(held)

        return max(self.replicas, key=weight)

    def rebalance(self) -> None:
        """Every link cut at the balancer: the fleet reconnects spread evenly again (hits
        gather the gateways on fewer replicas), so each hit moves about as many."""
        assert self.balancer is not None
        t = time.time()
        self.balancer.cut_all()
        everyone = set(self.load_ids) | set(self.agent_ids)

        def back() -> bool:
            streams = self.store.streams()
            return all(streams.get(gid, ("", 0.0))[1] > t for gid in everyone)

        self.until(back, 180, "every gateway back after the rebalance")
        time.sleep(SETTLE_S)

    def hit(self, kind: str) -> Hit:
        assert self.balancer is not None
        self.rebalance()
        replica = self.victim()
        assert replica.proc is not None
        before = self.store.streams()
        on_it = {gid for gid, (rid, _) in before.items() if same_replica(rid, replica.replica_id)}
        load_on = sorted(on_it & set(self.load_ids))
        agents_on = sorted(on_it & set(self.agent_ids))
        t0 = time.time()
        if kind == "kill":
            replica.proc.send_signal(signal.SIGKILL)
        elif kind == "term":
            replica.proc.send_signal(signal.SIGTERM)
        elif kind == "hang":
            replica.proc.send_signal(signal.SIGSTOP)
        else:
            self.balancer.cut_to(replica.port)
        moved_elsewhere = kind != "cut"

        def back(streams: dict[str, tuple[str, float]], gid: str) -> float | None:
            rid, opened = streams.get(gid, ("", 0.0))
            if opened <= t0 or (moved_elsewhere and same_replica(rid, replica.replica_id)):
                return None
            return opened - t0

        deadline = time.monotonic() + HIT_TIMEOUT_S
        while True:
            streams = self.store.streams()
            times = self.times()
            store_back = {gid: back(streams, gid) for gid in on_it}
            served = {gid: [t for t in times[gid][1] if t > t0] for gid in load_on}
            done = all(v is not None for v in store_back.values()) and all(served.values())
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        welcome = {gid: [t for t in times[gid][0] if t > t0] for gid in load_on}
        down = {gid: [t for t in times[gid][2] if t > t0] for gid in load_on}
        others = [g for g in self.load_ids if g not in on_it and any(t > t0 for t in times[g][0])]
        # How the streams ended, those of the replica hit and any other's.
        why: collections.Counter[str] = collections.Counter()
        for gid in load_on + others:
            ends, reasons = times[gid][2], times[gid][3]
            why.update(r for t, r in zip(ends, reasons, strict=False) if t > t0)
        result = Hit(
            kind=kind,
            replica=replica.name,
            gateways=len(load_on),
            agents=len(agents_on),
            down_s=[d[0] - t0 for d in down.values() if d],
            welcome_s=[w[0] - t0 for w in welcome.values() if w],
            served_s=[s[0] - t0 for s in served.values() if s],
            store_s=[v for g in load_on if (v := store_back[g]) is not None],
            agents_store_s=[v for g in agents_on if (v := store_back[g]) is not None],
            not_back=sum(v is None for v in store_back.values())
            + sum(not s for s in served.values()),
            others_moved=len(others),
            ended_with=dict(why),
        )
        if kind in ("kill", "term", "hang"):
            if kind == "hang":
                replica.proc.send_signal(signal.SIGKILL)
            replica.proc.wait(timeout=60)
            self.start(replica)
            self.until(lambda: self.balancer_serving(replica), 30, f"{replica.name} serving")
        return result

    # -- the end: nothing lost --

    def finish(self) -> dict[str, Any]:
        for pipe in self.pipes:
            pipe.send("stop")
        final: dict[str, dict[str, Any]] = {}
        for pipe in self.pipes:
            final.update(pipe.recv())
        for loader in self.loaders:
            loader.join(timeout=30)
        for agent in self.agents:
            agent.proc.send_signal(signal.SIGTERM)
        for agent in self.agents:
            agent.proc.wait(timeout=60)
        stored = self.store.sequences()
        lost, twice, events = [], [], 0
        for gid in self.load_ids:
            last = final[gid]["last"]
            events += last
            rows, distinct, low, high = stored.get(gid, (0, 0, 0, 0))
            if rows != distinct:
                twice.append(gid)
            expected = set(range(1, last + 1))
            if (rows, low, high) != (last, 1 if last else 0, last):
                have = set(self.store.stored(gid))
                lost += [(gid, s) for s in sorted(expected - have)]
        agent_report = []
        for agent in self.agents:
            outbox = Outbox(agent.config.state_dir / "outbox.sqlite", clock=SystemClock())
            try:
                last = outbox.last_sequence
                pending = {e.sequence for e in outbox.next_batch(10**6, 10**9)}
            finally:
                outbox.close()
            have = self.store.stored(agent.gateway_id)
            if len(have) != len(set(have)):
                twice.append(agent.gateway_id)
            missing = set(range(1, last + 1)) - set(have) - pending
            lost += [(agent.gateway_id, s) for s in sorted(missing)]
            agent_report.append(
                {
                    "gateway": agent.gateway_id,
                    "last": last,
                    "stored": len(have),
                    "pending": len(pending),
                }
            )
        return {
            "load_events": events,
            "unacked_after_drain": sum(len(f["unacked"]) for f in final.values()),
            "conflicts": sum(f["conflicts"] for f in final.values()),
            "lost": [f"{g}#{s}" for g, s in lost],
            "stored_twice": twice,
            "gap_events": self.store.gaps(),
            "agents": agent_report,
        }

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, BrokenPipeError):
                pipe.send("stop")
        for loader in self.loaders:
            loader.join(timeout=5)
            if loader.is_alive():
                loader.terminate()
        for agent in self.agents:
            if agent.proc.poll() is None:
                agent.proc.terminate()
                agent.proc.wait(timeout=30)
        for replica in self.replicas:
            if replica.proc is not None and replica.proc.poll() is None:
                replica.proc.send_signal(signal.SIGCONT)
                replica.proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    replica.proc.wait(timeout=30)
        if self.balancer is not None:
            self.balancer.close()
        self.store.close()


# -- the run ----------------------------------------------------------------------------------


def summary(hits: list[Hit]) -> dict[str, Any]:
    """Per kind, pooled over the rounds."""
    out: dict[str, Any] = {}
    for kind in dict.fromkeys(h.kind for h in hits):
        mine = [h for h in hits if h.kind == kind]
        served = [x for h in mine for x in h.served_s]
        welcome = [x for h in mine for x in h.welcome_s]
        out[kind] = {
            "hits": len(mine),
            "gateways": sum(h.gateways for h in mine),
            "agents": sum(h.agents for h in mine),
            "down_p50_s": _pct([x for h in mine for x in h.down_s], 0.5),
            "welcome_p50_s": _pct(welcome, 0.5),
            "served_p50_s": _pct(served, 0.5),
            "served_p99_s": _pct(served, 0.99),
            "served_max_s": max(served, default=float("nan")),
            "all_served_median_s": statistics.median(h.all_served_s for h in mine),
            "store_p50_s": _pct([x for h in mine for x in h.store_s], 0.5),
            "agents_store_s": [x for h in mine for x in h.agents_store_s],
            "not_back": sum(h.not_back for h in mine),
            "others_moved": sum(h.others_moved for h in mine),
        }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ondijon-failover-"))
    kinds = [k for k in args.kinds.split(",") if k]
    with fresh_database(args.postgres) as store_url:
        bench = Bench(args, work, store_url)
        try:
            print(
                f"{args.gateways} load gateways and {args.agents} real agent(s) behind a "
                f"health-checked balancer (every {args.health_every:g} s) over "
                f"{args.replicas} replicas on PostgreSQL; one event per gateway every "
                f"{args.event_every:g} s; {os.cpu_count()} cores shared by all; work in {work}",
                flush=True,
            )
            began = time.monotonic()
            bench.start_replicas()
            bench.start_gateways()
            print(f"all connected in {time.monotonic() - began:.1f} s", flush=True)
            time.sleep(SETTLE_S)
            print(
                "kind  replica     on it      per gateway, s (p50/p99/max): stream ended, "
                "welcomed, served, stream stored; real agents' stream stored, s",
                flush=True,
            )
            hits: list[Hit] = []
            for _ in range(args.kills):
                for kind in kinds:
                    hits.append(bench.hit(kind))
                    print(hits[-1].line(), flush=True)
            checks = bench.finish()
        finally:
            bench.close()
    figures = {"hits": [vars(h) | {"all_served_s": h.all_served_s} for h in hits]}
    figures["summary"] = summary(hits)
    figures["checks"] = checks
    figures["every_gateway_served_again"] = all(h.not_back == 0 for h in hits)
    figures["nothing_lost"] = (
        not checks["lost"]
        and not checks["stored_twice"]
        and not (checks["gap_events"] or checks["unacked_after_drain"] or checks["conflicts"])
    )
    report(figures)
    return figures


def report(figures: dict[str, Any]) -> None:
    s = figures["summary"]
    print()
    for kind, k in s.items():
        print(
            f"{kind}: {k['hits']} hit(s), {k['gateways']} gateways and {k['agents']} real "
            f"agent(s) moved; served p50/p99/max {k['served_p50_s']:.2f}/"
            f"{k['served_p99_s']:.2f}/{k['served_max_s']:.2f} s (stream ended p50 "
            f"{k['down_p50_s']:.2f} s, welcomed p50 {k['welcome_p50_s']:.2f} s); all served "
            f"(median of hits) "
            f"{k['all_served_median_s']:.2f} s; store-recorded p50 {k['store_p50_s']:.2f} s, "
            f"real agents {', '.join(f'{x:.2f}' for x in k['agents_store_s']) or '-'} s"
        )
    if "kill" in s:
        for peer in ("term", "cut"):
            if peer in s:
                k, p = s["kill"], s[peer]
                print(
                    f"kill / {peer}: p50 {k['served_p50_s'] / p['served_p50_s']:.2f}x, "
                    f"all served {k['all_served_median_s'] / p['all_served_median_s']:.2f}x"
                )
    c = figures["checks"]
    agents = "; ".join(
        f"{a['gateway']}: {a['stored']} stored of {a['last']}, {a['pending']} still in its outbox"
        for a in c["agents"]
    )
    print(
        f"nothing lost: {'yes' if figures['nothing_lost'] else 'NO'} — {c['load_events']} "
        f"load events numbered, lost {len(c['lost'])}, stored twice {len(c['stored_twice'])}, "
        f"unacknowledged after the drain {c['unacked_after_drain']}, gap events "
        f"{c['gap_events']}, conflicts {c['conflicts']}; real agents: {agents or '-'}"
    )
    if c["lost"]:
        print(f"  lost: {', '.join(c['lost'][:20])}")
    print(f"every gateway served again: {'yes' if figures['every_gateway_served_again'] else 'NO'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=300, help="load gateways")
    parser.add_argument("--agents", type=int, default=3, help="real agent processes")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kills", type=int, default=3, help="rounds (each: kill, term, cut)")
    parser.add_argument("--kinds", default="kill,term,cut", help=f"per round, of {KINDS}")
    parser.add_argument("--event-every", type=float, default=1.0, help="s, per gateway")
    parser.add_argument("--health-every", type=float, default=HEALTH_EVERY_S, help="balancer, s")
    parser.add_argument("--procs", type=int, default=2, help="load processes")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    parser.add_argument("--quick", action="store_true", help="30 gateways, 2 replicas, 1 round")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    if args.quick:
        args.gateways, args.replicas, args.kills, args.agents = 30, 2, 1, 1
        args.procs = 1
    if args.replicas < 2:
        parser.error("--replicas: at least 2 (one must be left to fail over to)")
    bad = set(args.kinds.split(",")) - set(KINDS)
    if bad:
        parser.error(f"--kinds: unknown {', '.join(sorted(bad))}")
    figures = run(args)
    if args.json:
        print(json.dumps(figures, default=str))
    return 0 if figures["nothing_lost"] and figures["every_gateway_served_again"] else 1


if __name__ == "__main__":
    sys.exit(main())
