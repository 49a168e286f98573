"""The agent's side of GatewayLink: one long-lived mutual-TLS stream to the orchestrator.

The street never waits on this link. The agent runs on its own; the link, when it is up,
says hello (firmware, documents held, last event sequence), receives documents newer than
those held (stored on disk before they are acknowledged), commands, and acknowledgements,
and sends the state of devices that changed (coalesced, at most one report per interval)
and the outbox's events in priority order, within the flow-control window the
orchestrator grants.

When the link fails it is reopened after an exponential backoff with full jitter (AWS
Architecture Blog, "Exponential Backoff And Jitter"), so a thousand cabinets coming back
after an outage spread their reconnections instead of stampeding. Backoff runs on real
time even under a simulated clock: the network is real.

Every task a stream starts is owned by the stream: the first to fail closes the stream
with its error, and the link reconnects. When the outbox's storage fails under any of them
(a damaged page, an I/O error), the outbox has set the database aside and recovered what
it could (:mod:`edge.storage.outbox`); the link then closes the stream, raises a local
alarm (an ERROR line, :attr:`LinkStatus.storage_alarm`), and reconnects at once. Its hello
asks what the orchestrator holds above the lowest sequence that may have been lost; the
welcome's answer makes the loss exact (``outbox.gap``), and a welcome whose stored
sequence is above the agent's last one (a restored image) raises ``outbox.rewound``.
Sequences the orchestrator says it holds for other events (``EventAck.conflicting``) are
recorded again under new numbers, with an ``outbox.conflict`` alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import grpc

from edge.config import AgentConfig
from edge.events import EquipmentEvent
from edge.identity import Credentials, IdentityFilesError, channel_options, load_credentials
from edge.storage.atomic import StorageRecovery
from edge.storage.errors import OutboxRecovered, StorageError
from edge.storage.loss import Settlement
from edge.storage.overflow import sequence_list
from foundation.escaping import escape
from foundation.files import fsync_dir
from protos.ondijon.v1 import firmware_pb2, link_pb2, link_pb2_grpc, state_pb2

log = logging.getLogger("ondijon.edge.link")

#: A hello not answered within this many seconds ends the stream (and it is tried again).
WELCOME_WITHIN_S = 30.0

# 2: the agent takes firmware offers and reports firmware progress.
# 3: the agent honours firmware cancels (FirmwareCancel) and reports CANCELLED.
PROTOCOL_REVISION = 3
# Answers to recent commands, by id, for a command sent again (this process's memory: the
# command actions are idempotent, an override by its id, a bollard mode, a cancellation).
ANSWERS_KEPT = 1024


class AgentPort(Protocol):
    """What the link needs from the agent."""

    firmware_version: str

    def held_documents(self) -> list[link_pb2.HeldDocument]: ...

    async def accept_document(self, document: link_pb2.DesiredDocument) -> str:
        """Store and apply a document; return "" when accepted, else why it is refused."""
        ...

    async def handle_command(self, command: link_pb2.Command) -> link_pb2.CommandResult: ...

    def device_states(self) -> list[state_pb2.DeviceState]: ...

    async def on_connected(self, channel: grpc.aio.Channel, credentials: Credentials) -> None:
        """Called once a stream is up (e.g. to renew the certificate)."""
        ...

    async def on_firmware_offer(self, offer: firmware_pb2.FirmwareOffer) -> None:
        """The orchestrator offers a release (taken in the background)."""
        ...

    async def on_firmware_cancel(self, cancel: firmware_pb2.FirmwareCancel) -> None:
        """The orchestrator cancels an update (its campaign was aborted)."""
        ...


class OutboxPort(Protocol):
    """What the link needs from the outbox (:class:`edge.storage.outbox.Outbox`)."""

    on_recovery: list[Callable[[StorageRecovery], None]]

    @property
    def last_sequence(self) -> int: ...

    def next_batch(self, max_events: int, max_bytes: int) -> list[link_pb2.Event]: ...

    def ack(self, ranges: Iterable[link_pb2.SequenceRange]) -> int: ...

    def requeue_in_flight(self) -> int: ...

    def raise_sequence_floor(self, stored_sequence: int) -> bool: ...

    def append_many(self, events: Iterable[EquipmentEvent]) -> list[int]: ...

    def held_after(self) -> int: ...

    def settle_losses(
        self,
        *,
        held: Iterable[tuple[int, int]] | None,
        stored_sequence: int,
        hello_last: int,
        asked_after: int | None = None,
        listed_lost: Iterable[tuple[int, int]] = (),
    ) -> Settlement: ...

    def reissue(
        self, ranges: Iterable[tuple[int, int]], *, conflict: bool = False
    ) -> list[int]: ...


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter."""

    base_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        # The exponent is bounded: days offline must not overflow a float.
        return rng.uniform(0, min(self.cap_s, self.base_s * 2 ** min(attempt, 64)))


