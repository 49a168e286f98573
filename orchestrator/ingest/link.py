"""GatewayLink: the one long-lived stream per gateway.

The gateway says hello; the orchestrator answers with a welcome, then sends every desired
document newer than what the gateway holds (nothing that is already there), then the
commands it has not answered yet. A command stays PENDING until the gateway answers it
(DONE, REFUSED or EXPIRED): one sent into a stream that died unnoticed is sent again on the
next stream (the agent answers a command it already ran without running it twice). The
hello also records the stream in the store as the gateway's, which ends an older stream of
the gateway on any replica (:mod:`orchestrator.ingest.routing`). A replica that cannot reach its
store refuses streams (UNAVAILABLE), so the gateway goes to another.

From then on it stores state reports and events and acknowledges each only after its
transaction committed; an event batch is stored idempotently by (gateway,
sequence), so a replayed batch changes nothing (the live feed included) and is
acknowledged again.

Flow control, for a city coming back after an outage: the welcome grants each gateway a
window of unacknowledged events that shrinks as more gateways are connected, and what a
gateway sent is stored a fair share per round of the store's writer, alarms first
(:class:`PendingEvents`), so a live alarm waits a round or two, not behind every backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from domain.sequences import GAP_EVENT_TYPE
from foundation.clock import Clock
from foundation.escaping import escape
from orchestrator.access.certificates import Certificates
from orchestrator.access.peers import AuthError, peer_of, require_role
from orchestrator.config import Limits
from orchestrator.ingest import numbers
from orchestrator.ingest.checks import (
    WireError,
    check_command_result,
    check_document_ack,
    check_event_batch,
    check_hello,
    check_state_report,
    sequence_ranges,
    stored_event,
    time_window,
)
from orchestrator.ingest.delivery import Delivery
from orchestrator.ingest.devices import DeviceLog, compact
from orchestrator.ingest.hub import Hub, Session
from orchestrator.ingest.routing import Router
from orchestrator.metrics import Metrics
from orchestrator.store.connection import Connection
from orchestrator.store.database import HeldRecord, NewEvent, NotFound
from orchestrator.store.documents import hold_if_issued
from orchestrator.store.groups import record_refusal
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import firmware_pb2, link_pb2, link_pb2_grpc
from provisioning.identity import Role

# Called with (connection, gateway id, the events new to the store, now) inside the
# transaction that stores them: alarms and energy fold events in as they are stored.
EventHook = Callable[[Connection, str, Sequence[NewEvent], datetime], None]
# Told of each state report once it is stored (gateway, report): the console's live
# states (orchestrator.console.states). Called on the event loop; must not wait.
StateHook = Callable[[str, link_pb2.StateReport], None]

log = logging.getLogger("ondijon.orchestrator.link")

PROTOCOL_REVISION = 1
# Ranges listed in a welcome's held_after, at most (a backlog is a few contiguous runs).
MAX_HELD_RANGES = 10_000


NOT_READY = (
    "this orchestrator replica cannot reach its store; reconnect (another replica serves you)"
)
STOPPING = "this orchestrator replica is stopping; reconnect (another replica serves you)"


@dataclass(frozen=True, slots=True)
class Received:
    """A gateway's message and the bytes it came in."""

    message: link_pb2.ConnectRequest
    raw: bytes

    def state_bytes(self) -> bytes | None:
        """The StateReport's own bytes, sliced out of the message (None if it holds more
        than the report): the store keeps them without decoding and encoding again."""
        raw = self.raw
        if not raw or raw[0] != _STATE_TAG:
            return None
        length, shift, i = 0, 0, 1
        while i < len(raw):
            byte = raw[i]
            length |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            shift += 7
        return raw[i:] if len(raw) - i == length else None


# ConnectRequest.state: field 2, length-delimited.
_STATE_TAG = (2 << 3) | 2


def decode_request(raw: bytes) -> Received:
    return Received(link_pb2.ConnectRequest.FromString(raw), raw)


def add_gateway_link(service: GatewayLinkService, server: grpc.aio.Server) -> None:
    """Register GatewayLink with a deserializer that keeps each message's bytes."""
    handlers = {
        "Connect": grpc.stream_stream_rpc_method_handler(
            service.Connect,
            request_deserializer=decode_request,
            response_serializer=link_pb2.ConnectResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("ondijon.v1.GatewayLink", handlers),)
    )


class FirmwareListener(Protocol):
    """What the link tells firmware campaigns (:mod:`orchestrator.firmware.runner`)."""

    async def gateway_connected(self, session: Session, hello: link_pb2.Hello) -> None: ...

    async def on_progress(
        self, gateway_id: str, progress: firmware_pb2.FirmwareProgress
    ) -> None: ...


