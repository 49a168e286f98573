"""Firmware campaigns: who is offered a release when (a pure core, after Eclipse hawkBit).

A campaign targets an already resolved list of gateways and opens them in *waves* given as
cumulative percentages of the target (1, 10, 50, 100 by default): canary first. The
assignment is deterministic: gateways tagged ``canary`` first, then the others in the
order of SHA-256(campaign id, gateway id), so the same campaign always picks the same
gateways, and different campaigns spread the risk over different ones.

:func:`decide` is a function of (state, reports, now) and returns the gateways to offer the
release to now, the campaign's status and the reasons, with the next state:

- reports are merged idempotently: a report older than the one held, or than the offer,
  changes nothing, so replaying the same outcomes is harmless; an outcome is final
  (:func:`replaces`): nothing replaces a failure or a cancel, and a COMMITTED gives way
  only to a failure (a crash loop after the commit);
- a gateway counts as *updated* only when it reported COMMITTED (which an agent does after
  its stability period) **and** its latest hello reports the new version; a COMMITTED
  contradicted by the hello (the gateway runs something else) counts as failed;
- a wave whose fraction of failed gateways (FAILED, ROLLED_BACK, REFUSED, contradicted)
  exceeds its error threshold HALTS the whole campaign (no more offers to anyone) until an
  operator resumes it, which acknowledges the failures seen so far: acknowledged gateways
  leave their wave's count, so a resumed campaign decides on what is left;
- the next wave opens only once the current one has at least its success threshold of
  updated gateways among those not acknowledged; a wave that can no longer reach it (too
  many failures, below the error threshold) HALTS too, saying so; the campaign is
  COMPLETED when the last wave has succeeded;
- a gateway of an open wave is offered only inside its site's maintenance window (local
  time of the site) and, with ``daylight_only``, a gateway that drives lamps only between
  sunrise + margin and sunset - margin: lamps are not updated at night.

PAUSED stops new offers (reports still count); ABORTED is final (the emergency stop): the
runner then cancels what has not passed the point of no return.

Reasons and history are :class:`Note` lines that may name gateways; each reader sees them
rendered within its scope (:meth:`Note.render`): gateways of other communes are neither
named nor counted.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta

# The campaign's vocabulary, shared with the store (domain.firmware.campaign): re-exported.
from domain.firmware.campaign import Note as Note
from domain.firmware.campaign import Outcome as Outcome
from domain.firmware.campaign import note as note
from domain.firmware.campaign import replaces as replaces
from domain.firmware.version import VersionError, parse_version
from domain.schedule.astronomy import Daylight, sun_day
from domain.schedule.errors import SiteError
from domain.schedule.model import Site
from foundation.errors import FieldError

_WINDOW = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)")
_NAMED = 3


class CampaignError(FieldError):
    """A campaign plan or operator action is invalid; nothing was changed.

    Attributes:
        field: e.g. ``waves[2].percent``, ``gateways[4].time_zone``, ``status``.
        reason: why.
    """


class CampaignStatus(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    ABORTED = "aborted"
    COMPLETED = "completed"


@dataclass(frozen=True)
class GatewayReport:
    """The latest progress a gateway reported for this campaign.

    ``hello_version`` is what the gateway's latest hello said it runs (``None``: not known
    from a hello, e.g. balena devices, whose outcome balena decides).
    """

    outcome: Outcome
    at: datetime
    detail: str = ""
    hello_version: str | None = None


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
    history: tuple[Note, ...] = ()

    def in_flight(self) -> list[str]:
        """Gateways offered the release that have not reached an end (to re-offer on
        reconnection)."""
        return [
            g for g in self.offered if g not in self.reports or not self.reports[g].outcome.final
        ]

    def updated(self, gateway_id: str) -> bool:
        """The gateway committed the release and its latest hello says it runs it."""
        report = self.reports.get(gateway_id)
        return (
            report is not None
            and report.outcome is Outcome.COMMITTED
            and report.hello_version in (None, self.plan.version)
        )

    def failed(self, gateway_id: str) -> bool:
        """The gateway failed, or reported COMMITTED while its hello says it runs another
        version (a rolled-back gateway counted as updated is the trap this avoids)."""
        report = self.reports.get(gateway_id)
        if report is None:
            return False
        return report.outcome.failed or (
            report.outcome is Outcome.COMMITTED and not self.updated(gateway_id)
        )

    def why_failed(self, gateway_id: str) -> str:
        report = self.reports[gateway_id]
        if report.outcome is Outcome.COMMITTED:
            return f"reported committed but its hello reports {report.hello_version or 'nothing'}"
        name = report.outcome.name.lower()
        return f"{name}: {report.detail}" if report.detail else name


@dataclass(frozen=True)
class Decision:
    """What to do now: offer the release to ``offer_to``; ``state`` is the next state."""

    offer_to: list[str]
    status: CampaignStatus
    reasons: list[Note]
    state: CampaignState


def start_campaign(plan: CampaignPlan, now: datetime) -> CampaignState:
    """Validate ``plan`` and assign its gateways to waves.

    Raises:
        CampaignError: naming the first invalid field.
    """
    _validate(plan)
    waves = assign_waves(plan)
    return CampaignState(
        plan,
        CampaignStatus.RUNNING,
        0,
        waves,
        history=(Note(f"{_stamp(now)} started; waves of {{sizes}}", waves=waves),),
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
    return _moved(state, CampaignStatus.PAUSED, now, note(f"paused{_because(reason)}"))


def resume(state: CampaignState, now: datetime) -> CampaignState:
    """Resume a paused or halted campaign; a halt's failures are acknowledged and leave
    their wave's count, so the next decision is on what is left.

    Raises:
        CampaignError: the campaign is neither paused nor halted.
    """
    _require(state, (CampaignStatus.PAUSED, CampaignStatus.HALTED), "resume")
    failed = frozenset(g for g in state.reports if state.failed(g))
    new = tuple(sorted(failed - state.acknowledged))
    resumed = replace(state, acknowledged=state.acknowledged | failed)
    text = "resumed; {n} failure(s) acknowledged" + (": {names}" if new else "")
    everyone = tuple(g.id for g in state.plan.gateways)
    line = Note(f"{_stamp(now)} {text}", new, among=everyone)
    return _moved(resumed, CampaignStatus.RUNNING, now, line)


def abort(state: CampaignState, now: datetime, reason: str = "") -> CampaignState:
    """Stop the campaign for good (emergency stop); the history says which gateways had
    passed the point of no return (their update goes on to its outcome).

    Raises:
        CampaignError: the campaign already ended.
    """
    live = (CampaignStatus.RUNNING, CampaignStatus.PAUSED, CampaignStatus.HALTED)
    _require(state, live, "abort")
    aborted = _moved(state, CampaignStatus.ABORTED, now, note(f"aborted{_because(reason)}"))
    past = tuple(
        g for g in state.offered if g in state.reports and _past_point(state.reports[g].outcome)
    )
    if past:
        text = "{n} gateway(s) had passed the point of no return; their update goes on: {names}"
        aborted = replace(aborted, history=(*aborted.history, _stamped(now, text, past)))
    return aborted


def _past_point(outcome: Outcome) -> bool:
    return outcome.past_point_of_no_return


def decide(
    state: CampaignState, gateway_outcomes: Mapping[str, GatewayReport], now: datetime
) -> Decision:
    """Merge the latest reports, apply the thresholds and pick whom to offer the release now.

    Args:
        state: the campaign as last returned.
        gateway_outcomes: the latest report of each gateway (older ones are ignored).
        now: the current instant (timezone-aware).
    """
    reasons: list[Note] = []
    state = _merge(state, gateway_outcomes, reasons)
    if state.status in (CampaignStatus.ABORTED, CampaignStatus.COMPLETED):
        return Decision([], state.status, [*reasons, note(f"campaign {state.status.value}")], state)

    if state.status is not CampaignStatus.HALTED:
        for index in range(state.wave + 1):
            breach = _error_breach(state, index) or _hopeless(state, index)
            if breach:
                state = _moved(state, CampaignStatus.HALTED, now, breach)
                reasons.append(breach)
                break
    if state.status is not CampaignStatus.RUNNING:
        reasons.append(note(f"campaign {state.status.value}: no new offers"))
        return Decision([], state.status, reasons, state)

    while _succeeded(state, state.wave):
        wave = state.waves[state.wave]
        counted = tuple(g for g in wave if g not in state.acknowledged)
        updated = tuple(g for g in counted if state.updated(g))
        done = f"wave {state.wave + 1} reached {{n}}/{{of}} updated"
        if len(counted) < len(wave):
            done += f", {len(wave) - len(counted)} acknowledged failure(s) set aside"
        if state.wave + 1 == len(state.waves):
            line = Note(done + ": campaign completed", updated, among=counted)
            state = _moved(state, CampaignStatus.COMPLETED, now, line)
            reasons.append(line)
            return Decision([], state.status, reasons, state)
        line = Note(done + f": wave {state.wave + 2} opens", updated, among=counted)
        state = _moved(replace(state, wave=state.wave + 1), state.status, now, line)
        reasons.append(line)

    offer, waiting = _offers(state, now)
    for why, gateways in waiting.items():
        reasons.append(Note(f"{{n}} gateway(s) wait, {_brace(why)}: {{names}}", tuple(gateways)))
    if offer:
        offered = {**state.offered, **dict.fromkeys(offer, now)}
        state = replace(state, offered=offered)
        version = _brace(state.plan.version)
        reasons.append(Note(f"offering {version} to {{n}} gateway(s): {{names}}", tuple(offer)))
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
    state: CampaignState, outcomes: Mapping[str, GatewayReport], reasons: list[Note]
) -> CampaignState:
    targets = {g.id for g in state.plan.gateways}
    reports = dict(state.reports)
    offered = dict(state.offered)
    for gateway_id, report in outcomes.items():
        if gateway_id not in targets:
            text = "ignored a report from {names}: not a target of this campaign"
            reasons.append(Note(text, (gateway_id,)))
            continue
        held = reports.get(gateway_id)
        if held is not None and not replaces(held.outcome, report.outcome):
            continue
        if (
            held is not None
            and not held.outcome.final
            and (held.at, held.outcome.value) >= (report.at, report.outcome.value)
        ):
            continue
        if gateway_id in offered and report.at < offered[gateway_id]:
            continue
        # A report from a gateway we have no offer for: the offer went out but its record
        # was lost (e.g. a crash before saving); count it from when it reported.
        offered.setdefault(gateway_id, report.at)
        reports[gateway_id] = report
    return replace(state, reports=reports, offered=offered)


def _succeeded(state: CampaignState, index: int) -> bool:
    """The wave has its success threshold of updated gateways, acknowledged failures
    (set aside by a resume) not counted."""
    counted = [g for g in state.waves[index] if g not in state.acknowledged]
    updated = sum(1 for g in counted if state.updated(g))
    return updated >= _needed(state, index, len(counted))


def _needed(state: CampaignState, index: int, counted: int) -> int:
    return math.ceil(state.plan.waves[index].success_threshold * counted - 1e-9)


def _error_breach(state: CampaignState, index: int) -> Note | None:
    wave = state.waves[index]
    failed = tuple(g for g in wave if state.failed(g) and g not in state.acknowledged)
    threshold = state.plan.waves[index].error_threshold
    if not wave or len(failed) / len(wave) <= threshold + 1e-9:
        return None
    text = (
        f"halted: wave {index + 1} has {{n}}/{{of}} gateways failed, above its error threshold"
        f" of {threshold:.0%}: {{names}}"
    )
    details = tuple((g, state.why_failed(g)) for g in failed)
    return Note(text, failed, among=wave, details=details)


def _hopeless(state: CampaignState, index: int) -> Note | None:
    """The wave can no longer reach its success threshold, failures below the error
    threshold notwithstanding: waiting would be forever."""
    counted = [g for g in state.waves[index] if g not in state.acknowledged]
    failed = tuple(g for g in counted if state.failed(g))
    needed = _needed(state, index, len(counted))
    if not failed or len(counted) - len(failed) >= needed:
        return None
    text = (
        f"halted: wave {index + 1} cannot reach its success threshold: {{n}} of its {{of}}"
        f" gateways failed and {needed} must be updated; resume to set the failures aside:"
        " {names}"
    )
    details = tuple((g, state.why_failed(g)) for g in failed)
    return Note(text, failed, among=tuple(counted), details=details)


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


def _moved(
    state: CampaignState, status: CampaignStatus, now: datetime, line: Note
) -> CampaignState:
    """``state`` in ``status``, with ``line`` in its history (stamped unless it is)."""
    if not line.text.startswith(_stamp(now)):
        line = replace(line, text=f"{_stamp(now)} {line.text}")
    return replace(state, status=status, history=(*state.history, line))


def _stamp(now: datetime) -> str:
    return f"{now:%Y-%m-%dT%H:%MZ}"


def _stamped(now: datetime, text: str, gateways: tuple[str, ...] = ()) -> Note:
    return Note(f"{_stamp(now)} {text}", gateways)


def _brace(text: str) -> str:
    """``text`` for a note template: braces kept as they are."""
    return text.replace("{", "{{").replace("}", "}}")


def _because(reason: str) -> str:
    return f": {reason}" if reason else ""


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
