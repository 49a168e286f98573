"""The campaign runner: the pure campaign core (:mod:`orchestrator.firmware.rollout`) with a store,
a clock and the gateways' streams around it.

A *pass* over a live campaign reads it from the store, gathers what gateways said since
(progress on the link, outcome events from their durable outboxes, or balena's device
status), calls :func:`~orchestrator.firmware.rollout.decide`, saves the next state (optimistically:
if another replica saved first, this pass gives way) and offers the release to the gateways
connected to this process. Passes run every ``tick_s`` seconds and at once when something
that matters happens: a campaign is created or acted on, or a gateway reports an outcome.

Offers are idempotent on the agent's side (a running trial, the version already running, or
a release already rolled back in this campaign are answered, never reinstalled), so an
offered gateway that has not reached a final outcome is offered again on each new stream
(the orchestrator may have restarted, the agent may have lost the offer) — but only inside
its maintenance window, and only while the campaign runs. An agent of protocol revision 1
does not take offers: it is reported REFUSED, with the reason, rather than waited for.

Outcomes reach the campaign two ways: the ``firmware_progress`` message on the link (fast,
lost if the stream drops) and an event in the agent's outbox (``firmware.committed``,
``firmware.rolled_back``, ``firmware.refused``, ``firmware.failed``, ``firmware.cancelled``:
delivered exactly once even across power cuts). Both merge idempotently, and an outcome is
final. A COMMITTED counts only when the gateway's latest hello (kept in the fleet registry,
shared by every replica) reports the campaign's version.

An aborted campaign is cancelled on the gateways (``FirmwareCancel``, agents of protocol
revision 3): at once on the streams this process holds, and at every pass and every new
stream until each offered gateway has answered (CANCELLED, or the outcome of an update
that had passed the point of no return), so a gateway offline at the abort, or connected to
another replica, hears of it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from google.protobuf.timestamp_pb2 import Timestamp

from foundation.clock import Clock
from orchestrator.firmware.balena import BalenaBackend, BalenaError, BalenaSettings
from orchestrator.firmware.releases import FirmwareService, release_manifest
from orchestrator.firmware.rollout import (
    CampaignError,
    CampaignPlan,
    CampaignState,
    CampaignStatus,
    GatewayReport,
    Note,
    Outcome,
    abort,
    decide,
    note,
    pause,
    resume,
    start_campaign,
    window_open,
)
from orchestrator.firmware.targets import BALENA, NATIVE, plan_from_json, plan_to_json
from orchestrator.ingest.checks import WireError
from orchestrator.ingest.hub import Hub, Session
from orchestrator.store.connection import Connection
from orchestrator.store.database import Conflict, NotFound
from orchestrator.store.releases import (
    FINAL_STAGES,
    CampaignGatewayRecord,
    CampaignRecord,
    FirmwareStore,
    Report,
)
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import firmware_pb2, link_pb2

log = logging.getLogger("ondijon.orchestrator.campaigns")

LIVE = (CampaignStatus.RUNNING.value, CampaignStatus.PAUSED.value, CampaignStatus.HALTED.value)
OFFER_REVISION = 2
"""Agents say this protocol revision (or later) in their hello when they take offers."""
CANCEL_REVISION = 3
"""...and this one when they honour a FirmwareCancel."""
OUTCOME_EVENTS = {
    "firmware.committed": firmware_pb2.FIRMWARE_STAGE_COMMITTED,
    "firmware.rolled_back": firmware_pb2.FIRMWARE_STAGE_ROLLED_BACK,
    "firmware.refused": firmware_pb2.FIRMWARE_STAGE_REFUSED,
    "firmware.failed": firmware_pb2.FIRMWARE_STAGE_FAILED,
    "firmware.cancelled": firmware_pb2.FIRMWARE_STAGE_CANCELLED,
}
Action = Literal["pause", "resume", "abort"]


@dataclass(frozen=True)
class NewCampaign:
    """A campaign an operator asked for, its target already resolved."""

    plan: CampaignPlan
    communes: Mapping[str, str]
    backend: str = NATIVE
    allow_downgrade: bool = False
    balena_release: str = ""
    balena_devices: Mapping[str, str] | None = None


def balena_from_environment(environ: Mapping[str, str] | None = None) -> BalenaBackend | None:
    """A balena backend from ``ONDIJON_BALENA_API_KEY`` (or ``..._API_KEY_FILE``),
    ``ONDIJON_BALENA_HOST`` and ``ONDIJON_BALENA_API_URL``; ``None`` without a key."""
    env = os.environ if environ is None else environ
    key = env.get("ONDIJON_BALENA_API_KEY", "")
    key_file = env.get("ONDIJON_BALENA_API_KEY_FILE", "")
    if not key and key_file:
        with open(key_file, encoding="utf-8") as handle:
            key = handle.read().strip()
    if not key:
        return None
    settings = BalenaSettings(
        api_key=key,
        balena_host=env.get("ONDIJON_BALENA_HOST", "balena-cloud.com"),
        api_url=env.get("ONDIJON_BALENA_API_URL") or None,
    )
    return BalenaBackend(settings)


def check_progress(progress: firmware_pb2.FirmwareProgress) -> None:
    """Check a gateway's progress message before anything is stored.

    Raises:
        WireError: naming the field.
    """
    if len(progress.campaign_id) > 64:
        raise WireError("firmware_progress.campaign_id", "longer than 64 characters")
    if len(progress.version) > 64 or len(progress.running_version) > 64:
        raise WireError("firmware_progress.version", "longer than 64 characters")
    if progress.stage not in firmware_pb2.FirmwareStage.values() or progress.stage == 0:
        raise WireError("firmware_progress.stage", "unknown stage")


def state_of(record: CampaignRecord, rows: Sequence[CampaignGatewayRecord]) -> CampaignState:
    """The pure core's state of a stored campaign (reports included)."""
    plan = plan_from_json(record.plan)
    waves: list[list[str]] = [[] for _ in plan.waves]
    offered: dict[str, datetime] = {}
    reports: dict[str, GatewayReport] = {}
    for row in rows:
        waves[row.wave].append(row.gateway_id)
        outcome = Outcome.from_stage(row.stage)
        if row.offered_at is not None:
            offered[row.gateway_id] = row.offered_at
        if outcome is not None and row.reported_at is not None:
            # balena decides its devices' outcome; native gateways are judged by their hello.
            hello = row.hello_version if record.backend == NATIVE else None
            reports[row.gateway_id] = GatewayReport(outcome, row.reported_at, row.detail, hello)
            offered.setdefault(row.gateway_id, row.reported_at)
    return CampaignState(
        plan=plan,
        status=CampaignStatus(record.status),
        wave=record.wave,
        waves=tuple(tuple(w) for w in waves),
        offered=offered,
        reports=reports,
        acknowledged=frozenset(record.acknowledged),
        history=record.history,
    )


