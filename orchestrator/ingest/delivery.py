"""Delivery: what a gateway is owed (desired documents it does not hold, commands it has
not answered), sent on its stream at most once per stream.

Used by the link at each hello and by routing when news arrives or a catch-up runs
(:mod:`orchestrator.ingest.routing`).
"""

from __future__ import annotations

from collections.abc import Mapping

from foundation.clock import Clock
from orchestrator.ingest.checks import document_message
from orchestrator.ingest.hub import Session
from orchestrator.store.database import CommandRecord, DocumentRecord, HeldRecord
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import link_pb2

# Commands the gateway has not answered: sent (again) on each new stream until it does.
# DELIVERED is what an older orchestrator wrote when it queued a command on a stream.
UNSETTLED = (link_pb2.COMMAND_STATUS_PENDING, link_pb2.COMMAND_STATUS_DELIVERED)


def send_documents(
    session: Session,
    documents: list[DocumentRecord],
    held: Mapping[int, link_pb2.HeldDocument | HeldRecord],
) -> int:
    """Send those of ``documents`` the gateway neither holds nor was sent on this stream;
    returns how many."""
    # The schedule names plans: send it last, so a gateway never selects a plan it lacks.
    ordered = sorted(documents, key=lambda d: d.kind == link_pb2.DOCUMENT_KIND_SCHEDULE)
    sent = 0
    for doc in ordered:
        have = held.get(doc.kind)
        if have is not None and have.version == doc.version and have.digest == doc.digest:
            continue
        if session.sent_documents.get(doc.kind) == (doc.version, doc.digest):
            continue  # in flight on this stream: its acknowledgement is on its way
        session.send(link_pb2.ConnectResponse(document=document_message(doc)))
        session.sent_documents[doc.kind] = (doc.version, doc.digest)
        sent += 1
    return sent


class Delivery:
    """Sends gateways what they are owed, reading the store and stamping with the clock."""

    def __init__(self, runner: StoreRunner, clock: Clock) -> None:
        self.runner = runner
        self.store = runner.store
        self.clock = clock

    async def newer_documents(
        self, session: Session, held: Mapping[int, link_pb2.HeldDocument | HeldRecord]
    ) -> None:
        """Send each desired document the gateway does not already hold."""
        documents = await self.runner.read(self.store.documents_for, session.gateway_id)
        send_documents(session, documents, held)

    async def pending_commands(self, session: Session) -> None:
        """Send the commands the gateway has not answered yet; expire the stale ones."""
        records = await self.runner.read(
            self.store.commands_with_status, session.gateway_id, UNSETTLED
        )
        await self.commands(session, records)

    async def commands(self, session: Session, records: list[CommandRecord]) -> int:
        """Send those of ``records`` (unanswered commands of the session's gateway) not
        already sent on this stream; those past their expiry are marked EXPIRED instead.
        The status stays PENDING until the gateway answers. Returns how many were sent."""
        now = self.clock.now()
        sent = 0
        for record in records:
            if record.command_id in session.sent_commands:
                continue
            if record.expires_at <= now:
                await self.runner.write(
                    self.store.set_command_status,
                    command_id=record.command_id,
                    status=link_pb2.COMMAND_STATUS_EXPIRED,
                    detail="expired before the gateway acknowledged it",
                    now=now,
                    only_from=UNSETTLED,
                )
                continue
            session.sent_commands.add(record.command_id)
            session.send(
                link_pb2.ConnectResponse(command=link_pb2.Command.FromString(record.payload))
            )
            sent += 1
        return sent
