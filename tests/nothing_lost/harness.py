"""What the nothing-lost tests share: an agent process to kill, a link to cut, and the
orchestrator's view of a gateway's events read back through the admin API.

- :class:`AgentProcess` runs :mod:`tests.nothing_lost.agent_driver` (the real agent) and
  collects what it promised (sequence -> fingerprint of every durable append).
- :class:`LinkProxy` is a TCP proxy on loopback between an agent and the orchestrator (or
  a replica and its database): it can refuse connections (the orchestrator is
  unreachable), cut the live ones after a given number of bytes, i.e. in the middle of a
  message, flip a byte on the way (TLS then tears the connection down), turn the live ones
  into black holes (a cellular or NAT timeout: nothing passes, nobody is told) or stall
  every connection, new ones too, until resumed (bytes held, no error). Its upstream is a
  function, so it can also be a round-robin balancer; its connections can come from
  another loopback address (another client host).
- :func:`offline_cabinet` runs the real agent in-process on a manual clock behind a proxy
  that is down, and records the priority of every sequence its outbox gives.
- :func:`stored_events` pages through ``ListEvents``; :func:`gateway` is ``GetGateway``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from edge.agent import Agent
from edge.config import AgentConfig
from edge.equipment.sim.lantern import SimulatedLamp
from edge.events import EquipmentEvent, Priority
from edge.link import Backoff
from edge.storage.overflow import GAP_EVENT_TYPE, parse_sequence_list
from foundation.clock import ManualClock
from ondijon.client import AdminClient
from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2
from tests.conftest import City
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


# -- the agent in its own process -------------------------------------------------------------


class AgentProcess:
    """One run of the real agent; ``promised`` fills as it reports durable appends."""

    def __init__(self, config: Path, *, start: datetime, speed: float, **options: str) -> None:
        self.config = config
        self.start_at = start
        self.speed = speed
        self.options = options
        self.promised: dict[int, str] = {}
        # What it reported, in order: ("R", sequence, fingerprint), ("C", new, old).
        self.reported: list[tuple[str, int, str]] = []
        self.pending = -1  # events in the outbox, as last reported
        self.last_sequence = -1
        self.ready = asyncio.Event()
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.started_monotonic = 0.0

    async def start(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "tests.nothing_lost.agent_driver",
            "--config",
            str(self.config),
            "--start",
            self.start_at.isoformat(),
            "--speed",
            str(self.speed),
        ]
        for name, value in self.options.items():
            argv += [f"--{name.replace('_', '-')}", value]
        env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", PYTHONUNBUFFERED="1")
        self.started_monotonic = asyncio.get_running_loop().time()
        # The agent's log goes to a file beside its state directory (every run appended): a
        # pipe nobody reads would stall a talkative agent, and a failed storm is read after.
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *argv, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=log
            )
        self._reader = asyncio.create_task(self._read())
        ready = asyncio.create_task(self.ready.wait())
        await asyncio.wait({ready, self._reader}, timeout=30, return_when="FIRST_COMPLETED")
        if not self.ready.is_set():
            ready.cancel()
            raise AssertionError(f"the agent did not start: {await self._stderr()}")

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            if not line.endswith(b"\n"):
                break  # cut by the kill: never reported
            parts = line.split()
            if parts[0] == b"R":
                sequence = int(parts[1])
                assert sequence not in self.promised, f"sequence {sequence} given twice"
                self.promised[sequence] = parts[2].decode()
                self.reported.append(("R", sequence, parts[2].decode()))
            elif parts[0] == b"C":
                self.reported.append(("C", int(parts[2]), parts[1].decode()))
            elif parts[0] == b"P":
                self.pending, self.last_sequence = int(parts[1]), int(parts[2])
            elif parts[0] == b"READY":
                self.ready.set()

    @property
    def log_path(self) -> Path:
        # Beside the state directory, not in it: a restored image would put an old log back.
        return self.config.parent.with_name(f"{self.config.parent.name}-stderr.log")

    async def _stderr(self) -> str:
        assert self.process is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 5)
        with contextlib.suppress(OSError):
            return self.log_path.read_bytes().decode(errors="replace")[-3000:]
        return ""

    def simulated_now(self) -> datetime:
        """An instant at or after the agent's simulated clock (it started after we did)."""
        elapsed = asyncio.get_running_loop().time() - self.started_monotonic
        return self.start_at + timedelta(seconds=elapsed * self.speed)

    async def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        code = await self.process.wait()
        assert code == -signal.SIGKILL, f"the agent had stopped on its own: {await self._stderr()}"
        if self._reader is not None:
            await self._reader

    async def stop(self) -> None:
        """SIGTERM: the agent closes its files as ``ondijon edge run`` does."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.process.wait(), 20)
        if self._reader is not None:
            await self._reader


# -- a link that can be cut -----------------------------------------------------------------


class LinkProxy:
    """A TCP proxy on 127.0.0.1 in front of the orchestrator's port."""

    def __init__(self, upstream_port: Callable[[], int], *, source: str = "127.0.0.1") -> None:
        """``source``: the loopback address the orchestrator sees the connections come from
        (another one than 127.0.0.1 is another client host, for budgets per address)."""
        self.upstream_port = upstream_port
        self.source = source
        self.online = True
        self.port = 0
        self.connections = 0
        self.cuts = 0
        self.flips = 0
        self._cut_after: int | None = None
        self._flip_after: int | None = None
        self._live: set[asyncio.StreamWriter] = set()
        # The upstream port each live connection went to (both of its writers).
        self._upstream: dict[asyncio.StreamWriter, int] = {}
        self._server: asyncio.Server | None = None
        # Connections that pass nothing any more (black holes), by their writers.
        self._silent: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._never = asyncio.Event()
        # Each connection's handler (start_server's task): awaited on exit, since Python
        # 3.11's Server.wait_closed() does not wait for them.
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> LinkProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut_now()
        self._never.set()  # held pipes wake, find their connection gone, and end
        self._flowing.set()
        await self._server.wait_closed()
        if self._handlers:
            _, late = await asyncio.wait(self._handlers, timeout=5)
            for handler in late:
                handler.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    def cut_now(self) -> None:
        """Reset every live connection (no goodbye on either side)."""
        for writer in list(self._live):
            writer.transport.abort()
        self._live.clear()
        self._upstream.clear()

    def cut_to(self, upstream_port: int) -> int:
        """Reset the live connections to ``upstream_port`` only (the link between this
        proxy and one upstream fails; the upstream lives on); how many."""
        cut = [w for w, port in self._upstream.items() if port == upstream_port]
        for writer in cut:
            writer.transport.abort()
            self._live.discard(writer)
            del self._upstream[writer]
        return len(cut) // 2

    def black_hole(self) -> int:
        """The live connections pass nothing more, in either direction, and are never
        closed (the network dropped them silently); new connections pass. How many."""
        self._silent |= self._live
        return len(self._live) // 2

    def stall(self) -> None:
        """Hold every byte of every connection, new ones too, until :meth:`resume`."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def _pass(self, writer: asyncio.StreamWriter) -> None:
        await self._flowing.wait()
        if writer in self._silent:
            await self._never.wait()

    def cut_after(self, upstream_bytes: int) -> None:
        """Cut the live connections once ``upstream_bytes`` more went towards the orchestrator."""
        self._cut_after = upstream_bytes

    def flip_after(self, upstream_bytes: int) -> None:
        """Flip one bit of the byte ``upstream_bytes`` further towards the orchestrator."""
        self._flip_after = upstream_bytes

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await self._relay(reader, writer)
        finally:
            self._handlers.discard(handler)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.online:
            writer.transport.abort()
            return
        port = self.upstream_port()
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(self.source, 0)
            )
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._live |= {writer, up_writer}
        self._upstream[writer] = self._upstream[up_writer] = port
        pipes = {
            asyncio.create_task(self._pipe(reader, up_writer, upstream=True)),
            asyncio.create_task(self._pipe(up_reader, writer, upstream=False)),
        }
        # One side closed or reset: so is the other (as a TCP balancer does), or the peer
        # would only find out the next time it sends.
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (writer, up_writer):
                self._live.discard(w)
                self._silent.discard(w)
                self._upstream.pop(w, None)
                w.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        while True:
            await self._pass(writer)
            chunk = await reader.read(65536)
            if not chunk:
                break
            await self._pass(writer)
            if upstream and self._flip_after is not None:
                if len(chunk) > self._flip_after:
                    flipped = bytearray(chunk)
                    flipped[self._flip_after] ^= 0x10
                    chunk = bytes(flipped)
                    self._flip_after = None
                    self.flips += 1
                else:
                    self._flip_after -= len(chunk)
            if upstream and self._cut_after is not None:
                if len(chunk) >= self._cut_after:
                    # Half a message reaches the orchestrator, then the line goes dead.
                    writer.write(chunk[: self._cut_after])
                    await writer.drain()
                    self._cut_after = None
                    self.cuts += 1
                    self.cut_now()
                    return
                self._cut_after -= len(chunk)
            writer.write(chunk)
            await writer.drain()
        writer.transport.abort()


# -- a cabinet in-process, on a manual clock, offline ---------------------------------------

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)  # on a quarter hour
QUARTER_S = 900.0
LAMPS = 100


@dataclasses.dataclass
class Cabinet:
    agent: Agent
    clock: ManualClock
    proxy: LinkProxy
    recorded: dict[int, Priority]  # every sequence the outbox gave, and its priority

    def lamp(self, device_id: str) -> SimulatedLamp:
        for lamp in self.agent.lamps:
            if lamp.controller.device_id == device_id:
                driver = lamp.controller._driver
                assert isinstance(driver, SimulatedLamp)
                return driver
        raise KeyError(device_id)

    async def offline_quarters(
        self, quarters: int, *, check: Callable[[], None], flapping: bool = True
    ) -> None:
        """Let ``quarters`` quarter hours pass, one monitoring pass each, calling ``check``
        after each; if ``flapping``, lamp-050 fails and recovers every 6 hours."""
        outbox = self.agent.outbox
        for quarter in range(quarters):
            if flapping and quarter % 24 == 0:
                flapping = self.lamp("lamp-050")
                flapping.dead = not flapping.dead
            before = outbox.last_sequence
            self.clock.advance(QUARTER_S)
            for _ in range(100):
                await asyncio.sleep(0)
                if outbox.last_sequence >= before + LAMPS:
                    break
            else:
                raise AssertionError(f"quarter {quarter} was not metered")
            check()


@contextlib.asynccontextmanager
async def offline_cabinet(city: City, config: AgentConfig) -> AsyncIterator[Cabinet]:
    """The agent, running, with its link behind a proxy that is down."""
    async with LinkProxy(lambda: city.running.port) as proxy:
        proxy.online = False
        clock = ManualClock(T0)
        agent = Agent(dataclasses.replace(config, address=proxy.address), clock)
        agent.link.backoff = Backoff(base_s=0.05, cap_s=0.3)
        recorded: dict[int, Priority] = {}
        append_many = agent.outbox.append_many

        def recording(events: Iterable[EquipmentEvent]) -> list[int]:
            listed = list(events)
            sequences = append_many(listed)
            recorded.update((s, e.priority) for s, e in zip(sequences, listed, strict=True))
            return sequences

        agent.outbox.append_many = recording  # type: ignore[method-assign]
        task = asyncio.create_task(agent.run())
        for _ in range(10):  # the first monitoring pass starts the meters
            await asyncio.sleep(0)
        try:
            yield Cabinet(agent, clock, proxy, recorded)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def reconnect_and_drain(cabinet: Cabinet) -> None:
    cabinet.proxy.online = True
    await eventually(lambda: cabinet.agent.outbox.pending_count == 0, timeout=90)


# -- the orchestrator's view ----------------------------------------------------------------


async def gateway(city: City, gateway_id: str) -> control_pb2.Gateway:
    response = await AdminClient(city.admin).get_gateway(
        control_pb2.GetGatewayRequest(gateway_id=gateway_id)
    )
    return response.gateway


def listed_lost(events: Iterable[link_pb2.Event], attribute: str = "sequences") -> set[int]:
    """Every sequence the ``outbox.gap`` events among ``events`` list as lost (with
    ``attribute="numbered_before"``: the numbers they listed before the welcome moved them)."""
    return {
        sequence
        for e in events
        if e.type == GAP_EVENT_TYPE
        for first, last in parse_sequence_list(e.attributes.get(attribute, ""))
        for sequence in range(first, last + 1)
    }


async def stored_events(city: City, gateway_id: str) -> list[control_pb2.StoredEvent]:
    """Every event the orchestrator stored for ``gateway_id``, by sequence."""
    result: list[control_pb2.StoredEvent] = []
    after = 0
    while True:
        response = await AdminClient(city.admin).list_events(
            control_pb2.ListEventsRequest(gateway_id=gateway_id, after_sequence=after, limit=1000),
        )
        if not response.events:
            return result
        result += response.events
        after = response.events[-1].event.sequence


def lamp_override(
    override_id: str, level: int, start: datetime, minutes: float
) -> link_pb2.Command:
    """An operator's lamp override, timed on the agent's (simulated) clock."""

    def ts(when: datetime) -> Timestamp:
        stamp = Timestamp()
        stamp.FromDatetime(when)
        return stamp

    end = start + timedelta(minutes=minutes)
    return link_pb2.Command(
        command_id=f"cmd-{override_id}",
        expires_at=ts(start + timedelta(days=3)),
        override=schedule_pb2.Override(
            id=override_id,
            start=ts(start),
            expiry=ts(end),
            priority=5,
            kind=schedule_pb2.DEVICE_KIND_LAMP,
            lamp_level=level,
        ),
    )


async def send_command(city: City, gateway_id: str, command: link_pb2.Command) -> None:
    await AdminClient(city.admin).send_command(
        control_pb2.SendCommandRequest(gateway_id=gateway_id, command=command),
    )
