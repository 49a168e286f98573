"""copies of events an agent recorded again after its storage went back (issue 10)

Revision ID: 0011_event_copies
Revises: 0010_energy_hours
Create Date: 2027-02-01 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_event_copies"
down_revision = "0010_energy_hours"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("first_sequence", sa.BigInteger(), nullable=True))
    op.add_column("events", sa.Column("copy_of", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_events_first_sequence",
        "events",
        ["gateway_id", "first_sequence"],
        sqlite_where=sa.text("first_sequence IS NOT NULL"),
        postgresql_where=sa.text("first_sequence IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_events_first_sequence", table_name="events")
    op.drop_column("events", "copy_of")
    op.drop_column("events", "first_sequence")
