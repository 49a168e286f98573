"""Store operations for firmware: releases (manifest, parts, chunks) and campaigns.

Like :class:`orchestrator.store.database.Store`, every method is synchronous, takes the
caller's connection (so it joins the caller's transaction) and hides the SQL. A part's bytes
are kept in chunks of :data:`CHUNK_BYTES` rows, so any replica serves any offset of any part
from the shared database.

Campaign rows are written with optimistic concurrency: :meth:`FirmwareStore.save_campaign`
only succeeds if the row still has the revision it was read at, so two replicas deciding
the same campaign at once cannot both win. Gateway reports are merged row by row
(:meth:`FirmwareStore.record_report`): an older report never replaces a newer one, and an
outcome is final by the campaign core's rule (:func:`domain.firmware.campaign.replaces`).
Campaign rows are read with the version the gateway's latest hello reported (from the
fleet registry), which decides whether a COMMITTED counts.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from domain.firmware.campaign import Note, Outcome, replaces
from orchestrator.store.database import Conflict, NotFound
from orchestrator.store.schema import (
    campaign_gateways,
    campaigns,
    events,
    gateways,
    release_chunks,
    release_parts,
    releases,
)
from protos.ondijon.v1 import firmware_pb2

CHUNK_BYTES = 256 * 1024
FINAL_STAGES = frozenset(
    {
        firmware_pb2.FIRMWARE_STAGE_COMMITTED,
        firmware_pb2.FIRMWARE_STAGE_ROLLED_BACK,
        firmware_pb2.FIRMWARE_STAGE_REFUSED,
        firmware_pb2.FIRMWARE_STAGE_FAILED,
        firmware_pb2.FIRMWARE_STAGE_CANCELLED,
    }
)


@dataclass(frozen=True)
class PartRecord:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class SignatureRecord:
    key_id: str
    signature: bytes


@dataclass(frozen=True)
class ReleaseRecord:
    version: str
    manifest: bytes
    signatures: tuple[SignatureRecord, ...]
    total_size: int
    min_orchestrator_version: str
    created_at: datetime
    expires_at: datetime
    uploaded_at: datetime
    uploaded_by: str
    parts: tuple[PartRecord, ...]


@dataclass(frozen=True)
class CampaignRecord:
    campaign_id: str
    version: str
    backend: str
    status: str
    wave: int
    plan: Mapping[str, Any]
    options: Mapping[str, Any]
    acknowledged: tuple[str, ...]
    history: tuple[Note, ...]
    reasons: tuple[Note, ...]
    revision: int
    created_at: datetime
    created_by: str
    updated_at: datetime


@dataclass(frozen=True)
class CampaignGatewayRecord:
    campaign_id: str
    gateway_id: str
    wave: int
    position: int
    commune: str
    offered_at: datetime | None
    stage: int
    detail: str
    bytes_done: int
    running_version: str
    reported_at: datetime | None
    # What the gateway's latest hello said it runs ("" before any hello).
    hello_version: str = ""


@dataclass(frozen=True)
class Report:
    """What a gateway said about a campaign (over the link, in an event, or from balena)."""

    stage: int
    detail: str
    at: datetime
    bytes_done: int = 0
    running_version: str = ""


class FirmwareStore:
    """Typed operations on the firmware tables."""

    # -- releases ---------------------------------------------------------------------------

    def add_release(
        self,
        conn: sa.Connection,
        release: ReleaseRecord,
        data: Mapping[str, Iterable[bytes]],
    ) -> None:
        """Store a release and its parts' bytes (``data``: chunks of each part, in order).

        Raises:
            Conflict: the version is already stored (releases are immutable).
        """
        exists = conn.execute(
            sa.select(releases.c.version).where(releases.c.version == release.version)
        ).first()
        if exists:
            raise Conflict("version", f"release {release.version} is already stored")
        conn.execute(
            releases.insert().values(
                version=release.version,
                manifest=release.manifest,
                signatures=[
                    {"key_id": s.key_id, "signature": base64.b64encode(s.signature).decode()}
                    for s in release.signatures
                ],
                total_size=release.total_size,
                min_orchestrator_version=release.min_orchestrator_version,
                created_at=release.created_at,
                expires_at=release.expires_at,
                uploaded_at=release.uploaded_at,
                uploaded_by=release.uploaded_by,
            )
        )
        for part in release.parts:
            conn.execute(
                release_parts.insert().values(
                    version=release.version, name=part.name, size=part.size, sha256=part.sha256
                )
            )
            rows = [
                {"version": release.version, "part": part.name, "chunk": index, "data": chunk}
                for index, chunk in enumerate(data[part.name])
            ]
            if rows:
                conn.execute(release_chunks.insert(), rows)

    def get_release(self, conn: sa.Connection, version: str) -> ReleaseRecord:
        """The release ``version``.

        Raises:
            NotFound: no such release.
        """
        row = conn.execute(sa.select(releases).where(releases.c.version == version)).first()
        if row is None:
            raise NotFound("version", f"no release {version!r}")
        return _release(row, self._parts(conn, [version]).get(version, ()))

    def list_releases(self, conn: sa.Connection) -> list[ReleaseRecord]:
        rows = list(conn.execute(sa.select(releases).order_by(releases.c.uploaded_at)))
        parts = self._parts(conn, [r.version for r in rows])
        return [_release(r, parts.get(r.version, ())) for r in rows]

    def read_chunks(
        self, conn: sa.Connection, version: str, part: str, first: int, last: int
    ) -> list[tuple[int, bytes]]:
        """Chunks ``first`` to ``last`` (inclusive) of a part, in order."""
        rows = conn.execute(
            sa.select(release_chunks.c.chunk, release_chunks.c.data)
            .where(release_chunks.c.version == version)
            .where(release_chunks.c.part == part)
            .where(release_chunks.c.chunk.between(first, last))
            .order_by(release_chunks.c.chunk)
        )
        return [(int(r.chunk), bytes(r.data)) for r in rows]

    def _parts(
        self, conn: sa.Connection, versions: Sequence[str]
    ) -> dict[str, tuple[PartRecord, ...]]:
        found: dict[str, list[PartRecord]] = {}
        if not versions:
            return {}
        rows = conn.execute(
            sa.select(release_parts)
            .where(release_parts.c.version.in_(versions))
            .order_by(release_parts.c.version, release_parts.c.name)
        )
        for r in rows:
            found.setdefault(r.version, []).append(PartRecord(r.name, int(r.size), r.sha256))
        return {k: tuple(v) for k, v in found.items()}

    # -- campaigns --------------------------------------------------------------------------

    def add_campaign(
        self,
        conn: sa.Connection,
        campaign: CampaignRecord,
        gateways: Sequence[CampaignGatewayRecord],
    ) -> None:
        """Store a new campaign and its target gateways.

        Raises:
            Conflict: the campaign id is taken.
        """
        if self.find_campaign(conn, campaign.campaign_id) is not None:
            raise Conflict("campaign_id", f"{campaign.campaign_id!r} already exists")
        conn.execute(campaigns.insert().values(**_campaign_values(campaign)))
        conn.execute(
            campaign_gateways.insert(),
            [
                {
                    "campaign_id": campaign.campaign_id,
                    "gateway_id": g.gateway_id,
                    "wave": g.wave,
                    "position": g.position,
                    "commune": g.commune,
                    "offered_at": g.offered_at,
                    "stage": g.stage,
                    "detail": g.detail,
                    "bytes_done": g.bytes_done,
                    "running_version": g.running_version,
                    "reported_at": g.reported_at,
                }
                for g in gateways
            ],
        )

    def find_campaign(self, conn: sa.Connection, campaign_id: str) -> CampaignRecord | None:
        row = conn.execute(
            sa.select(campaigns).where(campaigns.c.campaign_id == campaign_id)
        ).first()
        return None if row is None else _campaign(row)

    def get_campaign(self, conn: sa.Connection, campaign_id: str) -> CampaignRecord:
        """The campaign ``campaign_id``.

        Raises:
            NotFound: no such campaign.
        """
        found = self.find_campaign(conn, campaign_id)
        if found is None:
            raise NotFound("campaign_id", f"no campaign {campaign_id!r}")
        return found

    def list_campaigns(
        self, conn: sa.Connection, statuses: Sequence[str] | None = None
    ) -> list[CampaignRecord]:
        query = sa.select(campaigns).order_by(campaigns.c.created_at, campaigns.c.campaign_id)
        if statuses is not None:
            query = query.where(campaigns.c.status.in_(list(statuses)))
        return [_campaign(r) for r in conn.execute(query)]

    def campaign_with_gateways(
        self, conn: sa.Connection, campaign_id: str
    ) -> tuple[CampaignRecord, list[CampaignGatewayRecord]]:
        """The campaign ``campaign_id`` and its rows, read together (:class:`NotFound`)."""
        return self.get_campaign(conn, campaign_id), self.campaign_gateways(conn, campaign_id)

    def campaign_gateways(
        self, conn: sa.Connection, campaign_id: str
    ) -> list[CampaignGatewayRecord]:
        """The campaign's rows, each with its gateway's latest hello version."""
        rows = conn.execute(
            sa.select(campaign_gateways, gateways.c.firmware_version.label("hello_version"))
            .select_from(
                campaign_gateways.outerjoin(
                    gateways, gateways.c.gateway_id == campaign_gateways.c.gateway_id
                )
            )
            .where(campaign_gateways.c.campaign_id == campaign_id)
            .order_by(campaign_gateways.c.wave, campaign_gateways.c.position)
        )
        return [_gateway(r) for r in rows]

    def awaiting_cancel(
        self, conn: sa.Connection, gateway_id: str | None = None
    ) -> list[tuple[str, str, str]]:
        """(campaign, version, gateway) of offers in aborted campaigns that have reached no
        outcome yet: their gateways are to be told to cancel."""
        query = (
            sa.select(
                campaign_gateways.c.campaign_id, campaigns.c.version, campaign_gateways.c.gateway_id
            )
            .join(campaigns, campaigns.c.campaign_id == campaign_gateways.c.campaign_id)
            .where(campaigns.c.status == "aborted")
            .where(campaign_gateways.c.offered_at.is_not(None))
            .where(campaign_gateways.c.stage.not_in(list(FINAL_STAGES)))
        )
        if gateway_id is not None:
            query = query.where(campaign_gateways.c.gateway_id == gateway_id)
        return [(r.campaign_id, r.version, r.gateway_id) for r in conn.execute(query)]

    def gateway_work(
        self, conn: sa.Connection, gateway_id: str, statuses: Sequence[str]
    ) -> tuple[list[tuple[CampaignRecord, CampaignGatewayRecord]], list[tuple[str, str, str]]]:
        """What a connecting gateway is owed, read together: its campaigns in one of
        ``statuses`` (:meth:`campaigns_of_gateway`) and the cancels it awaits."""
        return (
            self.campaigns_of_gateway(conn, gateway_id, statuses),
            self.awaiting_cancel(conn, gateway_id),
        )

    def campaigns_of_gateway(
        self, conn: sa.Connection, gateway_id: str, statuses: Sequence[str]
    ) -> list[tuple[CampaignRecord, CampaignGatewayRecord]]:
        """Campaigns in one of ``statuses`` that target ``gateway_id``, with its row."""
        rows = conn.execute(
            sa.select(campaign_gateways)
            .join(campaigns, campaigns.c.campaign_id == campaign_gateways.c.campaign_id)
            .where(campaign_gateways.c.gateway_id == gateway_id)
            .where(campaigns.c.status.in_(list(statuses)))
        )
        found = []
        for row in rows:
            gateway = _gateway(row)
            found.append((self.get_campaign(conn, gateway.campaign_id), gateway))
        return found

    def campaigns_holding(
        self, conn: sa.Connection, gateway_ids: Sequence[str], statuses: Sequence[str]
    ) -> dict[str, str]:
        """Gateway id to the campaign (in one of ``statuses``) that targets it."""
        found: dict[str, str] = {}
        ids = list(gateway_ids)
        for start in range(0, len(ids), 500):
            rows = conn.execute(
                sa.select(campaign_gateways.c.gateway_id, campaign_gateways.c.campaign_id)
                .join(campaigns, campaigns.c.campaign_id == campaign_gateways.c.campaign_id)
                .where(campaign_gateways.c.gateway_id.in_(ids[start : start + 500]))
                .where(campaigns.c.status.in_(list(statuses)))
            )
            found.update({r.gateway_id: r.campaign_id for r in rows})
        return found

    def save_campaign(
        self,
        conn: sa.Connection,
        campaign: CampaignRecord,
        *,
        expected_revision: int,
        offered: Mapping[str, datetime],
    ) -> bool:
        """Write the campaign's new state and mark ``offered`` gateways as offered.

        Returns:
            ``False`` (and nothing written) if the row changed since it was read.
        """
        values = _campaign_values(campaign)
        del values["campaign_id"]
        values["revision"] = expected_revision + 1
        done = conn.execute(
            campaigns.update()
            .where(campaigns.c.campaign_id == campaign.campaign_id)
            .where(campaigns.c.revision == expected_revision)
            .values(**values)
        )
        if done.rowcount != 1:
            return False
        for gateway_id, at in offered.items():
            conn.execute(
                campaign_gateways.update()
                .where(campaign_gateways.c.campaign_id == campaign.campaign_id)
                .where(campaign_gateways.c.gateway_id == gateway_id)
                .where(campaign_gateways.c.offered_at.is_(None))
                .values(offered_at=at)
            )
        return True

    def record_report(
        self, conn: sa.Connection, campaign_id: str, gateway_id: str, report: Report
    ) -> bool:
        """Merge a gateway's report into its campaign row.

        Returns:
            ``True`` if the row changed; ``False`` if the gateway is not a target of the
            campaign, or the report is older than the one held, or the outcome held is final
            for it (:func:`domain.firmware.campaign.replaces`).
        """
        row = conn.execute(
            sa.select(campaign_gateways)
            .where(campaign_gateways.c.campaign_id == campaign_id)
            .where(campaign_gateways.c.gateway_id == gateway_id)
        ).first()
        if row is None:
            return False
        held = _gateway(row)
        held_outcome, new_outcome = Outcome.from_stage(held.stage), Outcome.from_stage(report.stage)
        if held.reported_at is not None and held_outcome is not None and new_outcome is not None:
            if not replaces(held_outcome, new_outcome):
                return False
            newer = (report.at, report.stage, report.bytes_done)
            if not held_outcome.final and (held.reported_at, held.stage, held.bytes_done) >= newer:
                return False
        conn.execute(
            campaign_gateways.update()
            .where(campaign_gateways.c.campaign_id == campaign_id)
            .where(campaign_gateways.c.gateway_id == gateway_id)
            .values(
                stage=report.stage,
                detail=report.detail[:1024],
                bytes_done=report.bytes_done,
                running_version=report.running_version[:64] or held.running_version,
                reported_at=report.at,
            )
        )
        return True

    def firmware_events(
        self, conn: sa.Connection, types: Sequence[str], since: datetime
    ) -> list[tuple[str, datetime, bytes]]:
        """Stored events of ``types`` received since ``since``: (gateway, received, payload)."""
        rows = conn.execute(
            sa.select(events.c.gateway_id, events.c.received_at, events.c.payload)
            .where(events.c.type.in_(list(types)))
            .where(events.c.received_at >= since)
            .where(events.c.copy_of.is_(None))  # an agent's copy of one already stored
            .order_by(events.c.received_at)
        )
        return [(r.gateway_id, r.received_at, bytes(r.payload)) for r in rows]


def _release(row: sa.Row[Any], parts: tuple[PartRecord, ...]) -> ReleaseRecord:
    return ReleaseRecord(
        version=row.version,
        manifest=bytes(row.manifest),
        signatures=tuple(
            SignatureRecord(s["key_id"], base64.b64decode(s["signature"])) for s in row.signatures
        ),
        total_size=int(row.total_size),
        min_orchestrator_version=row.min_orchestrator_version,
        created_at=row.created_at,
        expires_at=row.expires_at,
        uploaded_at=row.uploaded_at,
        uploaded_by=row.uploaded_by,
        parts=parts,
    )


def _campaign_values(campaign: CampaignRecord) -> dict[str, Any]:
    return {
        "campaign_id": campaign.campaign_id,
        "version": campaign.version,
        "backend": campaign.backend,
        "status": campaign.status,
        "wave": campaign.wave,
        "plan": dict(campaign.plan),
        "options": dict(campaign.options),
        "acknowledged": list(campaign.acknowledged),
        "history": [n.to_json() for n in campaign.history],
        "reasons": [n.to_json() for n in campaign.reasons],
        "revision": campaign.revision,
        "created_at": campaign.created_at,
        "created_by": campaign.created_by,
        "updated_at": campaign.updated_at,
    }


def _campaign(row: sa.Row[Any]) -> CampaignRecord:
    return CampaignRecord(
        campaign_id=row.campaign_id,
        version=row.version,
        backend=row.backend,
        status=row.status,
        wave=int(row.wave),
        plan=row.plan,
        options=row.options,
        acknowledged=tuple(row.acknowledged),
        history=tuple(Note.from_json(n) for n in row.history),
        reasons=tuple(Note.from_json(n) for n in row.reasons),
        revision=int(row.revision),
        created_at=row.created_at,
        created_by=row.created_by,
        updated_at=row.updated_at,
    )


def _gateway(row: sa.Row[Any]) -> CampaignGatewayRecord:
    return CampaignGatewayRecord(
        campaign_id=row.campaign_id,
        gateway_id=row.gateway_id,
        wave=int(row.wave),
        position=int(row.position),
        commune=row.commune,
        offered_at=row.offered_at,
        stage=int(row.stage),
        detail=row.detail,
        bytes_done=int(row.bytes_done),
        running_version=row.running_version,
        reported_at=row.reported_at,
        hello_version=getattr(row, "hello_version", None) or "",
    )
