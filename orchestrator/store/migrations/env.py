"""Alembic environment: migrations run programmatically by ``orchestrator.store.migrate``."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext

from orchestrator.store.schema import UTCDateTime, metadata


def _render_item(type_: str, obj: Any, _context: AutogenContext) -> str | Literal[False]:
    # Migrations must not import application types: render UTC instants as plain DateTime.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached from the alembic command line
    raise RuntimeError("run migrations through `ondijon orchestrator migrate`")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    render_item=_render_item,
)
with context.begin_transaction():
    context.run_migrations()
