"""merge: the city's register (0005) and alarms and energy (0006), written in parallel

Revision ID: 0007_merge_city_alarms
Revises: 0005_city_assets, 0006_alarms_energy
Create Date: 2026-12-20 12:00:00.000000
"""

from __future__ import annotations

revision = "0007_merge_city_alarms"
down_revision = ("0005_city_assets", "0006_alarms_energy")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to do: both branches touch different tables."""


def downgrade() -> None:
    """Nothing to undo."""
