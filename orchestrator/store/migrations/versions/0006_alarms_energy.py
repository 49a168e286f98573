"""alarms as states, energy per lamp and day, crisis playbooks (issue 12)

Revision ID: 0006_alarms_energy
Revises: 0004_enrollment_retry
Create Date: 2027-01-10 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_alarms_energy"
down_revision = "0004_enrollment_retry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alarms",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("commune", sa.String(length=128), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("acknowledged", sa.Boolean(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message", sa.String(length=1024), server_default="", nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=128), server_default="", nullable=False),
        sa.Column("comment", sa.String(length=1024), server_default="", nullable=False),
        sa.Column("shelved_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("assigned_to", sa.String(length=128), server_default="", nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=128), server_default="", nullable=False),
        sa.Column("repair_note", sa.String(length=1024), server_default="", nullable=False),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminders", sa.Integer(), server_default="0", nullable=False),
        sa.Column("root_id", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alarms_root_id", "alarms", ["root_id"])
    op.create_index("ix_alarms_updated_at", "alarms", ["updated_at"])
    op.create_index("ix_alarms_commune_closed", "alarms", ["commune", "closed_at"])
    op.create_index(
        "ux_alarms_open",
        "alarms",
        ["gateway_id", "device_id", "type"],
        unique=True,
        sqlite_where=sa.text("closed_at IS NULL"),
        postgresql_where=sa.text("closed_at IS NULL"),
    )
    op.create_table(
        "energy_days",
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("commune", sa.String(length=128), nullable=False),
        sa.Column("wh", sa.Float(), nullable=False),
        sa.Column("on_seconds", sa.Float(), nullable=False),
        sa.Column("covered_seconds", sa.Float(), nullable=False),
        sa.Column("day_wh", sa.Float(), nullable=False),
        sa.Column("night_seconds", sa.Float(), nullable=False),
        sa.Column("night_on_seconds", sa.Float(), nullable=False),
        sa.Column("peak_w", sa.Float(), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("gateway_id", "device_id", "day"),
    )
    op.create_index("ix_energy_days_commune_day", "energy_days", ["commune", "day"])
    op.create_table(
        "playbooks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name", "version"),
    )
    op.create_table(
        "playbook_runs",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("confirmed_by", sa.String(length=128), server_default="", nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=128), server_default="", nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_index("ix_playbook_runs_status", "playbook_runs", ["status"])


def downgrade() -> None:
    op.drop_table("playbook_runs")
    op.drop_table("playbooks")
    op.drop_table("energy_days")
    op.drop_table("alarms")
