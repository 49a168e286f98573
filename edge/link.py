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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Protocol

import grpc

from edge.config import AgentConfig
from edge.equipment.base import EquipmentEvent, Priority
from edge.identity import Credentials, IdentityFilesError, channel_options, load_credentials
from ondijon.files import fsync_dir, write_atomic
from protos.ondijon.v1 import firmware_pb2, link_pb2, link_pb2_grpc, state_pb2

log = logging.getLogger("ondijon.edge.link")

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
    """What the link needs from the outbox."""

    @property
    def last_sequence(self) -> int: ...

    def next_batch(self, max_events: int, max_bytes: int) -> list[link_pb2.Event]: ...

    def ack(self, ranges: Iterable[link_pb2.SequenceRange]) -> int: ...

    def requeue_in_flight(self) -> int: ...

    def raise_sequence_floor(self, stored_sequence: int) -> bool: ...

    def append_many(self, events: Iterable[EquipmentEvent]) -> list[int]: ...


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
    ) -> None:
        self.config = config
        self.agent = agent
        self.outbox = outbox
        self.rng = rng or random.Random()
        self.backoff = backoff or Backoff()
        self.sleep = sleep
        self.max_batch_events = max_batch_events
        self.max_batch_bytes = max_batch_bytes
        self.status = LinkStatus()
        self._changed: dict[str, state_pb2.DeviceState] = {}
        self._state_dirty = asyncio.Event()
        self._events_ready = asyncio.Event()
        # The open stream's channel and session, for firmware downloads and progress.
        self.channel: grpc.aio.Channel | None = None
        self._current: _Session | None = None
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

    def outbox_lost(self) -> None:
        """The outbox was set aside and started empty: renumber on the next welcome.

        Until the orchestrator says what it stored, the new outbox numbers events from
        where it starts, over sequences the orchestrator already holds; a marker file (not
        a flag in memory) keeps that known across restarts while the link is down.
        """
        write_atomic(self._lost_marker, b"")

    def renumber_after_loss(self, stored_sequence: int) -> int:
        """After :meth:`outbox_lost`, move the events at or below ``stored_sequence``."""
        if not self._lost_marker.exists():
            return 0
        moved = renumber_pending(self.outbox, stored_sequence)
        self._lost_marker.unlink()
        fsync_dir(self._lost_marker.parent)
        return moved

    @property
    def _lost_marker(self) -> Path:
        return self.config.state_dir / "outbox.renumber"

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
            attempt = 0 if welcomed else attempt + 1
            delay = self.backoff.delay(attempt, self.rng)
            log.info("link down (%s); retrying in %.1f s", self.status.last_error, delay)
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
            call = stub.Connect(session.requests())
            try:
                async for response in call:
                    if response.WhichOneof("body") == "welcome":
                        self.status.sessions += 1
                        self.status.connected.set()
                        self.channel, self._current = channel, session
                        session.on_welcome(response.welcome)
                        await self.agent.on_connected(channel, credentials)
                    else:
                        await session.handle(response)
            finally:
                if self._current is session:
                    self.channel, self._current = None, None
                session.close()
                call.cancel()


class _Session:
    """One stream's worth of state: what is in flight, and the outgoing queue."""

    def __init__(self, client: GatewayLinkClient) -> None:
        self.client = client
        self.outgoing: asyncio.Queue[link_pb2.ConnectRequest | None] = asyncio.Queue()
        self.window = 0
        self.in_flight = 0
        self.batch_id = 0
        self.tasks: list[asyncio.Task[None]] = []
        client.outbox.requeue_in_flight()

    async def requests(self) -> AsyncIterator[link_pb2.ConnectRequest]:
        agent = self.client.agent
        yield link_pb2.ConnectRequest(
            hello=link_pb2.Hello(
                firmware_version=agent.firmware_version,
                held=agent.held_documents(),
                last_sequence=self.client.outbox.last_sequence,
                protocol_revision=PROTOCOL_REVISION,
            )
        )
        while True:
            message = await self.outgoing.get()
            if message is None:
                return
            yield message

    def on_welcome(self, welcome: link_pb2.Welcome) -> None:
        self.window = max(1, welcome.event_window)
        # A fresh outbox (set aside after corruption) must not reuse sequences the
        # orchestrator already stored: it would take new events for duplicates.
        self.client.outbox.raise_sequence_floor(welcome.stored_sequence)
        self.client.renumber_after_loss(welcome.stored_sequence)
        # After a reconnection the orchestrator may lack any report: send every device once.
        for state in self.client.agent.device_states():
            self.client._changed.setdefault(state.device_id, state)
        self.client._state_dirty.set()
        self.client._events_ready.set()
        self.tasks = [
            asyncio.create_task(self._report_states()),
            asyncio.create_task(self._send_events()),
        ]

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.outgoing.put_nowait(None)

    async def handle(self, response: link_pb2.ConnectResponse) -> None:
        body = response.WhichOneof("body")
        if body == "document":
            await self._on_document(response.document)
        elif body == "event_ack":
            acked = sum(r.last - r.first + 1 for r in response.event_ack.stored)
            self.client.outbox.ack(response.event_ack.stored)
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


_PRIORITY = {
    link_pb2.EVENT_PRIORITY_ALARM: Priority.ALARM,
    link_pb2.EVENT_PRIORITY_EVENT: Priority.EVENT,
    link_pb2.EVENT_PRIORITY_METERING: Priority.METERING,
}


def renumber_pending(outbox: OutboxPort, stored_sequence: int, chunk: int = 200) -> int:
    """Record again, under new sequences, the pending events numbered at or below
    ``stored_sequence`` (the outbox's floor is already above it); how many moved.

    Copies are recorded before the originals are acknowledged: a cut in between keeps
    both, and the orchestrator, which holds other events under the originals' numbers,
    drops those. Everything else pending is left as it was, to be sent as usual.
    """
    pending: list[link_pb2.Event] = []
    while batch := outbox.next_batch(chunk, 1 << 30):
        pending += [e for e in batch if e.sequence <= stored_sequence]
    outbox.requeue_in_flight()
    for start in range(0, len(pending), chunk):
        outbox.append_many(
            EquipmentEvent(
                device_id=e.device_id,
                type=e.type,
                priority=_PRIORITY[e.priority],
                at=e.at.ToDatetime(tzinfo=UTC),
                message=e.message,
                attributes=dict(e.attributes),
            )
            for e in pending[start : start + chunk]
        )
    if pending:
        outbox.ack([link_pb2.SequenceRange(first=e.sequence, last=e.sequence) for e in pending])
    return len(pending)


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
