"""Alembic environment: migrations run programmatically by ``orchestrator.store.migrate``."""

from __future__ import annotations

from alembic import context

from orchestrator.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached from the alembic command line
    raise RuntimeError("run migrations through `ondijon orchestrator migrate`")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
