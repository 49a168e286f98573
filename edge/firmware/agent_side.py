"""What the running agent does about firmware: take offers, confirm a new release, report.

- **Offers** arrive on the link; :meth:`AgentFirmware.offer` runs
  :func:`~edge.firmware.update.apply_offer` in the background (the street keeps running),
  as a task the agent's supervisor owns (a failure it does not handle is alarmed there),
  downloading on the link's channel (:mod:`edge.firmware.grpc_fetcher`). A cut download is
  retried with jittered backoff and resumes where the durable data ends; one that still
  fails is left for the orchestrator's next offer, which resumes it too. A part whose hash
  does not match is refused at once: over mutual TLS it cannot be line noise.
- **The running version** is the one this process was started with (what the launcher
  booted, :func:`edge.firmware.launch.running_release`), fixed for its life: a trial rolled
  back under a running process does not make that process run another version.
- **Offers are answered, never reapplied**: during a trial, or in a process whose trial was
  just rolled back (it is restarting; the next start answers), an offer is ignored; an offer
  is answered only once its manifest verifies (pinned signature, form, expiry) and names
  the version offered: ROLLED_BACK with the reason for a release this gateway already
  rolled back in the same campaign, COMMITTED for the version running. So the orchestrator
  may repeat offers freely, and an unsigned version string proves nothing.
- **Cancel**: :meth:`AgentFirmware.cancel` stops an update of that campaign before the
  point of no return (the switch to the new slot) and answers CANCELLED; past it, it
  answers with the stage reached and the update goes on to its outcome.
- **At start-up**, :meth:`AgentFirmware.start_up` runs the trial's health checks and
  stability period (:func:`~edge.firmware.boot.confirm_trial`): commit, or roll back and
  restart. A rollback is reported by the next start, which runs the version rolled back
  to. A committed release that has run the stability period is marked stable for the
  launcher's crash-loop watch.
- **Outcomes** (COMMITTED, ROLLED_BACK, REFUSED, FAILED, CANCELLED) go two ways: a
  ``FirmwareProgress`` on the link (fast, lost if the link drops) and an event in the
  durable outbox (``firmware.<outcome>``, with the campaign id), which reaches the
  orchestrator exactly once whatever happens. Progress stages go on the link only.

The restart is the supervisor's (systemd ``Restart=always``): the agent terminates itself
a moment after reporting REBOOTING. Tests and the bench replace ``request_restart`` and
play the supervisor: stop the Agent, run the launcher's boot step
(:func:`~edge.firmware.launch.exec_plan`) on the same state directory, start a new Agent
with the environment the launcher would give it. Such an in-process "restart" still runs
the base code; the version it reports is the one the launcher booted.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from domain.firmware.errors import DownloadError, FirmwareRefused
from domain.firmware.manifest import pinned_key_bytes, verify_signed
from edge.config import FirmwareConfig
from edge.events import EquipmentEvent, Priority
from edge.firmware.boot import (
    HealthCheck,
    TrialResult,
    Verdict,
    confirm_trial,
    restart_via_supervisor,
)
from edge.firmware.download import (
    ChunkFetcher,
    DownloadLimits,
    FreeSpace,
    free_bytes,
    prune_downloads,
)
from edge.firmware.grpc_fetcher import ChannelSource, GrpcChunkFetcher
from edge.firmware.slots import SlotStore
from edge.firmware.update import Gate, TrustPolicy, apply_offer, pending_report
from edge.supervisor import Child, Spawn
from foundation.clock import Clock
from foundation.escaping import escape
from protos.ondijon.v1 import firmware_pb2

log = logging.getLogger("ondijon.edge.firmware")

Stage = firmware_pb2.FirmwareStage
OUTCOME_EVENTS = {
    firmware_pb2.FIRMWARE_STAGE_COMMITTED: ("firmware.committed", Priority.EVENT),
    firmware_pb2.FIRMWARE_STAGE_ROLLED_BACK: ("firmware.rolled_back", Priority.ALARM),
    firmware_pb2.FIRMWARE_STAGE_REFUSED: ("firmware.refused", Priority.ALARM),
    firmware_pb2.FIRMWARE_STAGE_FAILED: ("firmware.failed", Priority.ALARM),
    firmware_pb2.FIRMWARE_STAGE_CANCELLED: ("firmware.cancelled", Priority.EVENT),
}

FetcherFactory = Callable[[ChannelSource, str], ChunkFetcher]


@dataclass(frozen=True)
class RetryPolicy:
    """How a cut download is retried before waiting for the next offer.

    Attributes:
        attempts: downloads tried per offer.
        base_s: first delay; doubles every attempt (full jitter), up to ``cap_s``.
        cap_s: longest delay.
    """

    attempts: int = 6
    base_s: float = 2.0
    cap_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.cap_s, self.base_s * 2**attempt))


class AgentFirmware:
    """The agent's firmware glue (one per agent)."""

    def __init__(
        self,
        config: FirmwareConfig | None,
        *,
        clock: Clock,
        running_version: str,
        channel: ChannelSource,
        send: Callable[[firmware_pb2.FirmwareProgress], bool],
        record: Callable[[EquipmentEvent], None],
        spawn: Spawn,
        request_restart: Callable[[], None] = restart_via_supervisor,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        fetcher: FetcherFactory = GrpcChunkFetcher,
        restart_grace_s: float = 1.0,
        limits: DownloadLimits | None = None,
        free: FreeSpace = free_bytes,
    ) -> None:
        """Args:
        config: the ``[firmware]`` section (``None``: offers are refused).
        clock: the agent's clock (expiry checks, health-check deadline, stability).
        running_version: the version this process runs (what the launcher booted).
        channel: the link's current channel.
        send: puts a progress message on the link; ``False`` when the link is down.
        record: makes an event durable in the outbox.
        spawn: the owner of the task that takes an offer (the agent's supervisor): a
            failure the task does not handle itself is logged and alarmed there, and the
            task ends with the agent.
        request_restart: asks the supervisor for a restart.
        retry: how cut downloads are retried.
        sleep: waits between retries (real time: the network is real).
        rng: jitter source.
        fetcher: makes the fetcher of a release (the gRPC one by default).
        restart_grace_s: time given to the link to send REBOOTING before the restart.
        limits: download and disk limits.
        free: measures free disk space.
        """
        self.config = config
        self.clock = clock
        self.running_version = running_version
        self.channel = channel
        self.send = send
        self.record = record
        self.spawn = spawn
        self.request_restart = request_restart
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.fetcher = fetcher
        self.restart_grace_s = restart_grace_s
        self.limits = limits or DownloadLimits()
        self.free = free
        self.store = SlotStore(config.state_dir) if config is not None else None
        self.trust: TrustPolicy | None = None
        self.trust_error = "firmware updates are not configured on this gateway ([firmware])"
        if config is not None:
            self._load_trust(config)
        self.task: asyncio.Task[None] | None = None
        # The offer being taken and its point of no return.
        self.taking: firmware_pb2.FirmwareOffer | None = None
        self.gate = Gate()
        self._cancelled = asyncio.Event()
        # Set once this process rolled its trial back: it only waits for its restart.
        self.restarting = False
        self._unsent: list[firmware_pb2.FirmwareProgress] = []
        self._last: firmware_pb2.FirmwareProgress | None = None

    def _load_trust(self, config: FirmwareConfig) -> None:
        pems = []
        for index, path in enumerate(config.release_keys):
            try:
                pems.append(path.read_bytes())
            except OSError as exc:
                self.trust_error = f"firmware.release_keys[{index}]: cannot read {path}: {exc}"
                return
        try:
            keys = pinned_key_bytes(pems)
        except FirmwareRefused as exc:
            # A bad key file must not stop the street: offers are refused, saying why.
            self.trust_error = f"firmware.release_keys: {exc}"
            return
        self.trust = TrustPolicy(keys, config.signature_threshold)

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    # -- start-up -------------------------------------------------------------------------

    async def start_up(self, checks: Mapping[str, HealthCheck]) -> TrialResult | None:
        """Commit or roll back a trial, then report the outcome of the last one."""
        if self.store is None or self.config is None:
            return None
        stability = timedelta(seconds=self.config.stability_s)
        result = await confirm_trial(
            self.store,
            checks,
            self.clock,
            deadline=timedelta(seconds=self.config.health_deadline_s),
            interval=timedelta(seconds=self.config.health_interval_s),
            stability=stability,
            request_restart=self._restart_soon,
        )
        if result.verdict is not None:
            log.info("firmware trial: %s (%s)", result.verdict.value, result.reason)
        if result.verdict is Verdict.ROLL_BACK:
            # This process still runs the release it rolled back: the next start, which runs
            # the version rolled back to, reports the outcome with the version it runs.
            self.restarting = True
            return result
        progress = pending_report(self.store, self.running_version)
        if progress is not None:
            self._record_outcome(progress)
            # The outbox now holds it durably: the orchestrator will get it.
            await asyncio.to_thread(self.store.mark_reported)
            self._unsent.append(progress)
            self.on_connected()
        return result

    async def watch_stability(self) -> None:
        """After :meth:`start_up`: once this start has run the stability period, it no longer
        counts towards a crash loop of the committed release (edge.firmware.boot)."""
        if self.store is None or self.config is None or self.restarting:
            return
        await self.clock.sleep(self.config.stability_s)
        if not self.restarting:
            await asyncio.to_thread(self.store.mark_stable)

    def stopped_cleanly(self) -> None:
        """The agent is stopping on request (not crashing): this start is no crash loop."""
        if self.store is not None and not self.restarting:
            self.store.mark_stable()

    def on_connected(self) -> None:
        """The link is up: send outcomes it missed (the fast path; the outbox has them)."""
        while self._unsent and self.send(self._unsent[0]):
            self._unsent.pop(0)

    # -- offers ---------------------------------------------------------------------------

    def offer(self, offer: firmware_pb2.FirmwareOffer) -> None:
        """Take an offer in the background (ignored while another one is being taken)."""
        if self.busy:
            log.info(
                "firmware offer of %s ignored: an update is in progress", escape(offer.version)
            )
            return
        self.taking = offer
        self.gate = Gate()
        self._cancelled = asyncio.Event()
        self.task = self.spawn(Child("firmware offer", lambda: self._take(offer), restart=False))

    def cancel(self, cancel: firmware_pb2.FirmwareCancel) -> None:
        """Stop the update of ``cancel.campaign_id`` unless it is past the point of no return,
        and say where it stands."""
        taking = self.taking
        if self.busy and taking is not None and taking.campaign_id == cancel.campaign_id:
            if self.gate.cancel(cancel.reason):
                # The update stops at its next step and reports CANCELLED itself.
                self._cancelled.set()
                return
            last = self._last
            self.send(
                self._progress(
                    taking,
                    last.stage if last is not None else firmware_pb2.FIRMWARE_STAGE_REBOOTING,
                    "past the point of no return: the update goes on to its outcome",
                )
            )
            return
        standing = self._standing(cancel)
        self.send(standing)
        if standing.stage == firmware_pb2.FIRMWARE_STAGE_CANCELLED:
            self._record_outcome(standing)

    def _standing(self, cancel: firmware_pb2.FirmwareCancel) -> firmware_pb2.FirmwareProgress:
        """Where this gateway stands on a cancelled campaign it is not updating for now."""
        offer = firmware_pb2.FirmwareOffer(campaign_id=cancel.campaign_id, version=cancel.version)
        state = self.store.read() if self.store is not None else None
        if state is not None and state.campaign_id == cancel.campaign_id:
            if state.trial is not None or self.restarting:
                return self._progress(
                    offer,
                    firmware_pb2.FIRMWARE_STAGE_REBOOTING,
                    "past the point of no return: the trial goes on to its outcome",
                )
            outcome = state.last_outcome
            if outcome is not None and outcome.campaign_id == cancel.campaign_id:
                stage = (
                    firmware_pb2.FIRMWARE_STAGE_COMMITTED
                    if outcome.result == "committed"
                    else firmware_pb2.FIRMWARE_STAGE_ROLLED_BACK
                )
                return self._progress(offer, stage, outcome.reason)
        if self.store is not None and not self.busy:
            # What a download cut short by a restart left behind is of no use now.
            prune_downloads(self.store.state_dir / "downloads")
        return self._progress(
            offer,
            firmware_pb2.FIRMWARE_STAGE_CANCELLED,
            f"nothing in progress for this campaign; still running {self.running_version}",
        )

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _take(self, offer: firmware_pb2.FirmwareOffer) -> None:
        try:
            if self._answered(offer):
                return
            await self._apply(offer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("firmware offer of %s failed", escape(offer.version))
            self._finish(offer, firmware_pb2.FIRMWARE_STAGE_FAILED, f"{type(exc).__name__}: {exc}")

    def _answered(self, offer: firmware_pb2.FirmwareOffer) -> bool:
        """Answer an offer that must not be installed; ``True`` if it was."""
        if self.store is None or self.trust is None:
            self._finish(offer, firmware_pb2.FIRMWARE_STAGE_REFUSED, self.trust_error)
            return True
        if self.restarting:
            log.info(
                "firmware offer of %s ignored: restarting after a rollback", escape(offer.version)
            )
            return True
        state = self.store.read()
        if state.trial is not None:
            log.info("firmware offer of %s ignored: a trial is running", escape(offer.version))
            return True
        try:
            # Nothing is answered on the strength of an unsigned version string.
            manifest = verify_signed(
                offer.manifest.manifest,
                list(offer.manifest.signatures),
                self.trust.pinned_keys,
                self.clock.now(),
                self.trust.threshold,
            )
            if manifest.version != offer.version:
                raise FirmwareRefused("offer.version", f"manifest is for {manifest.version}")
        except FirmwareRefused as refused:
            self._finish(offer, firmware_pb2.FIRMWARE_STAGE_REFUSED, str(refused))
            return True
        outcome = state.last_outcome
        if (
            outcome is not None
            and outcome.result == "rolled_back"
            and outcome.version == manifest.version
            and outcome.campaign_id == offer.campaign_id
        ):
            self._report(
                self._progress(offer, firmware_pb2.FIRMWARE_STAGE_ROLLED_BACK, outcome.reason)
            )
            return True
        if manifest.version == self.running_version:
            self._finish(
                offer, firmware_pb2.FIRMWARE_STAGE_COMMITTED, f"{offer.version} is already running"
            )
            return True
        return False

    async def _apply(self, offer: firmware_pb2.FirmwareOffer) -> None:
        assert self.store is not None and self.trust is not None
        gate = self.gate
        for attempt in range(self.retry.attempts):
            try:
                stage = await apply_offer(
                    offer,
                    fetcher=self.fetcher(self.channel, offer.version),
                    store=self.store,
                    trust=self.trust,
                    running_version=self.running_version,
                    clock=self.clock,
                    report=self._report,
                    request_restart=self._restart_soon,
                    limits=self.limits,
                    gate=gate,
                    free=self.free,
                )
            except DownloadError as exc:
                if exc.reason.startswith("SHA-256 does not match"):
                    self._finish(offer, firmware_pb2.FIRMWARE_STAGE_REFUSED, str(exc))
                    return
                done = self._last.bytes_done if self._last is not None else 0
                self._report(
                    self._progress(
                        offer,
                        firmware_pb2.FIRMWARE_STAGE_DOWNLOADING,
                        f"interrupted, will resume: {exc}",
                        done,
                    )
                )
                if attempt + 1 < self.retry.attempts:
                    await self._pause(self.retry.delay(attempt, self.rng))
                if gate.cancelled:
                    self._finish(
                        offer,
                        firmware_pb2.FIRMWARE_STAGE_CANCELLED,
                        "cancelled before the point of no return while the download waited;"
                        f" still running {self.running_version}",
                    )
                    return
                continue
            if stage in (
                firmware_pb2.FIRMWARE_STAGE_REFUSED,
                firmware_pb2.FIRMWARE_STAGE_FAILED,
                firmware_pb2.FIRMWARE_STAGE_CANCELLED,
            ):
                last = self._last
                self._record_outcome(last if last is not None else self._progress(offer, stage))
            return
        log.warning(
            "firmware %s: download keeps failing; waiting for a new offer", escape(offer.version)
        )

    async def _pause(self, seconds: float) -> None:
        """Wait before retrying a download, or less if the update is cancelled meanwhile."""
        sleeper = asyncio.ensure_future(self.sleep(seconds))
        waker = asyncio.ensure_future(self._cancelled.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    # -- reporting ------------------------------------------------------------------------

    def _progress(
        self, offer: firmware_pb2.FirmwareOffer, stage: int, detail: str = "", done: int = 0
    ) -> firmware_pb2.FirmwareProgress:
        return firmware_pb2.FirmwareProgress(
            campaign_id=offer.campaign_id,
            version=offer.version,
            stage=stage,  # type: ignore[arg-type]
            bytes_done=done,
            detail=detail[:1000],
            running_version=self.running_version,
        )

    def _report(self, progress: firmware_pb2.FirmwareProgress) -> None:
        self._last = progress
        self.send(progress)

    def _finish(self, offer: firmware_pb2.FirmwareOffer, stage: int, detail: str) -> None:
        progress = self._progress(offer, stage, detail)
        self._report(progress)
        self._record_outcome(progress)

    def _record_outcome(self, progress: firmware_pb2.FirmwareProgress) -> None:
        kind = OUTCOME_EVENTS.get(progress.stage)
        if kind is None:
            return
        event_type, priority = kind
        self.record(
            EquipmentEvent(
                device_id="",
                type=event_type,
                priority=priority,
                at=self.clock.now(),
                message=progress.detail or Stage.Name(progress.stage),
                attributes={
                    "campaign_id": progress.campaign_id,
                    "version": progress.version,
                    "running_version": progress.running_version,
                },
            )
        )

    def _restart_soon(self) -> None:
        asyncio.get_running_loop().call_later(self.restart_grace_s, self.request_restart)
