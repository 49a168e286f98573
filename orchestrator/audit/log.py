"""The audit log: who did what, where, when, with what result; refused attempts included.

Append-only by construction: the orchestrator has code to add entries and to read them,
and none to change or delete one. (On PostgreSQL, grant the service role INSERT and SELECT
only on ``audit_log``; export regularly to write-once storage with ``ondijon audit
export``.)

Values come partly from callers (a gateway id typed by an operator, a reason): they are
escaped (:func:`foundation.escaping.escape`) and cut to the column sizes here, so an entry
can never forge a line of an export or a log, nor play tricks on a terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from foundation.escaping import escape
from orchestrator.store.runner import StoreRunner
from orchestrator.store.schema import audit_log

MAX_PAGE = 1000

# Column sizes of audit_log (orchestrator/store/schema.py).
_SIZES = {"actor": 128, "action": 64, "target": 256, "commune": 128, "result": 32, "detail": 2048}


def clean(value: str, size: int) -> str:
    """``value`` escaped (control, format and separator characters made visible), cut to
    ``size`` characters."""
    return escape(value)[:size]


async def write(
    runner: StoreRunner,
    *,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    commune: str,
    result: str,
    detail: str = "",
) -> None:
    """Append one entry (committed when this returns)."""
    values = {
        "actor": actor,
        "action": action,
        "target": target,
        "commune": commune,
        "result": result,
        "detail": detail,
    }
    cleaned = {name: clean(text, _SIZES[name]) for name, text in values.items()}
    store = runner.store
    await runner.write(lambda c: store.audit(c, at=at, **cleaned))


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


def select_entries(conn: sa.Connection, query: AuditQuery) -> list[dict[str, Any]]:
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