class GatewayLinkService(link_pb2_grpc.GatewayLinkServicer):
    def __init__(
        self,
        *,
        runner: StoreRunner,
        clock: Clock,
        limits: Limits,
        hub: Hub,
        certificates: Certificates,
        router: Router,
        delivery: Delivery,
        firmware: FirmwareListener,
        metrics: Metrics | None = None,
        event_hooks: Sequence[EventHook] = (),
        state_hooks: Sequence[StateHook] = (),
    ) -> None:
        self.metrics = metrics or Metrics()
        self.runner = runner
        self.store = runner.store
        self.clock = clock
        self.limits = limits
        self.hub = hub
        self.certificates = certificates
        self.router = router
        self.delivery = delivery
        self.firmware = firmware
        self.event_hooks = tuple(event_hooks)
        self.state_hooks = tuple(state_hooks)

    async def Connect(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[Received],
        context: grpc.aio.ServicerContext[link_pb2.ConnectRequest, link_pb2.ConnectResponse],
    ) -> None:
        refused = self.metrics.streams_refused
        if not self.runner.available:
            refused.labels("not_ready").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, NOT_READY)
        try:
            peer = peer_of(context)
            require_role(peer, Role.GATEWAY)
            await self.certificates.check(peer)
        except AuthError as exc:
            refused.labels("unauthenticated").inc()
            await context.abort(exc.code, str(exc))
        gateway_id = peer.identity.name
        try:
            await self.runner.read(self.store.get_gateway, gateway_id)
        except NotFound:
            refused.labels("unregistered").inc()
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "gateway is not registered")
        self.metrics.streams_opened.inc()

        session = Session(gateway_id=gateway_id, cert_serial=peer.serial_hex)
        stream_task = asyncio.current_task()

        def cancel() -> None:
            if stream_task is not None:
                stream_task.cancel()

        session.cancel = cancel
        conversation = _Conversation(self, session, context)
        # One long-lived writer per stream: replies are queued by whoever produces them
        # (this stream's reader, the admin API, the campaign runner) and written in order.
        writer = asyncio.create_task(_write(session, context))
        self.hub.attach(session)
        log.info("gateway %s connected", gateway_id)
        try:
            # A WireError ends the stream; the admission answers it INVALID_ARGUMENT.
            await conversation.read(request_iterator)
            # The gateway closed its side: deliver what is still queued, then end.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.outbox.join(), 5.0)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            self.hub.detach(session)
            self.router.stream_ended(session)
            log.info("gateway %s disconnected", gateway_id)


async def _write(
    session: Session,
    context: grpc.aio.ServicerContext[link_pb2.ConnectRequest, link_pb2.ConnectResponse],
) -> None:
    while True:
        message = await session.outbox.get()
        try:
            await context.write(message)
        finally:
            session.outbox.task_done()


# Events stored per round of the store's writer, all gateways together. Each gateway's
# share is this divided among those connected (at least MIN_SHARE), alarms first: a city
# draining its backlog keeps a live alarm a round or two away from the store, instead of
# behind every gateway's whole window.
EVENTS_PER_ROUND = 10_000
MIN_SHARE = 10
# The window granted in the welcome shrinks as more gateways are connected (at most the
# configured one): a few rounds' worth in flight is enough to keep the store busy, and
# what is in flight is held in memory here.
WINDOW_ROUNDS = 4
MIN_WINDOW = 50