class LinkStatus:
    """Observable link state, for the agent's reports and tests."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.sessions = 0
        self.last_error = ""
        # The last storage failure met by the link (the local alarm), and how many.
        self.storage_alarm = ""
        self.storage_recoveries = 0
        # When the orchestrator last answered (Unix time, real clock; 0: never): monitoring.
        self.last_sync = 0.0


class GatewayLinkClient:
    """Keeps the stream to the orchestrator open and pumps messages both ways."""

    def __init__(
        self,
        config: AgentConfig,
        agent: AgentPort,
        outbox: OutboxPort,
        *,
        rng: random.Random | None = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_batch_events: int = 200,
        max_batch_bytes: int = 256 * 1024,
        welcome_within_s: float = WELCOME_WITHIN_S,
    ) -> None:
        self.config = config
        self.agent = agent
        self.outbox = outbox
        self.rng = rng or random.Random()
        self.backoff = backoff or Backoff()
        self.sleep = sleep
        self.max_batch_events = max_batch_events
        self.max_batch_bytes = max_batch_bytes
        self.welcome_within_s = welcome_within_s
        self.status = LinkStatus()
        self._changed: dict[str, state_pb2.DeviceState] = {}
        self._state_dirty = asyncio.Event()
        self._events_ready = asyncio.Event()
        # The open stream's channel and session, for firmware downloads and progress.
        self.channel: grpc.aio.Channel | None = None
        self._current: _Session | None = None
        self._stream: _Session | None = None  # the stream open now (welcomed or not)
        outbox.on_recovery.append(self._storage_recovered)
        self._answered: OrderedDict[str, link_pb2.CommandResult] = OrderedDict()

    async def answer(self, command: link_pb2.Command) -> link_pb2.CommandResult:
        """Run a command once: the orchestrator sends a command again until it hears the
        answer (the answer may have been lost with a stream), and gets the same answer."""
        known = self._answered.get(command.command_id)
        if known is not None:
            return known
        result = await self.agent.handle_command(command)
        self._answered[command.command_id] = result
        while len(self._answered) > ANSWERS_KEPT:
            self._answered.popitem(last=False)
        return result

    # -- called by the agent ---------------------------------------------------------------

    def state_changed(self, state: state_pb2.DeviceState) -> None:
        """A device changed; it will be in the next report (latest value wins)."""
        self._changed[state.device_id] = state
        self._state_dirty.set()

    def outbox_lost(self, report: StorageRecovery) -> None:
        """The outbox was found damaged on start and set aside: the local alarm.

        What the loss was, and the renumbering of events recorded over numbers the lost
        outbox gave, are settled at the next welcome; the outbox keeps what that needs on
        disk, so a restart before it changes nothing.
        """
        self._storage_alarm(f"the outbox was damaged on start and set aside: {report.reason}")

    def renumber_after_loss(self, stored_sequence: int) -> int:
        """Honour the marker an earlier agent version left when it set its outbox aside
        (``outbox.renumber``): renumber the pending events at or below the orchestrator's
        stored sequence, as it would have; how many moved."""
        marker = self.config.state_dir / "outbox.renumber"
        if not marker.exists():
            return 0
        moved = self.outbox.reissue([(1, stored_sequence)])
        marker.unlink()
        fsync_dir(marker.parent)
        return len(moved)

    def _storage_alarm(self, reason: str) -> None:
        self.status.storage_alarm = reason
        self.status.storage_recoveries += 1
        log.error("outbox storage failed: %s; recovered, reconnecting", escape(reason))

    def _storage_recovered(self, report: StorageRecovery) -> None:
        """The outbox recovered while running: what was in flight on this stream is
        gone from it, so the stream ends (and the link reconnects at once)."""
        self._storage_alarm(report.reason)
        if self._stream is not None:
            self._stream.fail(OutboxRecovered(report.path, report.reason))

    def events_recorded(self) -> None:
        """The outbox has new events."""
        self._events_ready.set()

    def send_firmware_progress(self, progress: firmware_pb2.FirmwareProgress) -> bool:
        """Send firmware progress on the open stream; ``False`` when there is none."""
        session = self._current
        if session is None:
            return False
        session.outgoing.put_nowait(link_pb2.ConnectRequest(firmware_progress=progress))
        return True

    # -- connection loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect forever, until cancelled."""
        attempt = 0
        while True:
            sessions = self.status.sessions
            try:
                await self._session()
                self.status.last_error = "stream ended by the orchestrator"
            except asyncio.CancelledError:
                raise
            except StorageError as exc:
                # Recovered already (the outbox did it): reconnect soon, whatever before.
                self.status.last_error = f"storage: {exc}"
                attempt = -1
            except grpc.aio.AioRpcError as exc:
                self.status.last_error = f"{exc.code().name}: {exc.details()}"
            except IdentityFilesError as exc:
                # Expected until the gateway is enrolled: one line, not a traceback per retry.
                self.status.last_error = str(exc)
            except Exception as exc:
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("link failed")
            # A session that was welcomed worked, however it ended (an orchestrator restart
            # ends it with an RPC error): the backoff starts again from zero.
            welcomed = self.status.sessions > sessions
            self.status.connected.clear()
            attempt = 0 if welcomed or attempt < 0 else attempt + 1
            delay = self.backoff.delay(attempt, self.rng)
            log.info("link down (%s); retrying in %.1f s", escape(self.status.last_error), delay)
            await self.sleep(delay)

    async def _session(self) -> None:
        credentials = load_credentials(self.config)
        async with grpc.aio.secure_channel(
            self.config.address,
            credentials.channel_credentials(),
            options=channel_options(self.config),
        ) as channel:
            stub = link_pb2_grpc.GatewayLinkStub(channel)
            session = _Session(self)
            session._spawn(session.expect_welcome(self.welcome_within_s), "link: welcome due")
            call = stub.Connect(session.requests())
            self._stream = session
            reading = asyncio.create_task(self._read(call, session, channel, credentials))
            try:
                # The stream's own tasks and its reader: the first to fail ends it all.
                await asyncio.wait({reading, session.failed}, return_when=asyncio.FIRST_COMPLETED)
                if session.failed.done():
                    session.failed.result()
                reading.result()
            finally:
                if self._stream is session:
                    self._stream = None
                if self._current is session:
                    self.channel, self._current = None, None
                if session.failed.done():
                    session.failed.exception()  # retrieved: raised above, or moot
                await session.close()
                call.cancel()
                await cancel_and_wait(reading)

    async def _read(
        self,
        call: grpc.aio.StreamStreamCall[link_pb2.ConnectRequest, link_pb2.ConnectResponse],
        session: _Session,
        channel: grpc.aio.Channel,
        credentials: Credentials,
    ) -> None:
        async for response in call:
            self.status.last_sync = time.time()
            if response.WhichOneof("body") == "welcome":
                self.status.sessions += 1
                self.status.connected.set()
                self.channel, self._current = channel, session
                session.on_welcome(response.welcome)
                await self.agent.on_connected(channel, credentials)
            else:
                await session.handle(response)


