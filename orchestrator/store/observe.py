"""Counts the metrics endpoint reads from the store (orchestrator.observe), one query each."""

from __future__ import annotations

import sqlalchemy as sa

from orchestrator.store.schema import (
    campaign_gateways,
    campaigns,
    desired_documents,
    held_documents,
)

# Campaigns whose progress is worth a time series (finished ones stay in `campaign show`).
LIVE_CAMPAIGNS = ("running", "paused", "halted")


def documents_not_converged(conn: sa.Connection) -> dict[int, int]:
    """Per document kind, how many desired documents their gateway does not hold as issued
    (another version, another digest, or none)."""
    d, h = desired_documents.c, held_documents.c
    query = (
        sa.select(d.kind, sa.func.count())
        .select_from(
            desired_documents.outerjoin(
                held_documents, sa.and_(h.gateway_id == d.gateway_id, h.kind == d.kind)
            )
        )
        .where(sa.or_(h.version.is_(None), h.version != d.version, h.digest != d.digest))
        .group_by(d.kind)
    )
    return {int(kind): int(count) for kind, count in conn.execute(query)}


def campaign_progress(conn: sa.Connection) -> list[tuple[str, str, int, int, int]]:
    """(campaign, status, current wave, stage, gateways) of every live campaign; stage 0
    counts gateways that reported nothing yet (offered or not)."""
    c, g = campaigns.c, campaign_gateways.c
    query = (
        sa.select(c.campaign_id, c.status, c.wave, g.stage, sa.func.count(g.gateway_id))
        .select_from(campaigns.outerjoin(campaign_gateways, g.campaign_id == c.campaign_id))
        .where(c.status.in_(LIVE_CAMPAIGNS))
        .group_by(c.campaign_id, c.status, c.wave, g.stage)
        .order_by(c.campaign_id, g.stage)
    )
    return [
        (str(cid), str(status), int(wave), int(stage or 0), int(count))
        for cid, status, wave, stage, count in conn.execute(query)
    ]
