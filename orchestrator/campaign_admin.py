"""Campaigns: the admin API of releases and firmware campaigns, and the wiring of firmware
into an orchestrator process (:func:`install_firmware`).

Callers are operators, as for ControlCentre: viewers list and read, operators create and
steer campaigns whose gateways are all in their communes, admins upload releases. Every
write, refused attempts included, lands in the audit log.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn

import grpc
import sqlalchemy as sa

from orchestrator.app import Orchestrator
from orchestrator.auth import AuthError, Peer, peer_of, require_role
from orchestrator.campaign import CampaignError, TargetGateway
from orchestrator.campaign_targets import (
    BALENA,
    NATIVE,
    OutOfScope,
    Target,
    balena_devices,
    check_campaign_id,
    drives_lamps,
    plan_from_request,
    resolve_target,
    target_gateway,
)
from orchestrator.campaigns import (
    Action,
    CampaignRunner,
    NewCampaign,
    balena_from_environment,
)
from orchestrator.firmware import FirmwareService, UploadError, receive_upload
from orchestrator.store.firmware_store import (
    CampaignGatewayRecord,
    CampaignRecord,
    FirmwareStore,
    ReleaseRecord,
)
from orchestrator.store.store import Conflict, NotFound, OperatorRecord
from orchestrator.wire import timestamp
from protos.ondijon.v1 import firmware_pb2, firmware_pb2_grpc
from provisioning.identity import Role

Context = grpc.aio.ServicerContext[Any, Any]
VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
_RANK = {VIEWER: 0, OPERATOR: 1, ADMIN: 2}
_STATUS = {
    "running": firmware_pb2.CAMPAIGN_STATUS_RUNNING,
    "paused": firmware_pb2.CAMPAIGN_STATUS_PAUSED,
    "halted": firmware_pb2.CAMPAIGN_STATUS_HALTED,
    "aborted": firmware_pb2.CAMPAIGN_STATUS_ABORTED,
    "completed": firmware_pb2.CAMPAIGN_STATUS_COMPLETED,
}
_FAILED = frozenset(
    {
        firmware_pb2.FIRMWARE_STAGE_ROLLED_BACK,
        firmware_pb2.FIRMWARE_STAGE_REFUSED,
        firmware_pb2.FIRMWARE_STAGE_FAILED,
    }
)


def install_firmware(
    app: Orchestrator, server: grpc.aio.Server, *, tick_s: float = 10.0
) -> CampaignRunner:
    """Serve releases to gateways, the Campaigns admin API, and run campaigns (started
    here; stop with ``app.campaigns.stop()``)."""
    runner = CampaignRunner(app, tick_s=tick_s, balena=balena_from_environment())
    runner.releases = FirmwareService(app)
    app.campaigns = runner
    firmware_pb2_grpc.add_FirmwareServicer_to_server(runner.releases, server)
    firmware_pb2_grpc.add_CampaignsServicer_to_server(CampaignsService(app, runner), server)
    runner.start()
    return runner


def release_info(release: ReleaseRecord) -> firmware_pb2.ReleaseInfo:
    return firmware_pb2.ReleaseInfo(
        version=release.version,
        total_size=release.total_size,
        key_ids=[s.key_id for s in release.signatures],
        created_at=timestamp(release.created_at),
        expires_at=timestamp(release.expires_at),
        uploaded_at=timestamp(release.uploaded_at),
        uploaded_by=release.uploaded_by,
        min_orchestrator_version=release.min_orchestrator_version,
        parts=[
            firmware_pb2.ReleasePart(name=p.name, size=p.size, sha256=p.sha256)
            for p in release.parts
        ],
    )


def campaign_message(
    record: CampaignRecord,
    rows: Sequence[CampaignGatewayRecord],
    *,
    visible: Callable[[str], bool] | None = None,
) -> firmware_pb2.Campaign:
    """A campaign as the admin API shows it; with ``visible``, per-gateway outcomes of the
    communes it accepts."""
    plan = record.plan
    message = firmware_pb2.Campaign(
        campaign_id=record.campaign_id,
        version=record.version,
        status=_STATUS[record.status],
        backend=(
            firmware_pb2.CAMPAIGN_BACKEND_BALENA
            if record.backend == BALENA
            else firmware_pb2.CAMPAIGN_BACKEND_NATIVE
        ),
        current_wave=record.wave + 1,
        history=list(record.history),
        reasons=list(record.reasons),
        window=plan.get("window") or "",
        allow_night=not plan.get("daylight_only", True),
        allow_downgrade=bool(record.options.get("allow_downgrade", False)),
        created_at=timestamp(record.created_at),
        created_by=record.created_by,
        updated_at=timestamp(record.updated_at),
        target_count=len(rows),
    )
    for index, wave in enumerate(plan["waves"]):
        members = [r for r in rows if r.wave == index]
        message.waves.append(
            firmware_pb2.WaveProgress(
                percent=wave["percent"],
                success_threshold=wave["success_threshold"],
                error_threshold=wave["error_threshold"],
                gateways=len(members),
                offered=sum(1 for r in members if r.offered_at is not None),
                committed=sum(
                    1 for r in members if r.stage == firmware_pb2.FIRMWARE_STAGE_COMMITTED
                ),
                failed=sum(1 for r in members if r.stage in _FAILED),
            )
        )
    if visible is not None:
        for row in rows:
            if not visible(row.commune):
                continue
            outcome = firmware_pb2.GatewayOutcome(
                gateway_id=row.gateway_id,
                wave=row.wave + 1,
                stage=row.stage,  # type: ignore[arg-type]
                detail=row.detail,
                bytes_done=row.bytes_done,
                running_version=row.running_version,
                commune=row.commune,
            )
            if row.offered_at is not None:
                outcome.offered_at.CopyFrom(timestamp(row.offered_at))
            if row.reported_at is not None:
                outcome.updated_at.CopyFrom(timestamp(row.reported_at))
            message.gateways.append(outcome)
    return message


class CampaignsService(firmware_pb2_grpc.CampaignsServicer):
    def __init__(self, app: Orchestrator, runner: CampaignRunner) -> None:
        self.app = app
        self.runner = runner
        self.store = FirmwareStore()

    # -- who may do what --------------------------------------------------------------------

    async def _operator(self, context: Context, needed: str) -> tuple[Peer, OperatorRecord]:
        try:
            peer = peer_of(context)
            require_role(peer, Role.OPERATOR)
            await self.app.check_certificate(peer)
        except AuthError as exc:
            await context.abort(exc.code, str(exc))
        store = self.app.runner.store
        record = await self.app.runner.read(lambda c: store.get_operator(c, peer.identity.name))
        if record is None or record.disabled:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "operator is not registered")
        if _RANK.get(record.role, -1) < _RANK[needed]:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"role {record.role} may not do this (needs {needed})",
            )
        return peer, record

    async def _audit(
        self, peer: Peer, action: str, target: str, commune: str, result: str, detail: str = ""
    ) -> None:
        store = self.app.runner.store
        now = self.app.clock.now()
        await self.app.runner.write(
            lambda c: store.audit(
                c,
                at=now,
                actor=str(peer.identity),
                action=action,
                target=target,
                commune=commune[:128],
                result=result,
                detail=detail,
            )
        )

    async def _refuse(
        self,
        context: Context,
        peer: Peer,
        action: str,
        target: str,
        commune: str,
        code: grpc.StatusCode,
        message: str,
    ) -> NoReturn:
        await self._audit(peer, action, target, commune, "refused", message)
        await context.abort(code, message)
        raise AssertionError("unreachable")

    async def _campaign(
        self, context: Context, operator: OperatorRecord, campaign_id: str
    ) -> tuple[CampaignRecord, list[CampaignGatewayRecord]]:
        store = self.store
        try:
            record, rows = await self.app.runner.read(
                lambda c: (
                    store.get_campaign(c, campaign_id),
                    store.campaign_gateways(c, campaign_id),
                )
            )
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        if not any(_in_scope(operator, r.commune) for r in rows):
            # Same answer as a missing campaign: scope must not leak what exists elsewhere.
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"campaign_id: no campaign {campaign_id!r}"
            )
        return record, rows

    # -- releases ---------------------------------------------------------------------------

    async def UploadRelease(
        self,
        request_iterator: AsyncIterator[firmware_pb2.UploadReleaseRequest],
        context: Context,
    ) -> firmware_pb2.UploadReleaseResponse:
        peer, _ = await self._operator(context, ADMIN)
        now = self.app.clock.now()
        try:
            release, data = await receive_upload(
                request_iterator, now=now, uploaded_by=str(peer.identity)
            )
        except UploadError as exc:
            await self._refuse(
                context, peer, "release.upload", "", "", grpc.StatusCode.INVALID_ARGUMENT, str(exc)
            )
        store = self.store
        try:
            await self.app.runner.write(lambda c: store.add_release(c, release, data))
        except Conflict as exc:
            await self._refuse(
                context,
                peer,
                "release.upload",
                release.version,
                "",
                grpc.StatusCode.ALREADY_EXISTS,
                str(exc),
            )
        keys = ", ".join(s.key_id for s in release.signatures)
        detail = f"{release.total_size} bytes, signed by {keys}"
        await self._audit(peer, "release.upload", release.version, "", "ok", detail)
        return firmware_pb2.UploadReleaseResponse(release=release_info(release))

    async def ListReleases(
        self, request: firmware_pb2.ListReleasesRequest, context: Context
    ) -> firmware_pb2.ListReleasesResponse:
        await self._operator(context, VIEWER)
        store = self.store
        releases = await self.app.runner.read(store.list_releases)
        return firmware_pb2.ListReleasesResponse(releases=[release_info(r) for r in releases])

    # -- campaigns --------------------------------------------------------------------------

    async def CreateCampaign(
        self, request: firmware_pb2.CreateCampaignRequest, context: Context
    ) -> firmware_pb2.CreateCampaignResponse:
        peer, operator = await self._operator(context, OPERATOR)
        campaign_id = request.campaign_id or f"{request.version}-{secrets.token_hex(3)}"
        action = "campaign.create"
        backend = BALENA if request.backend == firmware_pb2.CAMPAIGN_BACKEND_BALENA else NATIVE
        target = Target(
            tuple(request.target.communes),
            tuple(request.target.tags),
            tuple(request.target.gateway_ids),
        )
        store = self.app.runner.store

        def resolve(c: sa.Connection) -> tuple[list[TargetGateway], dict[str, str]]:
            records = resolve_target(store, c, target, operator.communes)
            gateways = [target_gateway(r, drives_lamps(store, c, r.gateway_id)) for r in records]
            return gateways, {r.gateway_id: r.commune for r in records}

        try:
            check_campaign_id(campaign_id)
            gateways, communes = await self.app.runner.read(resolve)
            plan = plan_from_request(request, campaign_id, gateways)
            devices = (
                balena_devices(gateways, dict(request.balena_devices))
                if backend == BALENA
                else None
            )
            record = await self.runner.create(
                NewCampaign(
                    plan=plan,
                    communes=communes,
                    backend=backend,
                    allow_downgrade=request.allow_downgrade,
                    balena_release=request.balena_release,
                    balena_devices=devices,
                ),
                actor=str(peer.identity),
            )
        except OutOfScope as exc:
            await self._refuse(
                context, peer, action, campaign_id, "", grpc.StatusCode.PERMISSION_DENIED, str(exc)
            )
        except CampaignError as exc:
            await self._refuse(
                context, peer, action, campaign_id, "", grpc.StatusCode.INVALID_ARGUMENT, str(exc)
            )
        except Conflict as exc:
            await self._refuse(
                context, peer, action, campaign_id, "", grpc.StatusCode.ALREADY_EXISTS, str(exc)
            )
        rows = await self.runner.gateways(campaign_id)
        where = ",".join(sorted({r.commune for r in rows}))
        detail = f"{record.version} to {len(rows)} gateway(s), {backend} backend"
        await self._audit(peer, action, campaign_id, where, "ok", detail)
        return firmware_pb2.CreateCampaignResponse(
            campaign=campaign_message(record, rows, visible=lambda c: _in_scope(operator, c))
        )

    async def ListCampaigns(
        self, request: firmware_pb2.ListCampaignsRequest, context: Context
    ) -> firmware_pb2.ListCampaignsResponse:
        _, operator = await self._operator(context, VIEWER)
        store = self.store

        def load(c: sa.Connection) -> list[tuple[CampaignRecord, list[CampaignGatewayRecord]]]:
            return [(r, store.campaign_gateways(c, r.campaign_id)) for r in store.list_campaigns(c)]

        found = await self.app.runner.read(load)
        return firmware_pb2.ListCampaignsResponse(
            campaigns=[
                campaign_message(record, rows)
                for record, rows in found
                if any(_in_scope(operator, r.commune) for r in rows)
            ]
        )

    async def GetCampaign(
        self, request: firmware_pb2.GetCampaignRequest, context: Context
    ) -> firmware_pb2.GetCampaignResponse:
        _, operator = await self._operator(context, VIEWER)
        record, rows = await self._campaign(context, operator, request.campaign_id)
        return firmware_pb2.GetCampaignResponse(
            campaign=campaign_message(record, rows, visible=lambda c: _in_scope(operator, c))
        )

    async def _act(
        self, context: Context, campaign_id: str, action: Action, reason: str
    ) -> firmware_pb2.Campaign:
        peer, operator = await self._operator(context, OPERATOR)
        _, rows = await self._campaign(context, operator, campaign_id)
        where = ",".join(sorted({r.commune for r in rows}))
        audit = f"campaign.{action}"
        outside = sorted({r.commune for r in rows if not _in_scope(operator, r.commune)})
        if outside:
            await self._refuse(
                context,
                peer,
                audit,
                campaign_id,
                where,
                grpc.StatusCode.PERMISSION_DENIED,
                f"target: the campaign reaches communes outside your scope ({', '.join(outside)})",
            )
        try:
            record = await self.runner.act(campaign_id, action, reason)
        except CampaignError as exc:
            await self._refuse(
                context,
                peer,
                audit,
                campaign_id,
                where,
                grpc.StatusCode.FAILED_PRECONDITION,
                str(exc),
            )
        except Conflict as exc:
            await self._refuse(
                context, peer, audit, campaign_id, where, grpc.StatusCode.ABORTED, str(exc)
            )
        await self._audit(peer, audit, campaign_id, where, "ok", reason)
        rows = await self.runner.gateways(campaign_id)
        return campaign_message(record, rows, visible=lambda c: _in_scope(operator, c))

    async def PauseCampaign(
        self, request: firmware_pb2.PauseCampaignRequest, context: Context
    ) -> firmware_pb2.PauseCampaignResponse:
        campaign = await self._act(context, request.campaign_id, "pause", request.reason)
        return firmware_pb2.PauseCampaignResponse(campaign=campaign)

    async def ResumeCampaign(
        self, request: firmware_pb2.ResumeCampaignRequest, context: Context
    ) -> firmware_pb2.ResumeCampaignResponse:
        campaign = await self._act(context, request.campaign_id, "resume", "")
        return firmware_pb2.ResumeCampaignResponse(campaign=campaign)

    async def AbortCampaign(
        self, request: firmware_pb2.AbortCampaignRequest, context: Context
    ) -> firmware_pb2.AbortCampaignResponse:
        campaign = await self._act(context, request.campaign_id, "abort", request.reason)
        return firmware_pb2.AbortCampaignResponse(campaign=campaign)


def _in_scope(operator: OperatorRecord, commune: str) -> bool:
    return "*" in operator.communes or commune in operator.communes
