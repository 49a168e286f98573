"""Schema migrations (Alembic), run at start-up and by ``ondijon orchestrator migrate``."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa

# Alembic announces each of its plugins at INFO when imported: seven lines of noise before
# every CLI error message and every start-up. Migrations themselves still log.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


# Any constant shared by every replica: the key of the PostgreSQL advisory lock below.
MIGRATION_LOCK = 0x0D1_0001


def upgrade(engine: sa.Engine) -> None:
    """Bring the database to the newest schema (idempotent).

    Replicas starting together on PostgreSQL take turns: the first migrates, the others
    wait for its commit and find the schema current (without the lock, they raced to
    create the same tables and all but one failed to start).

    Every head is brought up (``heads``): work done in parallel may add migrations that
    branch from the same parent, and each branch applies on its own.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
            )
        command.upgrade(alembic_config(connection), "heads")


def revision(engine: sa.Engine, message: str) -> None:
    """Autogenerate a new migration from the difference between schema.py and ``engine``."""
    with engine.begin() as connection:
        command.revision(alembic_config(connection), message=message, autogenerate=True)
