"""citizens' reports (issue 15)

Revision ID: 0009_public_reports
Revises: 0008_console_sign_in
Create Date: 2027-01-20 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_public_reports"
down_revision = "0008_console_sign_in"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "public_reports",
        sa.Column("reference", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=32), server_default="", nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.Column("commune", sa.String(length=128), nullable=False),
        sa.Column("asset_id", sa.String(length=64), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("distance_m", sa.Float(), nullable=False),
        sa.Column("alarm_id", sa.BigInteger(), nullable=True),
        sa.Column("challenge_sha256", sa.String(length=64), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("reference"),
        sa.UniqueConstraint("challenge_sha256"),
    )
    op.create_index("ix_public_reports_reported_at", "public_reports", ["reported_at"])


def downgrade() -> None:
    op.drop_index("ix_public_reports_reported_at", table_name="public_reports")
    op.drop_table("public_reports")
