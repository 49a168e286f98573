"""The load benchmarks' gateways: many in one process, each its own mutual-TLS GatewayLink
stream, answering the orchestrator as an agent does, driven from the benchmark through a
pipe.

Each gateway says hello, acknowledges every desired document it is sent (accepted) and
answers every command DONE, as the agent does once it has acted on it; on request it
sends StateReports at a given rate and measures their acknowledgements. Used by
``ingest_curve.py``, ``command_bench.py`` and ``failover_bench.py`` (which gives them the
agent's reconnect policy); not a benchmark itself.

The pipe protocol of :func:`load_process`: it first sends how its streams opened
(``opened``, ``lost``, ``began``, ``ended``, ``rss``); then, for each message received:
``(rate, start_at, seconds, warm)`` runs a step of state reports (see
:meth:`LoadGateway.step`) and sends its figures (``reports``: for each measured report,
the instants it was due, sent and acknowledged, None if it never was, so the benchmark
can tell the load it offered from the load it meant to offer); ``"answers"`` sends what the gateways
were sent since the last time (``commands``: command id to the instant it arrived,
``documents``: the instants documents arrived) and forgets it; ``None`` closes every
stream and ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing.connection
import random
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from link_bench import (  # bench/, beside this script
    connect,
    devices_blob,
    encode_state,
    link_channel,
)

from protos.ondijon.v1 import link_pb2

DRAIN_S = 10.0


@dataclass
class LoadGateway:
    address: str
    credentials: grpc.ChannelCredentials
    # The reports' device states, taken in turn (two with ingest_curve's --changing-states).
    blobs: tuple[bytes, ...]
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    sent: dict[int, float] = field(default_factory=dict)
    measured: set[int] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    # Measured reports: batch -> (due, sent) while unacknowledged, then (due, sent, acked)
    # in ``reports``, all time.time().
    due: dict[int, tuple[float, float]] = field(default_factory=dict)
    reports: list[tuple[float, float, float | None]] = field(default_factory=list)
    # What the orchestrator sent, with the instant (time.time()) it arrived.
    commands: dict[str, float] = field(default_factory=dict)
    documents: list[float] = field(default_factory=list)
    batch: int = 0
    channel: Any = None
    call: Any = None
    reader: asyncio.Task[None] | None = None
    options: list[tuple[str, Any]] = field(default_factory=list)  # more channel options
    welcome: link_pb2.Welcome | None = None  # the open stream's

    def hello(self) -> link_pb2.Hello:
        return link_pb2.Hello(firmware_version="bench")

    async def open(self) -> bool:
        self.channel = link_channel(self.address, self.credentials, self.options)
        self.call = connect(self.channel, self.queue, self.hello())
        try:
            first = await self.call.read()
        except grpc.aio.AioRpcError:
            return False
        if first is grpc.aio.EOF or first.WhichOneof("body") != "welcome":
            return False
        self.welcome = first.welcome
        self.reader = asyncio.create_task(self._read())
        return True

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            while (response := await self.call.read()) is not grpc.aio.EOF:
                body = response.WhichOneof("body")
                if body == "state_ack":
                    batch = response.state_ack.batch_id
                    t0 = self.sent.pop(batch, None)
                    if t0 is not None and batch in self.measured:
                        self.latencies.append(time.perf_counter() - t0)
                        self.measured.discard(batch)
                        self.reports.append((*self.due.pop(batch), time.time()))
                elif body == "command":
                    self.commands[response.command.command_id] = time.time()
                    self.answer(self.done(response.command))
                elif body == "document":
                    self.documents.append(time.time())
                    self.answer(self.accepted(response.document))

    def answer(self, request: link_pb2.ConnectRequest) -> None:
        self.queue.put_nowait(request.SerializeToString())

    @staticmethod
    def done(command: link_pb2.Command) -> link_pb2.ConnectRequest:
        """The agent's answer once it has acted on ``command``."""
        result = link_pb2.CommandResult(
            command_id=command.command_id, status=link_pb2.COMMAND_STATUS_DONE
        )
        return link_pb2.ConnectRequest(command_result=result)

    @staticmethod
    def accepted(document: link_pb2.DesiredDocument) -> link_pb2.ConnectRequest:
        ack = link_pb2.DocumentAck(
            kind=document.kind, version=document.version, digest=document.digest, accepted=True
        )
        return link_pb2.ConnectRequest(document_ack=ack)

    async def step(self, rate: float, start_at: float, seconds: float, warm: float) -> None:
        """Send ``rate`` reports per second from ``start_at`` for ``seconds``; those sent
        after ``warm`` seconds are measured."""
        interval = 1.0 / rate
        at = start_at + random.random() * interval
        end, measure_from = start_at + seconds, start_at + warm
        while at < end:
            await asyncio.sleep(max(0.0, at - time.time()))
            self.batch += 1
            self.sent[self.batch] = time.perf_counter()
            if at >= measure_from:
                self.measured.add(self.batch)
                # Behind schedule, this process sends what it owes at once: how late it
                # was says whether it offered the load it was asked to.
                self.due[self.batch] = (at, time.time())
            blob = self.blobs[self.batch % len(self.blobs)]
            self.queue.put_nowait(encode_state(self.batch, blob))
            at += interval

    async def close(self) -> None:
        self.queue.put_nowait(None)
        if self.reader is not None:
            self.reader.cancel()
        if self.call is not None:
            self.call.cancel()
        if self.channel is not None:
            await self.channel.close()