class _Session:
    """One stream's worth of state: what is in flight, and the outgoing queue."""

    def __init__(self, client: GatewayLinkClient) -> None:
        self.client = client
        self.outgoing: asyncio.Queue[link_pb2.ConnectRequest | None] = asyncio.Queue()
        self.window = 0
        self.in_flight = 0
        self.batch_id = 0
        self.tasks: list[asyncio.Task[None]] = []
        # Set by the first of this stream's tasks to fail (the stream then ends with it).
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.hello_last = self.asked_after = 0
        self.welcomed = False
        client.outbox.requeue_in_flight()

    def fail(self, exc: BaseException) -> None:
        """End this stream with ``exc`` (raised by the link's session)."""
        if not self.failed.done():
            self.failed.set_exception(exc)

    async def expect_welcome(self, within_s: float) -> None:
        """End the stream if the hello is not answered in time (real seconds: the network
        is real): an orchestrator that takes the connection and never answers would hold
        the agent, and its outbox's hello protection, forever."""
        await asyncio.sleep(within_s)
        if not self.welcomed:
            raise TimeoutError(f"no welcome within {within_s:.0f} s of the hello")

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        """A task owned by this stream: its failure ends the stream, never silently."""

        async def owned() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.fail(exc)

        self.tasks.append(asyncio.create_task(owned(), name=name))

    async def requests(self) -> AsyncIterator[link_pb2.ConnectRequest]:
        agent = self.client.agent
        outbox = self.client.outbox
        self.hello_last = outbox.last_sequence
        self.asked_after = outbox.held_after()
        yield link_pb2.ConnectRequest(
            hello=link_pb2.Hello(
                firmware_version=agent.firmware_version,
                held=agent.held_documents(),
                last_sequence=self.hello_last,
                protocol_revision=PROTOCOL_REVISION,
                # What the orchestrator holds above this tells exactly what a damaged or
                # rewound outbox lost (usually nothing is above it: one index probe).
                held_after=self.asked_after,
                list_held_after=True,
            )
        )
        while True:
            message = await self.outgoing.get()
            if message is None:
                return
            yield message

    def on_welcome(self, welcome: link_pb2.Welcome) -> None:
        self.welcomed = True
        self.window = max(1, welcome.event_window)
        outbox = self.client.outbox
        settlement = outbox.settle_losses(
            held=[(r.first, r.last) for r in welcome.held_after]
            if welcome.held_after_listed
            else None,
            stored_sequence=welcome.stored_sequence,
            hello_last=self.hello_last,
            asked_after=self.asked_after,
            listed_lost=[(r.first, r.last) for r in welcome.listed_lost_after],
        )
        if settlement.lost or settlement.rewound:
            log.warning(
                "welcome: the orchestrator stores up to %d (hello said %d, asked after %d); "
                "lost to storage: %s",
                welcome.stored_sequence,
                self.hello_last,
                self.asked_after,
                (sequence_list(settlement.lost) or "none")[:500],
            )
        if settlement.rewound:
            self.client._storage_alarm(
                f"the orchestrator holds sequences up to {welcome.stored_sequence} this "
                "outbox did not know of when it started: it went back to an older state"
            )
        # A fresh outbox must not reuse sequences the orchestrator already stored: it
        # would take new events for duplicates.
        outbox.raise_sequence_floor(welcome.stored_sequence)
        self.client.renumber_after_loss(welcome.stored_sequence)
        # After a reconnection the orchestrator may lack any report: send every device once.
        for state in self.client.agent.device_states():
            self.client._changed.setdefault(state.device_id, state)
        self.client._state_dirty.set()
        self.client._events_ready.set()
        self._spawn(self._report_states(), "link: report states")
        self._spawn(self._send_events(), "link: send events")

    async def close(self) -> None:
        for task in self.tasks:
            await cancel_and_wait(task)
        self.outgoing.put_nowait(None)

    async def handle(self, response: link_pb2.ConnectResponse) -> None:
        body = response.WhichOneof("body")
        if body == "document":
            await self._on_document(response.document)
        elif body == "event_ack":
            ack = response.event_ack
            acked = sum(r.last - r.first + 1 for r in ack.stored)
            if ack.conflicting:
                self._reissue(ack.conflicting)
            self.client.outbox.ack(ack.stored)
            self.in_flight = max(0, self.in_flight - acked)
            self.client._events_ready.set()
        elif body == "state_ack":
            pass
        elif body == "command":
            result = await self.client.answer(response.command)
            self.outgoing.put_nowait(link_pb2.ConnectRequest(command_result=result))
        elif body == "firmware_offer":
            await self.client.agent.on_firmware_offer(response.firmware_offer)
        elif body == "firmware_cancel":
            await self.client.agent.on_firmware_cancel(response.firmware_cancel)

    def _reissue(self, conflicting: Iterable[link_pb2.SequenceRange]) -> None:
        """The orchestrator holds other events under these numbers: record ours again
        under new ones (before the ack forgets the numbers), with an alarm saying so."""
        self.client.outbox.reissue([(r.first, r.last) for r in conflicting], conflict=True)
        self.client.events_recorded()

    async def _on_document(self, document: link_pb2.DesiredDocument) -> None:
        error = await self.client.agent.accept_document(document)
        self.outgoing.put_nowait(
            link_pb2.ConnectRequest(
                document_ack=link_pb2.DocumentAck(
                    kind=document.kind,
                    version=document.version,
                    digest=document.digest,
                    accepted=not error,
                    error=error[:1000],
                )
            )
        )

    async def _report_states(self) -> None:
        client = self.client
        while True:
            await client._state_dirty.wait()
            client._state_dirty.clear()
            if client._changed:
                devices, client._changed = list(client._changed.values()), {}
                self.batch_id += 1
                self.outgoing.put_nowait(
                    link_pb2.ConnectRequest(
                        state=link_pb2.StateReport(batch_id=self.batch_id, devices=devices)
                    )
                )
            # Coalesce: at most one report per interval, whatever the equipment does.
            await asyncio.sleep(client.config.report_interval_s)

    async def _send_events(self) -> None:
        client = self.client
        while True:
            await client._events_ready.wait()
            client._events_ready.clear()
            while self.in_flight < self.window:
                room = min(client.max_batch_events, self.window - self.in_flight)
                batch = client.outbox.next_batch(room, client.max_batch_bytes)
                if not batch:
                    break
                self.in_flight += len(batch)
                self.outgoing.put_nowait(
                    link_pb2.ConnectRequest(events=link_pb2.EventBatch(events=batch))
                )


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
