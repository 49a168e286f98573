"""Deliver a group change: thousands of gateways for a few store statements.

The new documents (or commands) were just written in one transaction and are in memory:
gateways whose stream this replica holds get them at once, with no read at all; the other
replicas get a few notices naming the gateways (``Router.many_changed``) and read what
waits for their own streams in one query. A lost notice is made up by the catch-up round,
and a gateway offline now gets everything at its hello, as for any document.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.ingest.delivery import Delivery, send_documents
from orchestrator.ingest.hub import Hub
from orchestrator.ingest.routing import Router
from orchestrator.store.database import CommandRecord, DocumentRecord
from orchestrator.store.groups import Written


class GroupDelivery:
    """Sends a group change to the streams held here; tells the other replicas."""

    def __init__(self, *, hub: Hub, router: Router, delivery: Delivery) -> None:
        self.hub = hub
        self.router = router
        self.delivery = delivery

    async def documents(self, written: Sequence[Written]) -> int:
        """Send ``written`` to the gateways connected here, tell the other replicas;
        returns how many were sent from here."""
        sent = 0
        for w in written:
            session = self.hub.session(w.gateway_id)
            if session is None or not session.registered:
                continue
            record = DocumentRecord(
                w.gateway_id, w.kind, w.version, w.digest, w.payload, w.issued_at, w.issued_by
            )
            sent += send_documents(session, [record], {})
        await self.router.many_changed(sorted({w.gateway_id for w in written}), [])
        return sent

    async def commands(self, records: Sequence[CommandRecord]) -> int:
        sent = 0
        for record in records:
            session = self.hub.session(record.gateway_id)
            if session is not None and session.registered:
                sent += await self.delivery.commands(session, [record])
        await self.router.many_changed([], sorted({r.gateway_id for r in records}))
        return sent
