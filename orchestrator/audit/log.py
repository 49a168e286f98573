"""The audit log: who did what, where, when, with what result; refused attempts included.

Append-only by construction: the orchestrator has code to add entries and to read them,
and none to change or delete one. (On PostgreSQL, grant the service role INSERT and SELECT
only on ``audit_log``; export regularly to write-once storage with ``ondijon audit
export``.)

Values come partly from callers (a gateway id typed by an operator, a reason): they are
escaped (:func:`foundation.escaping.escape`) and cut to the column sizes here, so an entry
can never forge a line of an export or a log, nor play tricks on a terminal. Every service
writes through one :class:`Auditor`, built once by the composition root.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from foundation.clock import Clock
from foundation.escaping import escape
from orchestrator.store.audit import MAX_PAGE, AuditQuery
from orchestrator.store.connection import Connection
from orchestrator.store.runner import StoreRunner

__all__ = ["MAX_PAGE", "AuditQuery", "Auditor", "Entry", "clean"]

# Column sizes of audit_log (orchestrator/store/schema.py).
_SIZES = {"actor": 128, "action": 64, "target": 256, "commune": 128, "result": 32, "detail": 2048}


def clean(value: str, size: int) -> str:
    """``value`` escaped (control, format and separator characters made visible), cut to
    ``size`` characters."""
    return escape(value)[:size]


@dataclass(frozen=True)
class Entry:
    """One entry of the log, before it is cleaned and stamped (fields: :meth:`Auditor.record`)."""

    actor: str
    action: str
    target: str
    result: str
    commune: str = ""
    detail: str = ""


class Auditor:
    """Appends entries stamped with the orchestrator's clock, cleaned; reads pages."""

    def __init__(self, runner: StoreRunner, clock: Clock) -> None:
        self.runner = runner
        self.clock = clock

    async def record(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        result: str,
        commune: str = "",
        detail: str = "",
    ) -> None:
        """Append one entry (committed when this returns).

        Args:
            actor: the caller's identity URI (``str(peer.identity)``).
            action: what was attempted, dotted (``command.send``, ``gateway.revoke``).
            target: what it was done to (a gateway id, ``<gateway>/<command id>``).
            result: ``ok``, ``refused`` or ``error``.
            commune: where, for scoped reading of the log.
            detail: why it was refused, or what was done; never a secret.
        """
        await self.runner.write(self.write, Entry(actor, action, target, result, commune, detail))

    def write(self, conn: Connection, entry: Entry) -> None:
        """Append ``entry`` in ``conn``'s transaction: it is committed with the change it
        records, or not at all, in one commit."""
        values = dataclasses.asdict(entry)
        cleaned = {name: clean(text, _SIZES[name]) for name, text in values.items()}
        self.runner.store.audit(conn, at=self.clock.now(), **cleaned)

    async def page(self, query: AuditQuery) -> list[dict[str, Any]]:
        """One page of entries, oldest first."""
        return await self.runner.read(self.runner.store.audit_page, query)
