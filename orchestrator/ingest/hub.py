"""Live routing inside one orchestrator process: open gateway streams and event watchers.

A gateway has at most one open stream; a newer stream replaces (and cancels) the older
one, so a cabinet that reconnects after a half-open TCP connection is never talked to twice.
Across replicas the store says which stream is the gateway's (:mod:`orchestrator.ingest.routing`
closes the older one wherever it is). A session remembers what it sent (commands and
documents), so what is resent after a lost notification is only what is still owed.
Watchers of the event feed get a bounded queue each: a slow dashboard loses its oldest
queued events (and is told how many), it never slows ingestion.

Sessions and watchers remember the serial of the certificate they were opened with, so a
revocation (or the expiry of that certificate) can close them: TLS checks a certificate
once, at the handshake, and an open stream would otherwise outlive it. A stream closed
from here ends with the status and reason left in :attr:`Hub.closing` (gRPC sends none
for a handler task that is cancelled: orchestrator.access.admission turns the cancellation into
that status).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from protos.ondijon.v1 import control_pb2, link_pb2

Closing = tuple[grpc.StatusCode, str]


@dataclass(eq=False)
class Session:
    """One open GatewayLink stream."""

    gateway_id: str
    cert_serial: str
    outbox: asyncio.Queue[link_pb2.ConnectResponse] = field(
        default_factory=lambda: asyncio.Queue(maxsize=1024)
    )
    cancel: Callable[[], None] = lambda: None
    # This stream's name in the store (gateway_streams), and whether it is recorded there.
    stream_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    registered: bool = False
    # Sent on this stream and not yet answered: commands by id, documents by kind.
    sent_commands: set[str] = field(default_factory=set)
    sent_documents: dict[int, tuple[int, bytes]] = field(default_factory=dict)

    def send(self, message: link_pb2.ConnectResponse) -> None:
        """Queue a message for the gateway; if it does not drain, the stream is dropped."""
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.cancel()


@dataclass(eq=False)
class Watcher:
    """A subscriber to the event feed."""

    gateway_id: str
    visible: Callable[[str], bool]
    queue: asyncio.Queue[control_pb2.StoredEvent] = field(
        default_factory=lambda: asyncio.Queue(maxsize=4096)
    )
    dropped: int = 0
    cert_serial: str = ""
    cancel: Callable[[], None] = lambda: None


class Hub:
    """Registry of sessions and watchers of this process."""

    # Events published lately, by (gateway, sequence): a feed caught up from the store after
    # a lost notification does not show them twice.
    RECENT_EVENTS = 65_536

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._watchers: set[Watcher] = set()
        # Why the streams of a certificate serial were closed from here (taken by admission).
        self.closing: dict[str, Closing] = {}
        self._recent: OrderedDict[tuple[str, int], None] = OrderedDict()
        # Set when the process stops: every stream opened from then on is closed with it.
        self._stopped: Closing | None = None

    def attach(self, session: Session) -> None:
        if self._stopped is not None:
            self.closing[session.cert_serial] = self._stopped
            session.cancel()
        old = self._sessions.get(session.gateway_id)
        self._sessions[session.gateway_id] = session
        if old is not None:
            self.closing[old.cert_serial] = (
                grpc.StatusCode.CANCELLED,
                "replaced by a newer stream of this gateway",
            )
            old.cancel()

    def detach(self, session: Session) -> None:
        if self._sessions.get(session.gateway_id) is session:
            del self._sessions[session.gateway_id]

    def close(self, session: Session, code: grpc.StatusCode, reason: str) -> None:
        """End ``session``'s stream with ``code``/``reason``."""
        self.closing[session.cert_serial] = (code, reason)
        session.cancel()

    def close_all(self, code: grpc.StatusCode, reason: str) -> int:
        """End every stream of this process (gateways' links and event feeds); how many."""
        streams: list[Session | Watcher] = [*self._sessions.values(), *self._watchers]
        for stream in streams:
            self.closing[stream.cert_serial] = (code, reason)
            stream.cancel()
        return len(streams)

    def stop(self, code: grpc.StatusCode, reason: str) -> int:
        """End every stream of this process, and every one opened from now on, with
        ``code``/``reason`` (the process is stopping); how many were open."""
        self._stopped = (code, reason)
        return self.close_all(code, reason)

    def take_closing(self, serial: str) -> Closing | None:
        """Why this process closed the stream of ``serial`` (once), if it did."""
        return self.closing.pop(serial, None)

    def has_watchers(self) -> bool:
        return bool(self._watchers)

    def watched(self, gateway_id: str) -> bool:
        """Whether any feed of this process may show ``gateway_id``'s events."""
        return any(
            (not w.gateway_id or w.gateway_id == gateway_id) and w.visible(gateway_id)
            for w in self._watchers
        )

    def session(self, gateway_id: str) -> Session | None:
        return self._sessions.get(gateway_id)

    def connected(self, gateway_id: str) -> bool:
        return gateway_id in self._sessions

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def drop_certificate(
        self,
        serials: set[str],
        code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED,
        reason: str = "client certificate revoked or expired",
    ) -> int:
        """Close open streams authenticated by any of ``serials`` with ``code``/``reason``;
        returns how many."""
        hit: list[Session | Watcher] = [
            s for s in self._sessions.values() if s.cert_serial in serials
        ]
        hit += [w for w in self._watchers if w.cert_serial and w.cert_serial in serials]
        for stream in hit:
            self.closing[stream.cert_serial] = (code, reason)
            stream.cancel()
        return len(hit)

    def open_serials(self) -> set[str]:
        """Serials of the certificates behind every open stream of this process."""
        serials = {s.cert_serial for s in self._sessions.values()}
        return serials | {w.cert_serial for w in self._watchers if w.cert_serial}

    def watch(self, watcher: Watcher) -> None:
        if self._stopped is not None:
            if watcher.cert_serial:
                self.closing[watcher.cert_serial] = self._stopped
            watcher.cancel()
        self._watchers.add(watcher)

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def publish(self, events: list[control_pb2.StoredEvent]) -> None:
        if not self._watchers:
            return
        fresh = []
        for event in events:
            key = (event.gateway_id, event.event.sequence)
            if key in self._recent:
                continue
            self._recent[key] = None
            fresh.append(event)
        while len(self._recent) > self.RECENT_EVENTS:
            self._recent.popitem(last=False)
        for watcher in self._watchers:
            for event in fresh:
                if watcher.gateway_id and watcher.gateway_id != event.gateway_id:
                    continue
                if not watcher.visible(event.gateway_id):
                    continue
                if watcher.queue.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        watcher.queue.get_nowait()
                    watcher.dropped += 1
                watcher.queue.put_nowait(event)
