"""city: asset register, group documents, where each document comes from, refusals

Revision ID: 0005_city_assets
Revises: 0004_enrollment_retry
Create Date: 2026-12-20 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_city_assets"
down_revision = "0004_enrollment_retry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assets",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("asset_id", sa.String(length=64), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("commune", sa.String(length=128), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "asset_id"),
    )
    op.create_index("ix_assets_gateway_id", "assets", ["gateway_id"])
    op.create_index("ix_assets_commune", "assets", ["commune"])
    op.create_table(
        "group_documents",
        sa.Column("assignment_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("target_key", sa.String(length=160), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("assignment_id"),
        sa.UniqueConstraint("kind", "target_key", name="uq_group_documents_target"),
    )
    op.create_table(
        "document_sources",
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.gateway_id"]),
        sa.PrimaryKeyConstraint("gateway_id", "kind"),
    )
    op.create_table(
        "document_refusals",
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.String(length=1024), nullable=False),
        sa.Column("refused_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateways.gateway_id"]),
        sa.PrimaryKeyConstraint("gateway_id", "kind"),
    )


def downgrade() -> None:
    op.drop_table("document_refusals")
    op.drop_table("document_sources")
    op.drop_table("group_documents")
    op.drop_index("ix_assets_commune", table_name="assets")
    op.drop_index("ix_assets_gateway_id", table_name="assets")
    op.drop_table("assets")