class CampaignRunner:
    """Runs every live campaign of the store; one per orchestrator process."""

    def __init__(
        self,
        *,
        runner: StoreRunner,
        clock: Clock,
        hub: Hub,
        releases: FirmwareService,
        tick_s: float = 10.0,
        balena: BalenaBackend | None = None,
    ) -> None:
        self.runner = runner
        self.clock = clock
        self.hub = hub
        self.store = FirmwareStore()
        self.tick_s = tick_s
        self.balena = balena
        self.releases = releases
        self.passes = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._sent: dict[tuple[str, str], Session] = {}
        self._cancels: dict[tuple[str, str], Session] = {}
        self._revisions: dict[str, int] = {}
        self._offers: dict[str, firmware_pb2.ReleaseManifest] = {}

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start passing over campaigns in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="campaigns")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Run a pass soon."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.tick()
            except Exception:
                log.exception("campaign pass failed; trying again at the next tick")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick_s)

    # -- what operators do ------------------------------------------------------------------

    async def create(self, new: NewCampaign, *, actor: str) -> CampaignRecord:
        """Validate and store a campaign, then run its first pass.

        Raises:
            CampaignError: naming the field at fault.
            Conflict: the campaign id is taken.
        """
        now = self.clock.now()
        plan = new.plan
        state = start_campaign(plan, now)
        options: dict[str, object] = {"allow_downgrade": new.allow_downgrade}
        if new.backend == NATIVE:
            store = self.store
            try:
                release = await self.runner.read(store.get_release, plan.version)
            except NotFound:
                raise CampaignError(
                    "version", f"no release {plan.version} uploaded (ondijon release upload)"
                ) from None
            if release.expires_at <= now:
                raise CampaignError("version", f"release {plan.version} has expired")
        elif new.backend == BALENA:
            if self.balena is None:
                raise CampaignError(
                    "backend", "balena is not configured here (set ONDIJON_BALENA_API_KEY)"
                )
            try:
                release_id = await self.balena.resolve_release(new.balena_release)
            except BalenaError as exc:
                raise CampaignError("balena_release", exc.reason) from None
            options.update(
                balena_release=new.balena_release,
                balena_release_id=release_id,
                balena_devices=dict(new.balena_devices or {}),
            )
        else:
            raise CampaignError("backend", f"unknown backend {new.backend!r}")
        record = CampaignRecord(
            campaign_id=plan.campaign_id,
            version=plan.version,
            backend=new.backend,
            status=state.status.value,
            wave=state.wave,
            plan=plan_to_json(plan),
            options=options,
            acknowledged=(),
            history=state.history,
            reasons=(),
            revision=0,
            created_at=now,
            created_by=actor,
            updated_at=now,
        )
        rows = [
            CampaignGatewayRecord(
                plan.campaign_id,
                gateway_id,
                wave,
                position,
                new.communes.get(gateway_id, ""),
                None,
                0,
                "",
                0,
                "",
                None,
            )
            for wave, members in enumerate(state.waves)
            for position, gateway_id in enumerate(members)
        ]
        targets = [g.id for g in plan.gateways]

        def add(conn: Connection) -> None:
            # One live campaign per gateway: two would offer it two versions in turn.
            busy = self.store.campaigns_holding(conn, targets, LIVE)
            if busy:
                gateway_id = sorted(busy)[0]
                raise CampaignError(
                    "target",
                    f"{len(busy)} gateway(s) already in a live campaign, e.g. {gateway_id}"
                    f" in {busy[gateway_id]} (abort it first)",
                )
            self.store.add_campaign(conn, record, rows)

        await self.runner.write(add)
        async with self._lock:
            await self._pass(record)
        return await self.get(plan.campaign_id)

    async def act(self, campaign_id: str, action: Action, reason: str = "") -> CampaignRecord:
        """Pause, resume or abort a campaign.

        Raises:
            NotFound: no such campaign.
            CampaignError: the action does not apply to the campaign's status.
            Conflict: the campaign kept changing under us.
        """
        for _ in range(5):
            record, rows = await self._load(campaign_id)
            state = state_of(record, rows)
            now = self.clock.now()
            if action == "pause":
                state = pause(state, now, reason)
            elif action == "resume":
                state = resume(state, now)
                await self._check_release(record, now)
            else:
                state = abort(state, now, reason)
            updated = _updated(record, state, record.reasons, now)
            if await self._save(record, updated, {}):
                if action == "abort":
                    await self._send_cancels()
                self.wake()
                return updated
        raise Conflict("campaign_id", "the campaign is changing; try again")

    async def _check_release(self, record: CampaignRecord, now: datetime) -> None:
        """A resumed campaign must be able to go on: its release is still servable.

        Raises:
            CampaignError: the release expired (agents would refuse it).
        """
        if record.backend != NATIVE:
            return
        store = self.store
        release = await self.runner.read(store.get_release, record.version)
        if release.expires_at <= now:
            raise CampaignError(
                "version",
                f"release {record.version} expired at {release.expires_at:%Y-%m-%dT%H:%MZ}:"
                " agents would refuse it; the campaign cannot go on (abort it and start one"
                " with a newer release)",
            )

    async def get(self, campaign_id: str) -> CampaignRecord:
        """Raises: NotFound."""
        store = self.store
        return await self.runner.read(store.get_campaign, campaign_id)

    async def gateways(self, campaign_id: str) -> list[CampaignGatewayRecord]:
        store = self.store
        return await self.runner.read(store.campaign_gateways, campaign_id)

    # -- what gateways do -------------------------------------------------------------------

    async def gateway_connected(self, session: Session, hello: link_pb2.Hello) -> None:
        """A gateway opened a stream: offer it what it is waiting for."""
        gateway_id = session.gateway_id
        self._revisions[gateway_id] = hello.protocol_revision
        store = self.store
        running = [CampaignStatus.RUNNING.value]
        rows, waiting = await self.runner.read(store.gateway_work, gateway_id, running)
        now = self.clock.now()
        for record, row in rows:
            if record.backend != NATIVE or row.offered_at is None or row.stage in FINAL_STAGES:
                continue
            plan = plan_from_json(record.plan)
            await self._offer(record, plan, gateway_id, now)
        self._cancel(waiting)

    async def _send_cancels(self) -> None:
        """Tell gateways connected here to cancel updates of aborted campaigns they have
        not answered yet (once per stream)."""
        store = self.store
        self._cancel(await self.runner.read(store.awaiting_cancel))

    def _cancel(self, waiting: Sequence[tuple[str, str, str]]) -> None:
        for campaign_id, version, gateway in waiting:
            session = self.hub.session(gateway)
            key = (campaign_id, gateway)
            if session is None or self._cancels.get(key) is session:
                continue
            if self._revisions.get(gateway, 0) < CANCEL_REVISION:
                continue  # it cannot be told; the campaign shows it never answered
            self._cancels[key] = session
            session.send(
                link_pb2.ConnectResponse(
                    firmware_cancel=firmware_pb2.FirmwareCancel(
                        campaign_id=campaign_id, version=version, reason="campaign aborted"
                    )
                )
            )

    async def on_progress(self, gateway_id: str, progress: firmware_pb2.FirmwareProgress) -> None:
        """Record a gateway's progress (from its stream).

        Raises:
            WireError: the message is malformed.
        """
        check_progress(progress)
        if not progress.campaign_id:
            log.info("gateway %s: firmware %s outside any campaign", gateway_id, progress.stage)
            return
        report = Report(
            stage=progress.stage,
            detail=progress.detail,
            at=self.clock.now(),
            bytes_done=progress.bytes_done,
            running_version=progress.running_version,
        )
        store = self.store
        changed = await self.runner.write(
            store.record_report, progress.campaign_id, gateway_id, report
        )
        if changed and progress.stage in FINAL_STAGES:
            self.wake()

    # -- passes -----------------------------------------------------------------------------

    async def tick(self) -> None:
        """One pass over every live campaign."""
        async with self._lock:
            store = self.store
            records = await self.runner.read(store.list_campaigns, LIVE)
            for record in records:
                try:
                    await self._pass(record)
                except Exception:
                    log.exception("campaign %s: pass failed", record.campaign_id)
            try:
                await self._send_cancels()
            except Exception:
                log.exception("cancelling aborted campaigns failed")
            self.passes += 1

    async def _pass(self, record: CampaignRecord) -> None:
        now = self.clock.now()
        record, rows = await self._load(record.campaign_id)
        news = await self._outcome_events(record, rows)
        if record.backend == BALENA:
            news += await self._balena_outcomes(record, rows, now)
        if news:
            await self._record(record.campaign_id, news)
            record, rows = await self._load(record.campaign_id)
        state = state_of(record, rows)
        decision = await asyncio.to_thread(decide, state, {}, now)
        reasons = list(decision.reasons)
        next_state = decision.state
        if decision.offer_to and record.backend == BALENA:
            try:
                if self.balena is None:
                    raise BalenaError("backend", "balena is not configured on this orchestrator")
                await self.balena.offer(
                    decision.offer_to,
                    record.options["balena_devices"],
                    record.options["balena_release"],
                )
            except BalenaError as exc:
                # Not the devices' failure: they are offered again at the next pass.
                offered = {
                    g: t for g, t in next_state.offered.items() if g not in decision.offer_to
                }
                next_state = replace(next_state, offered=offered)
                reasons.append(note(f"balena did not pin the wave, will retry: {exc}"))
        unoffered = {r.gateway_id for r in rows if r.offered_at is None}
        new_offers = {g: at for g, at in next_state.offered.items() if g in unoffered}
        updated = _updated(record, next_state, reasons, now)
        if _changed(record, updated) or new_offers:
            if not await self._save(record, updated, new_offers):
                return
            record = updated
        if record.backend == NATIVE and record.status == CampaignStatus.RUNNING.value:
            for gateway_id in next_state.in_flight():
                await self._offer(record, next_state.plan, gateway_id, now)

    async def _offer(
        self, record: CampaignRecord, plan: CampaignPlan, gateway_id: str, now: datetime
    ) -> None:
        session = self.hub.session(gateway_id)
        key = (record.campaign_id, gateway_id)
        if session is None or self._sent.get(key) is session:
            return
        target = next((g for g in plan.gateways if g.id == gateway_id), None)
        if target is None or window_open(plan, target, now) is not None:
            return
        # Claimed before any await: a hello and a pass must not both send it.
        self._sent[key] = session
        revision = self._revisions.get(gateway_id, 0)
        if revision < OFFER_REVISION:
            report = Report(
                stage=firmware_pb2.FIRMWARE_STAGE_REFUSED,
                detail=f"agent protocol revision {revision} does not take firmware offers;"
                " update it by other means (or use the balena backend)",
                at=now,
            )
            store = self.store
            await self.runner.write(store.record_report, record.campaign_id, gateway_id, report)
            self.wake()
            return
        manifest = await self._manifest(record.version)
        offered_at = Timestamp()
        offered_at.FromDatetime(now)
        session.send(
            link_pb2.ConnectResponse(
                firmware_offer=firmware_pb2.FirmwareOffer(
                    campaign_id=record.campaign_id,
                    version=record.version,
                    manifest=manifest,
                    allow_downgrade=bool(record.options.get("allow_downgrade", False)),
                    offered_at=offered_at,
                )
            )
        )

    async def _manifest(self, version: str) -> firmware_pb2.ReleaseManifest:
        manifest = self._offers.get(version)
        if manifest is None:
            store = self.store
            release = await self.runner.read(store.get_release, version)
            manifest = self._offers[version] = release_manifest(release)
        return manifest

    async def _outcome_events(
        self, record: CampaignRecord, rows: Sequence[CampaignGatewayRecord]
    ) -> list[tuple[str, Report]]:
        """Outcomes from the agents' outboxes (the path that survives cuts) not yet merged."""
        store = self.store
        found = await self.runner.read(
            store.firmware_events, list(OUTCOME_EVENTS), record.created_at
        )
        stages = {r.gateway_id: r.stage for r in rows}
        news: list[tuple[str, Report]] = []
        for gateway_id, received_at, payload in found:
            event = link_pb2.Event.FromString(payload)
            stage = OUTCOME_EVENTS[event.type]
            if event.attributes.get("campaign_id") != record.campaign_id:
                continue
            if gateway_id not in stages or stages[gateway_id] == stage:
                continue
            report = Report(
                stage=stage,
                detail=event.message,
                at=received_at,
                running_version=event.attributes.get("running_version", ""),
            )
            news.append((gateway_id, report))
        return news

    async def _balena_outcomes(
        self, record: CampaignRecord, rows: Sequence[CampaignGatewayRecord], now: datetime
    ) -> list[tuple[str, Report]]:
        waiting = {
            r.gateway_id: r.offered_at
            for r in rows
            if r.offered_at is not None and r.stage not in FINAL_STAGES
        }
        if self.balena is None or not waiting:
            return []
        found = await self.balena.outcomes(
            record.options["balena_devices"],
            int(record.options["balena_release_id"]),
            waiting,
            now,
        )
        return [
            (g, Report(stage=r.outcome.value, detail=r.detail, at=r.at)) for g, r in found.items()
        ]

    async def _record(self, campaign_id: str, reports: list[tuple[str, Report]]) -> None:
        store = self.store

        def merge(conn: Connection) -> None:
            for gateway_id, report in reports:
                store.record_report(conn, campaign_id, gateway_id, report)

        await self.runner.write(merge)

    async def _load(self, campaign_id: str) -> tuple[CampaignRecord, list[CampaignGatewayRecord]]:
        store = self.store
        return await self.runner.read(store.campaign_with_gateways, campaign_id)

    async def _save(
        self, before: CampaignRecord, after: CampaignRecord, offered: Mapping[str, datetime]
    ) -> bool:
        store = self.store
        saved = await self.runner.write(
            store.save_campaign, after, expected_revision=before.revision, offered=offered
        )
        if not saved:
            log.info("campaign %s changed elsewhere; this pass gives way", before.campaign_id)
        if after.status not in LIVE:
            self._forget(after.campaign_id)
        return saved

    def _forget(self, campaign_id: str) -> None:
        for key in [k for k in self._sent if k[0] == campaign_id]:
            del self._sent[key]
        if len(self._cancels) > 10_000:
            # Streams come and go: keep the memory of cancels sent bounded.
            self._cancels.clear()


def _updated(
    record: CampaignRecord, state: CampaignState, reasons: Sequence[Note], now: datetime
) -> CampaignRecord:
    return replace(
        record,
        status=state.status.value,
        wave=state.wave,
        acknowledged=tuple(sorted(state.acknowledged)),
        history=tuple(state.history),
        reasons=tuple(reasons),
        revision=record.revision + 1,
        updated_at=now,
    )


def _changed(before: CampaignRecord, after: CampaignRecord) -> bool:
    return (before.status, before.wave, before.acknowledged, before.history, before.reasons) != (
        after.status,
        after.wave,
        after.acknowledged,
        after.history,
        after.reasons,
    )
