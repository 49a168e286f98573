"""energy per lamp-day: the hourly profile in columns, summed by reports in SQL (issue 18)

Revision ID: 0010_energy_hours
Revises: 0009_public_reports
Create Date: 2027-01-25 09:00:00.000000
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0010_energy_hours"
down_revision = "0009_public_reports"
branch_labels = None
depends_on = None

HOURS = [f"h{h:02d}" for h in range(24)]


def upgrade() -> None:
    for name in HOURS:
        op.add_column(
            "energy_days", sa.Column(name, sa.Float(), server_default="0", nullable=False)
        )
    # Rows written before: their hours from the JSON profile.
    days = sa.table(
        "energy_days",
        sa.column("gateway_id"),
        sa.column("device_id"),
        sa.column("day"),
        sa.column("profile"),
        *(sa.column(name) for name in HOURS),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(days.c.gateway_id, days.c.device_id, days.c.day, days.c.profile))
    for r in rows.fetchall():
        profile = json.loads(r.profile) if isinstance(r.profile, str) else r.profile
        conn.execute(
            days.update()
            .where(
                days.c.gateway_id == r.gateway_id,
                days.c.device_id == r.device_id,
                days.c.day == r.day,
            )
            .values({name: float(v) for name, v in zip(HOURS, profile, strict=True)})
        )


def downgrade() -> None:
    for name in reversed(HOURS):
        op.drop_column("energy_days", name)