async def _open_all(fleet: list[LoadGateway], opening: int) -> list[bool]:
    """Open every stream: all at once, or at most ``opening`` handshakes in flight."""
    if not opening:
        return list(await asyncio.gather(*(g.open() for g in fleet)))
    slots = asyncio.Semaphore(opening)

    async def one(gateway: LoadGateway) -> bool:
        async with slots:
            return await gateway.open()

    return list(await asyncio.gather(*(one(g) for g in fleet)))


async def _load(
    pipe: multiprocessing.connection.Connection,
    root: bytes,
    gateways: list[tuple[str, bytes, bytes]],
    devices: int,
    changing: bool,
    opening: int,
) -> None:
    loop = asyncio.get_running_loop()
    blobs = (devices_blob(devices, 50), devices_blob(devices, 100))[: 2 if changing else 1]
    fleet = [
        LoadGateway(address, grpc.ssl_channel_credentials(root, key, chain), blobs)
        for address, key, chain in gateways
    ]
    began = time.time()
    opened = await _open_all(fleet, opening)
    pipe.send(
        {
            "opened": sum(opened),
            "lost": len(opened) - sum(opened),
            "began": began,
            "ended": time.time(),
            "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
    )
    live = [g for g, ok in zip(fleet, opened, strict=True) if ok]
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command is None:
            break
        if command == "answers":
            pipe.send(
                {
                    "commands": {k: v for g in live for k, v in g.commands.items()},
                    "documents": [t for g in live for t in g.documents],
                }
            )
            for g in live:
                g.commands, g.documents = {}, []
            continue
        rate, start_at, seconds, warm = command
        cpu0 = time.process_time()
        await asyncio.gather(*(g.step(rate, start_at, seconds, warm) for g in live))
        measured = sum(len(g.measured) + len(g.latencies) for g in live)
        deadline = time.monotonic() + DRAIN_S
        while any(g.measured for g in live) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        latencies = [x for g in live for x in g.latencies]
        unacked = sum(len(g.measured) for g in live)
        reports = [r for g in live for r in g.reports]
        reports += [(due, sent, None) for g in live for due, sent in g.due.values()]
        for g in live:
            g.latencies, g.measured, g.due, g.reports = [], set(), {}, []
        pipe.send(
            {
                "measured": measured,
                "latencies": latencies,
                "unacked": unacked,
                "reports": reports,
                "cpu_s": time.process_time() - cpu0,
            }
        )
    await asyncio.gather(*(g.close() for g in fleet))


def load_process(
    pipe: multiprocessing.connection.Connection,
    root: bytes,
    gateways: list[tuple[str, bytes, bytes]],
    devices: int,
    changing: bool = False,
    opening: int = 0,
) -> None:
    """``gateways``: (address, key PEM, chain PEM) each; ``devices``: device states per
    report; ``changing``: the reports flip their lamps between 50 and 100 %; ``opening``:
    at most that many streams opening at once (0: all at once)."""
    asyncio.run(_load(pipe, root, gateways, devices, changing, opening))
