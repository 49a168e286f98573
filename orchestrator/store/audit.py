"""The audit log table: append and read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.store.records import (
    _AUDIT_SIZES,
    Tables,
)
from orchestrator.store.schema import (
    audit_log,
)


class AuditTables(Tables):
    """The audit log table: append and read."""

    def audit(
        self,
        conn: sa.Connection,
        *,
        at: datetime,
        actor: str,
        action: str,
        target: str,
        commune: str,
        result: str,
        detail: str = "",
    ) -> None:
        """Append one entry; texts longer than their column are cut.

        PostgreSQL refuses an over-long value where SQLite keeps it: an entry about a
        refused, oversized request must still be written, on either backend.
        """
        texts = {
            "actor": actor,
            "action": action,
            "target": target,
            "commune": commune,
            "result": result,
            "detail": detail,
        }
        conn.execute(
            audit_log.insert().values(
                at=at, **{name: text[: _AUDIT_SIZES[name]] for name, text in texts.items()}
            )
        )

    def audit_entries(self, conn: sa.Connection, *, limit: int = 1000) -> list[dict[str, Any]]:
        rows = conn.execute(sa.select(audit_log).order_by(audit_log.c.id).limit(limit))
        return [dict(r._mapping) for r in rows]

    def audit_page(self, conn: sa.Connection, query: AuditQuery) -> list[dict[str, Any]]:
        """One page of entries, oldest first."""
        c = audit_log.c
        stmt = sa.select(audit_log).where(c.id > query.after_id)
        if query.since is not None:
            stmt = stmt.where(c.at >= query.since)
        if query.until is not None:
            stmt = stmt.where(c.at < query.until)
        if query.actor:
            stmt = stmt.where(c.actor == query.actor)
        if query.action.endswith("."):
            stmt = stmt.where(c.action.startswith(query.action, autoescape=True))
        elif query.action:
            stmt = stmt.where(c.action == query.action)
        if query.commune:
            stmt = stmt.where(c.commune == query.commune)
        if query.result:
            stmt = stmt.where(c.result == query.result)
        if query.gateway_id:
            stmt = stmt.where(
                sa.or_(
                    c.target == query.gateway_id,
                    c.target.startswith(query.gateway_id + "/", autoescape=True),
                )
            )
        if query.communes is not None:
            stmt = stmt.where(c.commune.in_(list(query.communes)))
        stmt = stmt.order_by(c.id).limit(max(1, min(query.limit, MAX_PAGE)))
        return [dict(row._mapping) for row in conn.execute(stmt)]


MAX_PAGE = 1000


@dataclass(frozen=True)
class AuditQuery:
    """Filters of a page of the audit log; empty fields do not filter."""

    after_id: int = 0
    limit: int = 100
    since: datetime | None = None
    until: datetime | None = None
    actor: str = ""
    action: str = ""
    commune: str = ""
    result: str = ""
    gateway_id: str = ""
    # Communes the reader may see; None: all (an admin of "*").
    communes: Sequence[str] | None = None