class PendingEvents:
    """What a gateway sent and is not yet stored, taken a share at a time, alarms first.

    A gateway keeps at most its window unacknowledged, so this holds at most that many; a
    gateway sending beyond it is not read until it is back within (gRPC flow control then
    holds it back).
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self.events: list[link_pb2.Event] = []  # in arrival order (each lane in sequence)
        self.taken = 0  # taken and not yet stored
        self._changed = asyncio.Condition()

    async def put(self, events: Iterable[link_pb2.Event]) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.events) < self.window)
            self.events.extend(events)
            self._changed.notify_all()

    async def take(self, share: int) -> list[link_pb2.Event]:
        """The next ``share`` events to store: alarms first, the rest in arrival order."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self.events))
            alarms = [
                i for i, e in enumerate(self.events) if e.priority == link_pb2.EVENT_PRIORITY_ALARM
            ]
            chosen = set(alarms[:share])
            for i in range(len(self.events)):
                if len(chosen) >= share:
                    break
                chosen.add(i)
            taken = [e for i, e in enumerate(self.events) if i in chosen]
            self.events = [e for i, e in enumerate(self.events) if i not in chosen]
            self.taken = len(taken)
            self._changed.notify_all()
            return taken

    async def stored(self) -> None:
        """What :meth:`take` gave is stored."""
        async with self._changed:
            self.taken = 0
            self._changed.notify_all()

    async def drained(self) -> None:
        """Wait until everything received is stored."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self.events and not self.taken)


class _Conversation:
    """Handles what one gateway says on its stream."""

    def __init__(
        self,
        link: GatewayLinkService,
        session: Session,
        context: grpc.aio.ServicerContext[link_pb2.ConnectRequest, link_pb2.ConnectResponse],
    ) -> None:
        self.runner = link.runner
        self.store = link.store
        self.clock = link.clock
        self.limits = link.limits
        self.hub = link.hub
        self.router = link.router
        self.delivery = link.delivery
        self.firmware = link.firmware
        self.metrics = link.metrics
        self.event_hooks = link.event_hooks
        self.state_hooks = link.state_hooks
        self.session = session
        self.context = context
        self.gateway_id = session.gateway_id
        self.report_seq = 0
        self.devices = DeviceLog()
        self.pending = PendingEvents(link.limits.event_window)

    async def read(self, requests: AsyncIterator[Received]) -> None:
        iterator = requests.__aiter__()
        limits = self.limits
        try:
            first = (await asyncio.wait_for(iterator.__anext__(), limits.hello_timeout_s)).message
        except (TimeoutError, StopAsyncIteration):
            raise WireError("hello", "the stream must open with a hello") from None
        if first.WhichOneof("body") != "hello":
            raise WireError("hello", "the stream must open with a hello")
        await self.on_hello(first.hello)
        storing = asyncio.create_task(self._store_events())
        reading = asyncio.create_task(self._read_requests(iterator))
        draining: asyncio.Task[None] | None = None
        try:
            # Storing only ends by failing, and then so does the stream.
            await asyncio.wait({reading, storing}, return_when=asyncio.FIRST_COMPLETED)
            if storing.done():
                storing.result()
            reading.result()
            # The gateway closed its side: what it sent is stored before the stream ends.
            draining = asyncio.create_task(self.pending.drained())
            await asyncio.wait({draining, storing}, return_when=asyncio.FIRST_COMPLETED)
            if storing.done():
                storing.result()
        finally:
            for task in (reading, storing, draining):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _read_requests(self, iterator: AsyncIterator[Received]) -> None:
        async for received in iterator:
            await self.on_request(received)

    async def on_request(self, received: Received) -> None:
        request = received.message
        body = request.WhichOneof("body")
        if body == "state":
            await self.on_state(request.state, received.state_bytes())
        elif body == "events":
            await self.on_events(request.events)
        elif body == "document_ack":
            await self.on_document_ack(request.document_ack)
        elif body == "command_result":
            await self.on_command_result(request.command_result)
        elif body == "firmware_progress":
            await self.firmware.on_progress(self.gateway_id, request.firmware_progress)
        elif body == "hello":
            raise WireError("hello", "sent twice on one stream")
        else:
            raise WireError("body", "empty message")

    async def on_hello(self, hello: link_pb2.Hello) -> None:
        check_hello(hello)
        store = self.store
        now = self.clock.now()
        held = [HeldRecord(h.kind, h.version, h.digest) for h in hello.held]
        gateway_id = self.gateway_id

        def record(conn: Connection) -> tuple[int, int, list[tuple[int, int]]]:
            store.record_hello(
                conn,
                gateway_id,
                firmware_version=hello.firmware_version,
                reported_sequence=hello.last_sequence,
                held=held,
                now=now,
            )
            # This stream is now the gateway's: an older one, on any replica, ends.
            self.router.stream_opened(conn, self.session)
            # An agent that lost part of its outbox asks what is held above a sequence, to
            # say exactly which events are gone (usually nothing: one index probe).
            listed = (
                store.held_ranges(conn, gateway_id, after=hello.held_after, limit=MAX_HELD_RANGES)
                if hello.list_held_after
                else []
            )
            stored = store.stored_sequence(conn, gateway_id)
            return stored, store.last_report_seq(conn, gateway_id), listed

        def listed_lost(conn: Connection) -> list[tuple[int, int]]:
            # What its gap events say is lost already (not to be listed again): read and
            # decoded on a reader thread, not inside the store's one writer.
            gaps = store.event_payloads_of_type(
                conn, gateway_id, GAP_EVENT_TYPE, after=hello.held_after
            )
            return numbers.listed_lost_after(gaps, hello.held_after)[:MAX_HELD_RANGES]

        stored, self.report_seq, held_after = await self.runner.write(record)
        lost_after = await self.runner.read(listed_lost) if hello.list_held_after else []
        self.session.registered = True
        # Start from a folded snapshot, knowing which devices it holds.
        self.devices = DeviceLog(
            await self.runner.write(functools.partial(compact, store), gateway_id)
        )
        connected = max(1, len(self.hub.sessions()))
        budget = max(MIN_WINDOW, WINDOW_ROUNDS * EVENTS_PER_ROUND // connected)
        self.pending.window = min(self.limits.event_window, budget)
        server_time = Timestamp()
        server_time.FromDatetime(now)
        self.session.send(
            link_pb2.ConnectResponse(
                welcome=link_pb2.Welcome(
                    gateway_id=gateway_id,
                    server_time=server_time,
                    stored_sequence=stored,
                    event_window=self.pending.window,
                    held_after=[link_pb2.SequenceRange(first=a, last=b) for a, b in held_after],
                    held_after_listed=hello.list_held_after,
                    listed_lost_after=[
                        link_pb2.SequenceRange(first=a, last=b) for a, b in lost_after
                    ],
                )
            )
        )
        await self.delivery.newer_documents(self.session, {(h.kind): h for h in held})
        await self.delivery.pending_commands(self.session)
        # Firmware offers this gateway is waiting for (orchestrator.firmware.runner).
        await self.firmware.gateway_connected(self.session, hello)

    async def on_state(self, report: link_pb2.StateReport, raw: bytes | None = None) -> None:
        limits = self.limits
        window = time_window(limits, self.clock.now())
        ids = check_state_report(report, limits.max_batch_devices, window)
        # Stored as received, bytes and all: no per-device work and no re-encoding here
        # (see orchestrator.ingest.devices; a batch_id in the log is ignored when it is read).
        batch_id = report.batch_id
        payload = raw if raw is not None else report.SerializeToString()
        store = self.store
        gateway_id = self.gateway_id
        self.report_seq += 1
        rows, fold = self.devices.rows(
            store, gateway_id, self.report_seq, payload, ids, now=self.clock.now()
        )
        await self.runner.write_rows(rows)
        self.metrics.device_reports_stored.inc(len(ids))
        for hook in self.state_hooks:
            hook(gateway_id, report)
        self.session.send(link_pb2.ConnectResponse(state_ack=link_pb2.StateAck(batch_id=batch_id)))
        if fold:
            await self.runner.write(functools.partial(compact, store), gateway_id)

    async def on_events(self, batch: link_pb2.EventBatch) -> None:
        """Queue a batch to be stored; waits while the gateway is over its window."""
        limits = self.limits
        window = time_window(limits, self.clock.now())
        check_event_batch(batch, limits.max_batch_events, window)
        await self.pending.put(batch.events)

    async def _store_events(self) -> None:
        while True:
            # A fair share per round of the store's writer, whatever the gateway's window.
            connected = max(1, len(self.hub.sessions()))
            share = max(MIN_SHARE, EVENTS_PER_ROUND // connected)
            await self.store_events(await self.pending.take(share))
            await self.pending.stored()

    async def store_events(self, events: list[link_pb2.Event]) -> None:
        """Store events idempotently, acknowledge them, and publish the new ones."""
        store = self.store
        now = self.clock.now()
        new = [
            NewEvent(
                sequence=e.sequence,
                at=e.at.ToDatetime(tzinfo=now.tzinfo),
                priority=e.priority,
                device_id=e.device_id,
                type=e.type,
                payload=e.SerializeToString(),
                first_sequence=e.first_sequence or None,
            )
            for e in events
        ]
        gateway_id = self.gateway_id
        sequences = [e.sequence for e in events]

        router = self.router

        hooks = self.event_hooks

        def add(conn: Connection) -> tuple[set[int] | None, dict[int, int], list[int]]:
            added = store.add_events(conn, gateway_id, new, now=now)
            fresh: set[int] | None = None
            stored_now = new
            if added != len(new):
                fresh = set()
                if added:
                    # Partly a replay (batches resent after a cut are not cut the same
                    # way): the new events are those this very transaction stamped.
                    for r in sequence_ranges(sequences):
                        span = store.list_events(
                            conn,
                            gateway_id,
                            after_sequence=r.first - 1,
                            limit=r.last - r.first + 1,
                        )
                        fresh |= {row.sequence for row in span if row.received_at == now}
                # The first of a sequence sent twice is the one stored.
                first = {n.sequence: n for n in reversed(new) if n.sequence in fresh}
                stored_now = sorted(first.values(), key=lambda n: n.sequence)
            copies = numbers.copies(store, conn, gateway_id, stored_now)
            news = [n for n in stored_now if n.sequence not in copies]
            # Feeds on other replicas hear of it on commit.
            router.events_stored(conn, gateway_id, [n.sequence for n in news], now)
            for hook in hooks:
                hook(conn, gateway_id, news, now)
            conflicting = (
                [] if fresh is None else numbers.conflicting(store, conn, gateway_id, events, fresh)
            )
            return fresh, copies, conflicting

        fresh, copies, conflicting = await self.runner.write(add)
        stored_count = len(new) if fresh is None else len(fresh)
        self.metrics.events_stored.inc(stored_count - len(copies))
        ack = link_pb2.EventAck(stored=sequence_ranges(sequences))
        if conflicting:
            # The store keeps what it held; the agent records these again under new
            # sequences (an older agent at least leaves this line in the log).
            ack.conflicting.extend(sequence_ranges(conflicting))
            log.warning(
                "gateway %s sent %d event(s) under sequences it had used for others "
                "(%s): kept the first, asked the gateway to renumber",
                gateway_id,
                len(conflicting),
                ", ".join(f"{r.first}-{r.last}" for r in sequence_ranges(conflicting)[:5]),
            )
        if copies:
            log.warning(
                "gateway %s sent again %d event(s) it had already delivered under other "
                "sequences (its storage went back): stored as copies, not news (%s)",
                gateway_id,
                len(copies),
                ", ".join(f"{c} of {o}" for c, o in sorted(copies.items())[:5]),
            )
        self.session.send(link_pb2.ConnectResponse(event_ack=ack))
        # Watchers see what was stored, once: a replayed event (whatever it now claims) is
        # not news, and its stored content is the first one received.
        published: dict[int, link_pb2.Event] = {}
        for e in events:
            if (fresh is None or e.sequence in fresh) and e.sequence not in copies:
                published.setdefault(e.sequence, e)
        self.hub.publish([stored_event(gateway_id, e, now) for e in published.values()])

    async def on_document_ack(self, ack: link_pb2.DocumentAck) -> None:
        check_document_ack(ack)
        if not ack.accepted:
            log.warning(
                "gateway %s refused document kind %d v%d: %s",
                self.gateway_id,
                ack.kind,
                ack.version,
                escape(ack.error),  # the gateway's words: never a forged line in the log
            )
            # Kept for the convergence view ("refused with what error"), escaped when shown.
            refused_by, at = self.gateway_id, self.clock.now()
            await self.runner.write(
                record_refusal, refused_by, ack.kind, ack.version, ack.error, now=at
            )
            return
        store = self.store
        now = self.clock.now()
        held = HeldRecord(ack.kind, ack.version, ack.digest)
        gateway_id = self.gateway_id
        if self.session.sent_documents.get(ack.kind) == (ack.version, ack.digest):
            # What this stream was sent (the common case, a city-wide document): stored
            # with the other acknowledgements of the group commit, in one executemany,
            # and still only if it is the issued document when the group commits.
            dialect = store.engine.dialect.name
            await self.runner.write_rows(hold_if_issued(dialect, gateway_id, held, now=now))
            return

        def record(conn: Connection) -> bool:
            # Only a document the orchestrator issued, as issued, can be held: a gateway
            # cannot make operators believe it runs a version it was never sent.
            issued = store.get_document(conn, gateway_id, ack.kind)
            if issued is None or (issued.version, issued.digest) != (ack.version, ack.digest):
                return False
            store.set_held(conn, gateway_id, held, now=now)
            return True

        if not await self.runner.write(record):
            log.warning(
                "gateway %s acknowledged kind %d v%d, which is not the issued document",
                gateway_id,
                ack.kind,
                ack.version,
            )

    async def on_command_result(self, result: link_pb2.CommandResult) -> None:
        check_command_result(result)
        sent_here = result.command_id in self.session.sent_commands
        # The gateway's answer is the acknowledgement: the command is no longer owed.
        self.session.sent_commands.discard(result.command_id)
        # The answer to a command sent on this stream is what an operator waits for: it
        # is committed ahead of the ingest's queued writes. Others take the common lane.
        write = self.runner.write_first if sent_here else self.runner.write
        store, router, gateway_id, now = self.store, self.router, self.gateway_id, self.clock.now()

        def settle(conn: Connection) -> None:
            # Scoped to this gateway: a gateway can never settle another gateway's command.
            if store.set_command_status(
                conn,
                result.command_id,
                status=result.status,
                detail=result.detail,
                now=now,
                gateway_id=gateway_id,
            ):
                router.answered_in(conn, result.command_id)

        await write(settle)
        router.answered(result.command_id)  # an operator waiting here has it now
