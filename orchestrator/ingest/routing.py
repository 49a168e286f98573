"""Cross-replica routing: what happens on one replica reaches the gateways and feeds of all.

A gateway holds one stream, to one replica, and the store says which
(``gateway_streams``: replica, stream, last seen). On PostgreSQL the replicas tell each
other what changed with ``NOTIFY`` on :data:`CHANNEL`, PostgreSQL's own LISTEN/NOTIFY (no
home-made queue):

- **documents, commands**: a desired document changed or a command was queued for a
  gateway; the replica holding its stream sends it. The replica that took the request
  sends at once if it holds the stream.
- **stream**: a gateway opened a stream; a replica holding an older stream of it closes
  that one (a half-open stream the cabinet left behind would otherwise swallow what is
  sent to it). The store decides which stream is the newer.
- **events**: events were stored (the notice is sent inside the storing transaction, so
  it goes out if and only if they are committed); replicas with an event feed that may
  show them read them from the store and publish them.
- **revoked**: certificates were revoked; replicas close their streams opened with them.
- **answered**: a gateway answered a command; an operator waiting for that answer on
  another replica (``GetCommand`` with ``wait_ms``) is answered at once (a lost notice
  only makes the wait run to its end, then the store is read).

Notifications are a hint, never the only path. A notification can be lost (the LISTEN
connection reset, a replica restarting); so after every (re)connection of the listener,
and every ``limits.catch_up_s``, each replica sends its gateways what the store says they
are still owed: commands not yet answered, documents newer than what they hold. Each
session remembers what it sent, so nothing in flight is sent twice on one stream; a
command is resent on the next stream until the gateway answers it.

Leases: every few seconds each replica marks its streams seen in the store, and forgets
those that ended; a stream not seen for :data:`LEASE_SECONDS` (its replica died, or lost
its store) no longer counts as connected. A stream whose row another replica took over
is closed here. Leases run on the wall clock (the network is real even when the street's
clock is simulated).

On the embedded SQLite store there is one process: no notifications, delivery is local,
leases still feed the fleet view.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from orchestrator.ingest.checks import stored_event
from orchestrator.ingest.delivery import UNSETTLED, Delivery, send_documents
from orchestrator.ingest.hub import Hub, Session
from orchestrator.store import notices
from orchestrator.store.connection import Connection, interrupt
from orchestrator.store.database import CommandRecord
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import link_pb2

log = logging.getLogger("ondijon.orchestrator.routing")

CHANNEL = notices.CHANNEL
DOCUMENTS, COMMANDS, REVOKED, STREAM, EVENTS = (
    "documents",
    "commands",
    "revoked",
    "stream",
    "events",
)
MANY = "many"
ANSWERED = "answered"
# Gateway ids per notice: PostgreSQL caps a notification's payload at 8000 bytes.
MANY_PER_NOTICE = 100
RECONNECT_SECONDS = 1.0
# The listener checks its connection after this long without a notification.
LISTENER_CHECK_SECONDS = 5.0
LISTENER_CHECK_TIMEOUT = 3.0
HEARTBEAT_SECONDS = 5.0
LEASE_SECONDS = 20.0
# After a listener outage, events stored from this long before it are re-read for feeds.
EVENTS_MARGIN = timedelta(seconds=5)
MAX_CAUGHT_UP_EVENTS = 10_000


def wall_clock() -> datetime:
    return datetime.now(UTC)


class Router:
    """Delivers news to the replica that holds the gateway's stream; keeps leases."""

    def __init__(
        self,
        *,
        runner: StoreRunner,
        hub: Hub,
        delivery: Delivery,
        replica: str,
        catch_up_s: float,
        on_revoked: Callable[[set[str]], object],
        wall: Callable[[], datetime] = wall_clock,
    ) -> None:
        self.runner = runner
        self.store = runner.store
        self.hub = hub
        self.delivery = delivery
        self.replica = replica
        self.catch_up_s = catch_up_s
        # Closes this process's streams of certificates revoked on another replica
        # (orchestrator.identity.revocation, injected by the composition root).
        self.on_revoked = on_revoked
        self.wall = wall
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = asyncio.Event()
        # Operators waiting here for a gateway's answer to a command, by command id.
        self._awaiting: dict[str, set[asyncio.Event]] = {}
        self._ended: list[tuple[str, str]] = []
        self._leases_due = asyncio.Event()
        self._listener_lost_at: datetime | None = None
        self.catch_ups = 0

    @property
    def shared(self) -> bool:
        """Several replicas may share the store (PostgreSQL)."""
        return notices.shared(self.store)

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._keep_leases(), name="stream-leases"))
        if self.shared:
            self._tasks.append(asyncio.create_task(self._listen(), name="routing"))
            self._tasks.append(asyncio.create_task(self._catch_up_often(), name="catch-up"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def release_all(self) -> None:
        """Forget every stream of this replica in the store (it is stopping)."""
        with contextlib.suppress(Exception):
            await self.runner.write(self.store.release_replica, self.replica)

    # -- news from this replica ----------------------------------------------------------------

    async def documents_changed(self, gateway_id: str) -> None:
        await self._route(DOCUMENTS, gateway_id)

    async def commands_queued(self, gateway_id: str) -> None:
        await self._route(COMMANDS, gateway_id)

    def commands_queued_in(self, conn: Connection, gateway_id: str) -> list[CommandRecord]:
        """Inside the transaction that queues commands for ``gateway_id``: the other
        replicas are told on commit, and the commands the gateway has not answered are
        read in it, for :meth:`send_commands` (no read of its own after the commit)."""
        self.notice_in(conn, {"what": COMMANDS, "gateway": gateway_id})
        return self.store.commands_with_status(conn, gateway_id, UNSETTLED)

    async def send_commands(self, gateway_id: str, records: list[CommandRecord]) -> None:
        """Send ``records`` (from :meth:`commands_queued_in`, committed) on the gateway's
        stream if it is held here now. A stream attached after this look reads them itself
        at its hello, after the commit."""
        session = self.hub.session(gateway_id)
        if session is not None:
            await self.delivery.commands(session, records)

    async def many_changed(self, documents: Sequence[str], commands: Sequence[str]) -> None:
        """Tell the other replicas that documents of ``documents`` and commands of
        ``commands`` wait (a group change): a few notices for thousands of gateways, each
        replica then reads what waits for its own streams in one query. This replica has
        delivered its own already (orchestrator.groups.delivery)."""
        if not self.shared or not (documents or commands):
            return
        messages = []
        for what, ids in (("documents", list(documents)), ("commands", list(commands))):
            for i in range(0, len(ids), MANY_PER_NOTICE):
                messages.append({"what": MANY, what: ids[i : i + MANY_PER_NOTICE]})

        def notify(conn: Connection) -> None:
            for message in messages:
                self.notice_in(conn, message)

        await self.runner.write(notify)

    async def deliver_many(self, documents: Sequence[str], commands: Sequence[str]) -> None:
        """Send what waits for those of ``documents`` / ``commands`` (gateway ids) whose
        stream is held here: one read for all of them."""
        sessions = {g: s for g in {*documents, *commands} if (s := self.hub.session(g))}
        if not sessions:
            return
        store = self.store
        doc_ids = sorted(g for g in documents if g in sessions)
        cmd_ids = sorted(g for g in commands if g in sessions)

        def load(c: Connection) -> tuple[Any, Any]:
            return (
                store.documents_not_held(c, doc_ids) if doc_ids else [],
                store.commands_for(c, cmd_ids, UNSETTLED) if cmd_ids else [],
            )

        docs, records = await self.runner.read(load)
        by_gateway: dict[str, list[Any]] = {}
        for doc in docs:
            by_gateway.setdefault(doc.gateway_id, []).append(doc)
        for gateway_id, found in by_gateway.items():
            if self.hub.session(gateway_id) is sessions[gateway_id]:
                send_documents(sessions[gateway_id], found, {})
        pending: dict[str, list[Any]] = {}
        for record in records:
            pending.setdefault(record.gateway_id, []).append(record)
        for gateway_id, found in pending.items():
            if self.hub.session(gateway_id) is sessions[gateway_id]:
                await self.delivery.commands(sessions[gateway_id], found)

    async def certificates_revoked(self, serials: list[str]) -> None:
        """Tell the other replicas to close their streams opened with ``serials`` now,
        rather than at their next sweep (the revoking replica closed its own)."""
        if self.shared and serials:
            await self._notify({"what": REVOKED, "serials": serials})

    def stream_opened(self, conn: Connection, session: Session) -> None:
        """Record ``session`` as its gateway's stream, inside the hello's transaction, and
        tell the other replicas on commit."""
        self.store.open_stream(
            conn,
            session.gateway_id,
            replica=self.replica,
            stream=session.stream_id,
            now=self.wall(),
        )
        self.notice_in(
            conn, {"what": STREAM, "gateway": session.gateway_id, "stream": session.stream_id}
        )

    def stream_ended(self, session: Session) -> None:
        """``session`` ended: its row goes at the next lease round (due now)."""
        if session.registered:
            self._ended.append((session.gateway_id, session.stream_id))
            self._leases_due.set()

    def events_stored(
        self, conn: Connection, gateway_id: str, sequences: Sequence[int], at: datetime
    ) -> None:
        """Tell feeds on other replicas, on commit, that ``sequences`` were stored at ``at``."""
        if sequences:
            self.notice_in(
                conn,
                {
                    "what": EVENTS,
                    "gateway": gateway_id,
                    "first": min(sequences),
                    "last": max(sequences),
                    "at": at.isoformat(),
                },
            )

    @contextlib.contextmanager
    def awaiting_answer(self, command_id: str) -> Iterator[asyncio.Event]:
        """An event set once ``command_id`` is answered by its gateway, on this replica or
        another (enter before reading the command, so no answer slips in between)."""
        answered = asyncio.Event()
        self._awaiting.setdefault(command_id, set()).add(answered)
        try:
            yield answered
        finally:
            waiting = self._awaiting.get(command_id, set())
            waiting.discard(answered)
            if not waiting:
                self._awaiting.pop(command_id, None)

    def answered_in(self, conn: Connection, command_id: str) -> None:
        """Tell waiters on other replicas, on commit, that ``command_id`` was answered."""
        self.notice_in(conn, {"what": ANSWERED, "command": command_id})

    def answered(self, command_id: str) -> None:
        """Wake those waiting here for ``command_id`` (its answer is committed)."""
        for answered in self._awaiting.get(command_id, ()):
            answered.set()

    def notice_in(self, conn: Connection, message: dict[str, Any]) -> None:
        """Queue a notification in ``conn``'s transaction (sent if and only if it commits)."""
        if self.shared:
            notices.notify(conn, {**message, "origin": self.replica})

    async def _route(self, what: str, gateway_id: str) -> None:
        if self.hub.session(gateway_id) is not None:
            await self.deliver(what, gateway_id)
        # Even when the stream is here: a newer one elsewhere may not have closed it yet.
        if self.shared:
            await self._notify({"what": what, "gateway": gateway_id})

    async def _notify(self, message: dict[str, Any]) -> None:
        await self.runner.write(self.notice_in, message)

    async def deliver(self, what: str, gateway_id: str) -> None:
        """Send what waits for ``gateway_id`` if its stream is held here."""
        session = self.hub.session(gateway_id)
        if session is None:
            return
        store = self.store
        if what == DOCUMENTS:
            held = await self.runner.read(store.held_for, gateway_id)
            documents = await self.runner.read(store.documents_for, gateway_id)
            send_documents(session, documents, {h.kind: h for h in held})
        elif what == COMMANDS:
            records = await self.runner.read(store.commands_with_status, gateway_id, UNSETTLED)
            await self.delivery.commands(session, records)

    # -- catching up ---------------------------------------------------------------------------

    async def catch_up(self) -> int:
        """Send this replica's gateways what they are owed (commands not answered, documents
        not held) and not already sent on their stream; returns how many messages."""
        sessions = {s.gateway_id: s for s in self.hub.sessions() if s.registered}
        if not sessions:
            return 0
        store = self.store
        ids = sorted(sessions)

        def load(c: Connection) -> tuple[Any, Any]:
            return store.commands_for(c, ids, UNSETTLED), store.documents_not_held(c, ids)

        commands, documents = await self.runner.read(load)
        sent = 0
        by_gateway: dict[str, list[Any]] = {}
        for doc in documents:
            by_gateway.setdefault(doc.gateway_id, []).append(doc)
        for gateway_id, docs in by_gateway.items():
            session = sessions[gateway_id]
            if self.hub.session(gateway_id) is session:
                sent += send_documents(session, docs, {})
        pending: dict[str, list[Any]] = {}
        for record in commands:
            pending.setdefault(record.gateway_id, []).append(record)
        for gateway_id, records in pending.items():
            session = sessions[gateway_id]
            if self.hub.session(gateway_id) is session:
                sent += await self.delivery.commands(session, records)
        self.catch_ups += 1
        if sent:
            log.info("caught up: %d message(s) a notification did not bring", sent)
        return sent

    async def _catch_up_often(self) -> None:
        while True:
            await asyncio.sleep(self.catch_up_s)
            if not self.runner.available:
                continue
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("catch-up failed (%s); trying again next round", exc)

    async def _catch_up_events(self, since: datetime) -> None:
        """Publish to this replica's feeds the events stored since ``since`` (the listener
        was away); those already published are skipped by the hub."""
        if not self.hub.has_watchers():
            return
        records = await self.runner.read(
            self.store.events_received_since, since, limit=MAX_CAUGHT_UP_EVENTS
        )
        self.hub.publish(
            [
                stored_event(r.gateway_id, link_pb2.Event.FromString(r.payload), r.received_at)
                for r in records
            ]
        )

    # -- leases ----------------------------------------------------------------------------------

    async def renew_leases(self) -> None:
        """One lease round: forget ended streams, mark live ones seen, close those another
        replica took over."""
        ended, self._ended = self._ended, []
        live = [s for s in self.hub.sessions() if s.registered]
        store, replica, now = self.store, self.replica, self.wall()

        def write(conn: Connection) -> set[str]:
            for gateway_id, stream in ended:
                store.close_stream(conn, gateway_id, stream)
            return store.refresh_streams(conn, replica, [s.stream_id for s in live], now=now)

        try:
            kept = await self.runner.write(write)
        except BaseException:
            self._ended = ended + self._ended
            raise
        for session in live:
            current = self.hub.session(session.gateway_id) is session
            if current and session.stream_id not in kept:
                self.hub.close(session, *_REPLACED)

    async def _keep_leases(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
            # cancellation that arrives as the event is set, and the loop would never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT_SECONDS):
                    await self._leases_due.wait()
            self._leases_due.clear()
            if not self.runner.available:
                continue
            try:
                await self.renew_leases()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stream leases not renewed (%s); retrying", exc)

    def live_since(self) -> datetime:
        """Streams seen since this instant count as connected."""
        return self.wall() - timedelta(seconds=LEASE_SECONDS)

    # -- listening -------------------------------------------------------------------------------

    async def _listen(self) -> None:
        while True:
            try:
                async with notices.listening(self.store) as conn:
                    await self._listening_again()
                    while True:
                        async for notice in conn.notifies(timeout=LISTENER_CHECK_SECONDS):
                            await self._on_notice(notice.payload)
                        await _check_alive(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost database connection: listen again
                if self.listening.is_set():
                    self._listener_lost_at = self.wall()
                self.listening.clear()
                log.warning("routing listener lost (%s); reconnecting", exc)
                await asyncio.sleep(RECONNECT_SECONDS)

    async def _listening_again(self) -> None:
        """Listening (again): catch up on what notifications may have missed meanwhile."""
        self.listening.set()
        lost_at, self._listener_lost_at = self._listener_lost_at, None
        started = time.monotonic()
        try:
            await self.catch_up()
            if lost_at is not None:
                await self._catch_up_events(lost_at - EVENTS_MARGIN)
        except Exception as exc:
            log.warning("catch-up after listening again failed (%s)", exc)
            return
        if lost_at is not None:
            log.info("listening again; caught up in %.0f ms", (time.monotonic() - started) * 1000)

    async def _on_notice(self, payload: str) -> None:
        try:
            message: Any = json.loads(payload)
            what = str(message["what"])
            if message.get("origin") == self.replica and what != REVOKED:
                return  # done here already
            if what == REVOKED:
                self.on_revoked({str(s) for s in message["serials"]})
                return
            if what == ANSWERED:
                self.answered(str(message["command"]))
                return
            if what == MANY:
                await self.deliver_many(
                    [str(g) for g in message.get("documents", ())],
                    [str(g) for g in message.get("commands", ())],
                )
                return
            gateway_id = str(message["gateway"])
            if what == STREAM:
                await self._newer_stream(gateway_id, str(message["stream"]))
            elif what == EVENTS:
                await self._events(
                    gateway_id,
                    int(message["first"]),
                    int(message["last"]),
                    datetime.fromisoformat(str(message["at"])),
                )
            else:
                await self.deliver(what, gateway_id)
        except (ValueError, KeyError, TypeError):
            log.warning("routing: ignored a malformed notice")

    async def _newer_stream(self, gateway_id: str, stream: str) -> None:
        session = self.hub.session(gateway_id)
        if session is None or not session.registered or session.stream_id == stream:
            return
        # The store says which stream is the gateway's (two hellos may cross).
        current = await self.runner.read(self.store.stream_of, gateway_id)
        if current != session.stream_id and self.hub.session(gateway_id) is session:
            self.hub.close(session, *_REPLACED)

    async def _events(self, gateway_id: str, first: int, last: int, at: datetime) -> None:
        if not self.hub.watched(gateway_id):
            return
        records = await self.runner.read(
            self.store.list_events, gateway_id, after_sequence=first - 1, limit=last - first + 1
        )
        self.hub.publish(
            [
                stored_event(gateway_id, link_pb2.Event.FromString(r.payload), r.received_at)
                for r in records
                if r.received_at == at and r.copy_of is None  # a copy is not news
            ]
        )


_REPLACED = (grpc.StatusCode.CANCELLED, "replaced by a newer stream of this gateway")


async def _check_alive(conn: Any) -> None:
    """Raise unless the listening connection answers: a connection whose peer holds the
    bytes would otherwise wait for notifications forever."""
    probe = asyncio.ensure_future(conn.execute("SELECT 1"))
    done, _ = await asyncio.wait({probe}, timeout=LISTENER_CHECK_TIMEOUT)
    if probe in done:
        probe.result()
        return
    interrupt(conn)
    probe.cancel()
    await asyncio.wait({probe}, timeout=1.0)  # never swallows this task's own cancellation
    if probe.done() and not probe.cancelled():
        probe.exception()  # retrieved: it is the connection we are giving up on
    raise ConnectionError(f"listener connection silent for {LISTENER_CHECK_TIMEOUT:g} s")


def new_replica_id() -> str:
    """A name for this process among the replicas (new at every start)."""
    return f"{socket.gethostname()[:40]}-{uuid.uuid4().hex[:8]}"
