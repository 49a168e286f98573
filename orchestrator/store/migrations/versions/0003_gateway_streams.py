"""gateway streams: which replica holds each gateway's link, for the fleet view of every replica

Revision ID: 0003_gateway_streams
Revises: 0002
Create Date: 2026-11-30 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_gateway_streams"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_streams",
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("replica", sa.String(length=64), nullable=False),
        sa.Column("stream", sa.String(length=32), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.gateway_id"]),
        sa.PrimaryKeyConstraint("gateway_id"),
    )


def downgrade() -> None:
    op.drop_table("gateway_streams")
