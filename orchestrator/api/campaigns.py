"""Campaigns: the admin API of releases and firmware campaigns.

Callers are operators, checked as for ControlCentre (:class:`orchestrator.access.gate.Gatekeeper`):
viewers list and read, operators create and steer campaigns whose gateways are all in
their communes, admins upload releases. Every write, refused attempts included (a viewer's
create, another commune's pause, a gateway certificate calling this service), lands in the
audit log.

What a caller sees of a campaign is limited to its communes: the gateways, their number,
the waves' counts, and the reasons and history lines (rendered by
:meth:`orchestrator.firmware.rollout.Note.render`) name and count only gateways of those communes.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from foundation.clock import Clock
from orchestrator.access.gate import ADMIN, OPERATOR, VIEWER, Attempt, Caller, Gatekeeper
from orchestrator.firmware.releases import UploadError, receive_upload
from orchestrator.firmware.rollout import CampaignError, Note, Outcome, TargetGateway
from orchestrator.firmware.runner import Action, CampaignRunner, NewCampaign
from orchestrator.firmware.targets import (
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
from orchestrator.ingest.checks import timestamp
from orchestrator.store.connection import Connection
from orchestrator.store.database import Conflict, NotFound
from orchestrator.store.releases import (
    CampaignGatewayRecord,
    CampaignRecord,
    FirmwareStore,
    ReleaseRecord,
)
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import firmware_pb2, firmware_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
_STATUS = {
    "running": firmware_pb2.CAMPAIGN_STATUS_RUNNING,
    "paused": firmware_pb2.CAMPAIGN_STATUS_PAUSED,
    "halted": firmware_pb2.CAMPAIGN_STATUS_HALTED,
    "aborted": firmware_pb2.CAMPAIGN_STATUS_ABORTED,
    "completed": firmware_pb2.CAMPAIGN_STATUS_COMPLETED,
}
Scope = Callable[[str], bool]
"""Whether the reader may see a commune (``"*"``: whether it may see every commune)."""


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
    scope: Scope,
    gateways: bool = False,
) -> firmware_pb2.Campaign:
    """A campaign as a reader whose communes ``scope`` accepts sees it; with ``gateways``,
    the per-gateway outcomes."""
    communes = {r.gateway_id: r.commune for r in rows}

    def visible(gateway_id: str) -> bool:
        # A gateway outside the target (a stray report) is for readers of every commune.
        return scope(communes.get(gateway_id, "*"))

    shown = [r for r in rows if scope(r.commune)]
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
        history=_rendered(record.history, visible),
        reasons=(
            _abort_summary(shown)
            if record.status == "aborted"
            else _rendered(record.reasons, visible)
        ),
        window=plan.get("window") or "",
        allow_night=not plan.get("daylight_only", True),
        allow_downgrade=bool(record.options.get("allow_downgrade", False)),
        created_at=timestamp(record.created_at),
        created_by=record.created_by,
        updated_at=timestamp(record.updated_at),
        target_count=len(shown),
    )
    for index, wave in enumerate(plan["waves"]):
        members = [r for r in shown if r.wave == index]
        message.waves.append(
            firmware_pb2.WaveProgress(
                percent=wave["percent"],
                success_threshold=wave["success_threshold"],
                error_threshold=wave["error_threshold"],
                gateways=len(members),
                offered=sum(1 for r in members if r.offered_at is not None),
                committed=sum(1 for r in members if _updated(record, r)),
                failed=sum(1 for r in members if _failed(record, r)),
            )
        )
    if gateways:
        for row in shown:
            outcome = Outcome.from_stage(row.stage)
            entry = firmware_pb2.GatewayOutcome(
                gateway_id=row.gateway_id,
                wave=row.wave + 1,
                stage=row.stage,  # type: ignore[arg-type]
                detail=row.detail,
                bytes_done=row.bytes_done,
                running_version=row.running_version,
                commune=row.commune,
                past_point_of_no_return=outcome is not None and outcome.past_point_of_no_return,
                hello_version=row.hello_version,
            )
            if row.offered_at is not None:
                entry.offered_at.CopyFrom(timestamp(row.offered_at))
            if row.reported_at is not None:
                entry.updated_at.CopyFrom(timestamp(row.reported_at))
            message.gateways.append(entry)
    return message


def _rendered(notes: Sequence[Note], visible: Callable[[str], bool]) -> list[str]:
    return [line for n in notes if (line := n.render(visible)) is not None]


def _updated(record: CampaignRecord, row: CampaignGatewayRecord) -> bool:
    """Committed, and (native) the gateway's hello reports the campaign's version."""
    return row.stage == firmware_pb2.FIRMWARE_STAGE_COMMITTED and (
        record.backend != NATIVE or row.hello_version == record.version
    )


def _failed(record: CampaignRecord, row: CampaignGatewayRecord) -> bool:
    outcome = Outcome.from_stage(row.stage)
    if outcome is None:
        return False
    return outcome.failed or (outcome is Outcome.COMMITTED and not _updated(record, row))


def _abort_summary(rows: Sequence[CampaignGatewayRecord]) -> list[str]:
    """Where the offered gateways stand after an abort."""
    offered = [r for r in rows if r.offered_at is not None]
    outcomes = {r.gateway_id: Outcome.from_stage(r.stage) for r in offered}
    past = [g for g, o in outcomes.items() if o is not None and o.past_point_of_no_return]
    cancelled = [g for g, o in outcomes.items() if o is Outcome.CANCELLED]
    stopped = [g for g, o in outcomes.items() if o is not None and o.failed and g not in past]
    silent = [g for g in outcomes if g not in past and g not in cancelled and g not in stopped]
    lines = []
    if past:
        lines.append(
            f"{len(past)} gateway(s) had passed the point of no return; their update goes on"
            f" to its outcome: {_names(past)}"
        )
    if cancelled:
        lines.append(f"{len(cancelled)} gateway(s) cancelled before the point of no return")
    if stopped:
        lines.append(f"{len(stopped)} gateway(s) had refused or failed before the abort")
    if silent:
        lines.append(
            f"{len(silent)} gateway(s) have not answered the cancel yet (offline, or an agent"
            f" older than protocol revision 3): {_names(silent)}"
        )
    return lines


def _names(ids: Sequence[str]) -> str:
    return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


class CampaignsService(firmware_pb2_grpc.CampaignsServicer):
    def __init__(
        self, *, runner: StoreRunner, clock: Clock, gate: Gatekeeper, campaigns: CampaignRunner
    ) -> None:
        self.runner = runner
        self.clock = clock
        self.campaigns = campaigns
        self.store = FirmwareStore()
        self.gate = gate

    async def _campaign(
        self, context: Context, caller: Caller, campaign_id: str, attempt: Attempt | None
    ) -> tuple[CampaignRecord, list[CampaignGatewayRecord]]:
        """The campaign, if it exists and reaches the caller's communes; otherwise abort
        (a refused write audited where it happened)."""
        store = self.store
        missing = f"campaign_id: no campaign {campaign_id!r}"
        try:
            record, rows = await self.runner.read(store.campaign_with_gateways, campaign_id)
        except NotFound:
            await self.gate.refuse(context, caller, attempt, grpc.StatusCode.NOT_FOUND, missing)
        if not any(caller.in_scope(r.commune) for r in rows):
            # Same answer as a missing campaign: scope must not leak what exists elsewhere.
            where = _where(rows)
            audited = Attempt(attempt.action, attempt.target, where) if attempt else None
            await self.gate.refuse(
                context,
                caller,
                audited,
                grpc.StatusCode.NOT_FOUND,
                missing,
                detail=f"campaign {campaign_id!r} is outside the caller's communes",
            )
        return record, rows

    # -- releases ---------------------------------------------------------------------------

    async def UploadRelease(
        self,
        request_iterator: AsyncIterator[firmware_pb2.UploadReleaseRequest],
        context: Context,
    ) -> firmware_pb2.UploadReleaseResponse:
        attempt = Attempt("release.upload", "")
        caller = await self.gate.caller(context, ADMIN, attempt)
        now = self.clock.now()
        try:
            release, data = await receive_upload(
                request_iterator, now=now, uploaded_by=caller.actor
            )
        except UploadError as exc:
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.INVALID_ARGUMENT, str(exc)
            )
        attempt = Attempt("release.upload", release.version)
        store = self.store
        try:
            await self.runner.write(store.add_release, release, data)
        except Conflict as exc:
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.ALREADY_EXISTS, str(exc)
            )
        keys = ", ".join(s.key_id for s in release.signatures)
        await self.gate.done(caller, attempt, f"{release.total_size} bytes, signed by {keys}")
        return firmware_pb2.UploadReleaseResponse(release=release_info(release))

    async def ListReleases(
        self, request: firmware_pb2.ListReleasesRequest, context: Context
    ) -> firmware_pb2.ListReleasesResponse:
        await self.gate.caller(context, VIEWER, None)
        store = self.store
        releases = await self.runner.read(store.list_releases)
        return firmware_pb2.ListReleasesResponse(releases=[release_info(r) for r in releases])

    # -- campaigns --------------------------------------------------------------------------

    async def CreateCampaign(
        self, request: firmware_pb2.CreateCampaignRequest, context: Context
    ) -> firmware_pb2.CreateCampaignResponse:
        campaign_id = request.campaign_id or f"{request.version}-{secrets.token_hex(3)}"
        attempt = Attempt("campaign.create", campaign_id)
        caller = await self.gate.caller(context, OPERATOR, attempt)
        backend = BALENA if request.backend == firmware_pb2.CAMPAIGN_BACKEND_BALENA else NATIVE
        target = Target(
            tuple(request.target.communes),
            tuple(request.target.tags),
            tuple(request.target.gateway_ids),
        )
        store = self.runner.store
        scope = caller.operator.communes

        def resolve(c: Connection) -> tuple[list[TargetGateway], dict[str, str]]:
            records = resolve_target(store, c, target, scope)
            gateways = [target_gateway(r, drives_lamps(store, c, r.gateway_id)) for r in records]
            return gateways, {r.gateway_id: r.commune for r in records}

        try:
            check_campaign_id(campaign_id)
            gateways, communes = await self.runner.read(resolve)
            plan = plan_from_request(request, campaign_id, gateways)
            devices = (
                balena_devices(gateways, dict(request.balena_devices))
                if backend == BALENA
                else None
            )
            record = await self.campaigns.create(
                NewCampaign(
                    plan=plan,
                    communes=communes,
                    backend=backend,
                    allow_downgrade=request.allow_downgrade,
                    balena_release=request.balena_release,
                    balena_devices=devices,
                ),
                actor=caller.actor,
            )
        except OutOfScope as exc:
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.PERMISSION_DENIED, str(exc)
            )
        except CampaignError as exc:
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.INVALID_ARGUMENT, str(exc)
            )
        except Conflict as exc:
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.ALREADY_EXISTS, str(exc)
            )
        rows = await self.campaigns.gateways(campaign_id)
        detail = f"{record.version} to {len(rows)} gateway(s), {backend} backend"
        await self.gate.done(caller, Attempt(attempt.action, campaign_id, _where(rows)), detail)
        return firmware_pb2.CreateCampaignResponse(
            campaign=campaign_message(record, rows, scope=caller.in_scope, gateways=True)
        )

    async def ListCampaigns(
        self, request: firmware_pb2.ListCampaignsRequest, context: Context
    ) -> firmware_pb2.ListCampaignsResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        store = self.store

        def load(c: Connection) -> list[tuple[CampaignRecord, list[CampaignGatewayRecord]]]:
            return [(r, store.campaign_gateways(c, r.campaign_id)) for r in store.list_campaigns(c)]

        found = await self.runner.read(load)
        return firmware_pb2.ListCampaignsResponse(
            campaigns=[
                campaign_message(record, rows, scope=caller.in_scope)
                for record, rows in found
                if any(caller.in_scope(r.commune) for r in rows)
            ]
        )

    async def GetCampaign(
        self, request: firmware_pb2.GetCampaignRequest, context: Context
    ) -> firmware_pb2.GetCampaignResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        record, rows = await self._campaign(context, caller, request.campaign_id, None)
        return firmware_pb2.GetCampaignResponse(
            campaign=campaign_message(record, rows, scope=caller.in_scope, gateways=True)
        )

    async def _act(
        self, context: Context, campaign_id: str, action: Action, reason: str
    ) -> firmware_pb2.Campaign:
        attempt = Attempt(f"campaign.{action}", campaign_id)
        caller = await self.gate.caller(context, OPERATOR, attempt)
        _, rows = await self._campaign(context, caller, campaign_id, attempt)
        attempt = Attempt(attempt.action, campaign_id, _where(rows))
        outside = sorted({r.commune for r in rows if not caller.in_scope(r.commune)})
        if outside:
            await self.gate.refuse(
                context,
                caller,
                attempt,
                grpc.StatusCode.PERMISSION_DENIED,
                f"target: the campaign reaches {len(outside)} commune(s) outside your scope",
                detail=f"communes outside the caller's scope: {', '.join(outside)}",
            )
        try:
            record = await self.campaigns.act(campaign_id, action, reason)
        except CampaignError as exc:
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.FAILED_PRECONDITION, str(exc)
            )
        except Conflict as exc:
            await self.gate.refuse(context, caller, attempt, grpc.StatusCode.ABORTED, str(exc))
        await self.gate.done(caller, attempt, reason)
        rows = await self.campaigns.gateways(campaign_id)
        return campaign_message(record, rows, scope=caller.in_scope, gateways=True)

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


def _where(rows: Sequence[CampaignGatewayRecord]) -> str:
    """The communes a campaign reaches, for the audit log."""
    return ",".join(sorted({r.commune for r in rows}))
