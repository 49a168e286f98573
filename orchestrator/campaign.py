"""Firmware campaigns: who is offered a release when (a pure core, after Eclipse hawkBit).

A campaign targets an already resolved list of gateways and opens them in *waves* given as
cumulative percentages of the target (1, 10, 50, 100 by default): canary first. The
assignment is deterministic: gateways tagged ``canary`` first, then the others in the
order of SHA-256(campaign id, gateway id), so the same campaign always picks the same
gateways, and different campaigns spread the risk over different ones.

:func:`decide` is a function of (state, reports, now) and returns the gateways to offer the
release to now, the campaign's status and the reasons, with the next state:

- reports are merged idempotently: a report older than the one held, or than the offer,
  changes nothing, so replaying the same outcomes is harmless;
- a wave whose fraction of FAILED/ROLLED_BACK/REFUSED gateways exceeds its error threshold
  HALTS the whole campaign (no more offers to anyone) until an operator resumes it, which
  acknowledges the failures seen so far;
- the next wave opens only once the current one has at least its success threshold of
  COMMITTED gateways; the campaign is COMPLETED when the last wave has;
- a gateway of an open wave is offered only inside its site's maintenance window (local
  time of the site) and, with ``daylight_only``, a gateway that drives lamps only between
  sunrise + margin and sunset - margin: lamps are not updated at night.

PAUSED stops new offers (reports still count); ABORTED is final (the emergency stop).
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta

from edge.firmware.version import VersionError, parse_version
from edge.schedule.astronomy import Daylight, sun_day
from edge.schedule.errors import SiteError
from edge.schedule.model import Site

_WINDOW = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)")
_NAMED = 3


class CampaignError(Exception):
    """A campaign plan or operator action is invalid; nothing was changed.

    Attributes:
        field: e.g. ``waves[2].percent``, ``gateways[4].time_zone``, ``status``.
        reason: why.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class CampaignStatus(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    ABORTED = "aborted"
    COMPLETED = "completed"


class Outcome(enum.Enum):
    """Where a gateway stands, named after ``FirmwareStage`` (without its prefix)."""

    DOWNLOADING = 1
    VERIFIED = 2
    INSTALLED = 3
    REBOOTING = 4
    COMMITTED = 5
    ROLLED_BACK = 6
    REFUSED = 7
    FAILED = 8

    @classmethod
    def from_stage(cls, stage: int) -> Outcome | None:
        """The outcome for a ``FirmwareStage`` value (``None`` for UNSPECIFIED/unknown)."""
        try:
            return cls(stage)
        except ValueError:
            return None

    @property
    def failed(self) -> bool:
        return self in (Outcome.ROLLED_BACK, Outcome.REFUSED, Outcome.FAILED)


@dataclass(frozen=True)
class GatewayReport:
    """The latest progress a gateway reported for this campaign."""

    outcome: Outcome
    at: datetime
    detail: str = ""


@dataclass(frozen=True)
class TargetGateway:
    """A gateway of the campaign's target, with what the rollout rules need to know."""

    id: str
    commune: str
    latitude: float
    longitude: float
    time_zone: str
    has_lamps: bool
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Wave:
    """A wave: cumulative ``percent`` of the target, and its thresholds (fractions 0..1)."""

    percent: float
    success_threshold: float = 0.9
    error_threshold: float = 0.1


@dataclass(frozen=True)
class Window:
    """A daily maintenance window in the site's local time; may wrap past midnight."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Window:
        """Parse ``"HH:MM-HH:MM"``.

        Raises:
            CampaignError: malformed or empty window (field ``window``).
        """
        match = _WINDOW.fullmatch(text.strip())
        if match is None:
            raise CampaignError("window", f"{text!r} is not like 10:00-16:00")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if (h1, m1) == (h2, m2):
            raise CampaignError("window", f"{text!r} is empty")
        return cls(time(h1, m1), time(h2, m2))

    def contains(self, local: time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


DEFAULT_WAVES = (Wave(1), Wave(10), Wave(50), Wave(100))


@dataclass(frozen=True)
class CampaignPlan:
    """What an operator asked for. Validated by :func:`start_campaign`."""

    campaign_id: str
    version: str
    gateways: tuple[TargetGateway, ...]
    waves: tuple[Wave, ...] = DEFAULT_WAVES
    window: Window | None = None
    site_windows: Mapping[str, Window] = field(default_factory=dict)
    daylight_only: bool = True
    daylight_margin: timedelta = timedelta(hours=1)
    canary_tag: str = "canary"


@dataclass(frozen=True)
class CampaignState:
    """Everything :func:`decide` needs; persisted by the caller between calls."""

    plan: CampaignPlan
    status: CampaignStatus
    wave: int
    waves: tuple[tuple[str, ...], ...]
    offered: Mapping[str, datetime] = field(default_factory=dict)
    reports: Mapping[str, GatewayReport] = field(default_factory=dict)
    acknowledged: frozenset[str] = frozenset()
    history: tuple[str, ...] = ()

    def in_flight(self) -> list[str]:
        """Gateways offered the release that have not reached an end (to re-offer on
        reconnection)."""
        return [
            g
            for g in self.offered
            if g not in self.reports
            or not (self.reports[g].outcome.failed or self.reports[g].outcome is Outcome.COMMITTED)
        ]


@dataclass(frozen=True)
class Decision:
    """What to do now: offer the release to ``offer_to``; ``state`` is the next state."""

    offer_to: list[str]
    status: CampaignStatus
    reasons: list[str]
    state: CampaignState


def start_campaign(plan: CampaignPlan, now: datetime) -> CampaignState:
    """Validate ``plan`` and assign its gateways to waves.

    Raises:
        CampaignError: naming the first invalid field.
    """
    _validate(plan)
    waves = assign_waves(plan)
    sizes = ", ".join(str(len(w)) for w in waves)
    return CampaignState(
        plan,
        CampaignStatus.RUNNING,
        0,
        waves,
        history=(f"{now:%Y-%m-%dT%H:%MZ} started; waves of {sizes}",),
    )


def assign_waves(plan: CampaignPlan) -> tuple[tuple[str, ...], ...]:
    """Split the target into waves (deterministic; canary-tagged gateways first)."""

    def rank(gateway: TargetGateway) -> tuple[bool, str]:
        digest = hashlib.sha256(f"{plan.campaign_id}\0{gateway.id}".encode()).hexdigest()
        return (plan.canary_tag not in gateway.tags, digest)

    order = [g.id for g in sorted(plan.gateways, key=rank)]
    waves: list[tuple[str, ...]] = []
    taken = 0
    for wave in plan.waves:
        upto = min(len(order), math.ceil(len(order) * wave.percent / 100 - 1e-9))
        waves.append(tuple(order[taken:upto]))
        taken = max(taken, upto)
    return tuple(waves)


def pause(state: CampaignState, now: datetime, reason: str = "") -> CampaignState:
    """Stop new offers until :func:`resume` (reports keep counting).

    Raises:
        CampaignError: the campaign is not running.
    """
    _require(state, (CampaignStatus.RUNNING,), "pause")
    return _moved(state, CampaignStatus.PAUSED, now, f"paused{': ' + reason if reason else ''}")


def resume(state: CampaignState, now: datetime) -> CampaignState:
    """Resume a paused or halted campaign; a halt's failures are acknowledged.

    Raises:
        CampaignError: the campaign is neither paused nor halted.
    """
    _require(state, (CampaignStatus.PAUSED, CampaignStatus.HALTED), "resume")
    failed = frozenset(g for g, r in state.reports.items() if r.outcome.failed)
    resumed = replace(state, acknowledged=state.acknowledged | failed)
    note = f"resumed; {len(failed - state.acknowledged)} failure(s) acknowledged"
    return _moved(resumed, CampaignStatus.RUNNING, now, note)


def abort(state: CampaignState, now: datetime, reason: str = "") -> CampaignState:
    """Stop the campaign for good (emergency stop).

    Raises:
        CampaignError: the campaign already ended.
    """
    live = (CampaignStatus.RUNNING, CampaignStatus.PAUSED, CampaignStatus.HALTED)
    _require(state, live, "abort")
    return _moved(state, CampaignStatus.ABORTED, now, f"aborted{': ' + reason if reason else ''}")


def decide(
    state: CampaignState, gateway_outcomes: Mapping[str, GatewayReport], now: datetime
) -> Decision:
    """Merge the latest reports, apply the thresholds and pick whom to offer the release now.

    Args:
        state: the campaign as last returned.
        gateway_outcomes: the latest report of each gateway (older ones are ignored).
        now: the current instant (timezone-aware).
    """
    reasons: list[str] = []
    state = _merge(state, gateway_outcomes, reasons)
    if state.status in (CampaignStatus.ABORTED, CampaignStatus.COMPLETED):
        return Decision([], state.status, [*reasons, f"campaign {state.status.value}"], state)

    if state.status is not CampaignStatus.HALTED:
        for index in range(state.wave + 1):
            breach = _error_breach(state, index)
            if breach:
                state = _moved(state, CampaignStatus.HALTED, now, breach)
                reasons.append(breach)
                break
    if state.status is not CampaignStatus.RUNNING:
        reasons.append(f"campaign {state.status.value}: no new offers")
        return Decision([], state.status, reasons, state)

    while _succeeded(state, state.wave):
        committed, size = _count(state, state.wave, Outcome.COMMITTED)
        done = f"wave {state.wave + 1} reached {committed}/{size} committed"
        if state.wave + 1 == len(state.waves):
            state = _moved(state, CampaignStatus.COMPLETED, now, done)
            reasons.append(f"{done}: campaign completed")
            return Decision([], state.status, reasons, state)
        state = replace(state, wave=state.wave + 1)
        reasons.append(f"{done}: wave {state.wave + 1} opens")

    offer, waiting = _offers(state, now)
    for why, gateways in waiting.items():
        reasons.append(f"{len(gateways)} gateway(s) wait, {why}: {_names(gateways)}")
    if offer:
        offered = {**state.offered, **dict.fromkeys(offer, now)}
        state = replace(state, offered=offered)
        reasons.append(f"offering {state.plan.version} to {len(offer)} gateway(s): {_names(offer)}")
    return Decision(offer, state.status, reasons, state)


def window_open(plan: CampaignPlan, gateway: TargetGateway, now: datetime) -> str | None:
    """``None`` if ``gateway`` may start updating at ``now``, else why it must wait."""
    site = Site(gateway.latitude, gateway.longitude, gateway.time_zone)
    local = now.astimezone(site.zone)
    window = plan.site_windows.get(gateway.id, plan.window)
    if window is not None and not window.contains(local.time()):
        return f"outside the maintenance window {window} ({gateway.time_zone})"
    if not (plan.daylight_only and gateway.has_lamps):
        return None
    day = sun_day(site, local.date())
    if day.daylight is Daylight.POLAR_DAY and day.sunrise is None and day.sunset is None:
        return None
    if day.sunrise is None or day.sunset is None:
        return "lamps are not updated at night (no daylight at the site today)"
    margin = plan.daylight_margin
    if not day.sunrise + margin <= now <= day.sunset - margin:
        opens = (day.sunrise + margin).astimezone(site.zone)
        closes = (day.sunset - margin).astimezone(site.zone)
        return f"lamps are not updated at night (daylight window {opens:%H:%M}-{closes:%H:%M})"
    return None


def _merge(
    state: CampaignState, outcomes: Mapping[str, GatewayReport], reasons: list[str]
) -> CampaignState:
    targets = {g.id for g in state.plan.gateways}
    reports = dict(state.reports)
    offered = dict(state.offered)
    for gateway_id, report in outcomes.items():
        if gateway_id not in targets:
            reasons.append(f"ignored a report from {gateway_id}: not a target of this campaign")
            continue
        held = reports.get(gateway_id)
        if held is not None and (held.at, held.outcome.value) >= (report.at, report.outcome.value):
            continue
        if gateway_id in offered and report.at < offered[gateway_id]:
            continue
        # A report from a gateway we have no offer for: the offer went out but its record
        # was lost (e.g. a crash before saving); count it from when it reported.
        offered.setdefault(gateway_id, report.at)
        reports[gateway_id] = report
    return replace(state, reports=reports, offered=offered)


def _count(state: CampaignState, index: int, outcome: Outcome) -> tuple[int, int]:
    wave = state.waves[index]
    hits = sum(1 for g in wave if g in state.reports and state.reports[g].outcome is outcome)
    return hits, len(wave)


def _succeeded(state: CampaignState, index: int) -> bool:
    committed, size = _count(state, index, Outcome.COMMITTED)
    threshold = state.plan.waves[index].success_threshold
    return size == 0 or committed >= threshold * size - 1e-9


def _error_breach(state: CampaignState, index: int) -> str | None:
    wave = state.waves[index]
    failed = [
        g
        for g in wave
        if g in state.reports and state.reports[g].outcome.failed and g not in state.acknowledged
    ]
    threshold = state.plan.waves[index].error_threshold
    if not wave or len(failed) / len(wave) <= threshold + 1e-9:
        return None
    details = "; ".join(
        f"{g} {state.reports[g].outcome.name.lower()}"
        + (f" ({state.reports[g].detail})" if state.reports[g].detail else "")
        for g in failed[:_NAMED]
    )
    return (
        f"halted: wave {index + 1} has {len(failed)}/{len(wave)} gateways failed, above its"
        f" error threshold of {threshold:.0%}: {details}"
    )


def _offers(state: CampaignState, now: datetime) -> tuple[list[str], dict[str, list[str]]]:
    by_id = {g.id: g for g in state.plan.gateways}
    offer: list[str] = []
    waiting: dict[str, list[str]] = {}
    for index in range(state.wave + 1):
        for gateway_id in state.waves[index]:
            if gateway_id in state.offered:
                continue
            why = window_open(state.plan, by_id[gateway_id], now)
            if why is None:
                offer.append(gateway_id)
            else:
                waiting.setdefault(why, []).append(gateway_id)
    return offer, waiting


def _moved(state: CampaignState, status: CampaignStatus, now: datetime, note: str) -> CampaignState:
    return replace(state, status=status, history=(*state.history, f"{now:%Y-%m-%dT%H:%MZ} {note}"))


def _require(state: CampaignState, allowed: Iterable[CampaignStatus], action: str) -> None:
    if state.status not in tuple(allowed):
        raise CampaignError("status", f"cannot {action} a {state.status.value} campaign")


def _names(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_NAMED])
    return shown + (f" and {len(ids) - _NAMED} more" if len(ids) > _NAMED else "")


def _validate(plan: CampaignPlan) -> None:
    if not plan.campaign_id:
        raise CampaignError("campaign_id", "must not be empty")
    try:
        parse_version(plan.version)
    except VersionError as exc:
        raise CampaignError("version", str(exc)) from exc
    if not plan.gateways:
        raise CampaignError("gateways", "the target is empty")
    seen: set[str] = set()
    for index, gateway in enumerate(plan.gateways):
        if not gateway.id or gateway.id in seen:
            raise CampaignError(f"gateways[{index}].id", f"{gateway.id!r} is empty or repeated")
        seen.add(gateway.id)
        try:
            Site(gateway.latitude, gateway.longitude, gateway.time_zone)
        except SiteError as exc:
            raise CampaignError(f"gateways[{index}].{exc.field}", exc.reason) from exc
    if not plan.waves:
        raise CampaignError("waves", "at least one wave is needed")
    previous = 0.0
    for index, wave in enumerate(plan.waves):
        if not previous < wave.percent <= 100:
            raise CampaignError(
                f"waves[{index}].percent", "must grow strictly, within 0 (excluded) to 100"
            )
        previous = wave.percent
        for name in ("success_threshold", "error_threshold"):
            value = getattr(wave, name)
            if not 0 <= value <= 1:
                raise CampaignError(f"waves[{index}].{name}", "must be a fraction from 0 to 1")
    if plan.waves[-1].percent != 100:
        raise CampaignError(f"waves[{len(plan.waves) - 1}].percent", "the last wave must be 100")
    unknown = sorted(set(plan.site_windows) - seen)
    if unknown:
        raise CampaignError(f"site_windows[{unknown[0]}]", "not a gateway of the target")
    if plan.daylight_margin < timedelta(0):
        raise CampaignError("daylight_margin", "must not be negative")
