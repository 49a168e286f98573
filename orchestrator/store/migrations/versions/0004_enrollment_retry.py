"""enrollment retry: the certificate an enrollment token was spent on

Revision ID: 0004_enrollment_retry
Revises: 0003_gateway_streams
Create Date: 2026-12-07 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_enrollment_retry"
down_revision = "0003_gateway_streams"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollment_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("certificate_serial", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("certificate_pem", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrollment_tokens", schema=None) as batch_op:
        batch_op.drop_column("certificate_pem")
        batch_op.drop_column("certificate_serial")
