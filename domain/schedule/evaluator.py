"""What one device must do now, and until when: the schedule engine's single entry point.

``evaluate`` is a pure function of (schedule, site, now, overrides, light reading). For
one device it gives the outputs of its kind, where they come from (``source``), and
``next_change``: the next instant the decision can change, so the agent sleeps until then
instead of polling (it re-evaluates sooner when an input changes: a new schedule, a new
override, a light reading).

How each output is decided, first match wins:

1. an active override for the device (:mod:`domain.schedule.override`) decides every output
   of its kind (a signal override without a mode means normal mode; without a plan, the
   controller's own plan);
2. lamps only: the light sensor, while it holds (:mod:`domain.schedule.sensor`), raises the
   level to its own if the schedule's is lower (it never dims lamps that are on);
3. the programs: the latest switch point at or before ``now`` that sets the output, in
   today's program, then carried over from the previous days' programs across midnight,
   going back while each day has a program and at most :data:`LOOKBACK_DAYS` days;
4. the default: lamps on at the default level from sunset to sunrise
   (:mod:`domain.schedule.fallback`), bollards unchanged (``None``: no position is safe to
   assume in every city), signals in normal mode with the controller's own plan.

``source`` is ``"override:<id>"``, ``"sensor"``, ``"program:<id>"`` (the program whose
point set the output) or ``"default"``. ``next_change`` is at most the next local
midnight: a new date may bring another program.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from domain.schedule.errors import EvaluationError
from domain.schedule.fallback import night_lamps_on, night_switches
from domain.schedule.localtime import local_date, next_day_start
from domain.schedule.model import (
    BollardSetting,
    DeviceKind,
    Override,
    Schedule,
    SignalMode,
    Site,
    SwitchPoint,
)
from domain.schedule.override import active_override, override_changes
from domain.schedule.program import day_plan
from domain.schedule.sensor import sensor_holds

LOOKBACK_DAYS = 7
DEFAULT_SOURCE = "default"
SENSOR_SOURCE = "sensor"

_T = TypeVar("_T")


@dataclass(frozen=True)
class Decision:
    """What a device must do from now until ``next_change``.

    Attributes:
        kind: the device's kind.
        device_id: the device.
        lamp_level: lamps: level 0..100 (always set); other kinds: None.
        bollard: bollards: the setting to apply, None for "no change"; others: None.
        signal_mode: signals: the mode (always set); others: None.
        signal_plan: signals: the timing plan id, None for "the controller's own".
        source: ``override:<id>``, ``sensor``, ``program:<id>`` or ``default``.
        next_change: UTC instant after which the decision may differ.
        sensor_holding: lamps: whether the light sensor holds the lamps on (pass it back
            as ``sensor_holding`` on the next call).
    """

    kind: DeviceKind
    device_id: str
    lamp_level: int | None
    bollard: BollardSetting | None
    signal_mode: SignalMode | None
    signal_plan: str | None
    source: str
    next_change: datetime
    sensor_holding: bool = False


@dataclass(frozen=True)
class _State:
    lamp_level: int | None = None
    bollard: BollardSetting | None = None
    signal_mode: SignalMode | None = None
    signal_plan: str | None = None
    source: str = DEFAULT_SOURCE
    sensor_holding: bool = False


@dataclass(frozen=True)
class _Inputs:
    schedule: Schedule | None
    site: Site
    kind: DeviceKind
    device_id: str
    overrides: tuple[Override, ...]
    lux: float | None
    sensor_holding: bool


def evaluate(
    schedule: Schedule | None,
    site: Site,
    now: datetime,
    *,
    kind: DeviceKind,
    device_id: str,
    overrides: Iterable[Override] = (),
    lux: float | None = None,
    sensor_holding: bool = False,
) -> Decision:
    """Decide what device ``device_id`` of ``kind`` must do at ``now``.

    Args:
        schedule: the site's validated schedule, or None if the gateway holds none.
        site: the site's coordinates and zone.
        now: the current instant (timezone-aware).
        kind: lamp, bollard or signal.
        device_id: the device, matched against overrides' ``device_ids``.
        overrides: the overrides the gateway holds (expired or future ones are fine).
        lux: the latest ambient light reading, if the site has a sensor.
        sensor_holding: the previous decision's ``sensor_holding``.

    Returns:
        The decision, with ``next_change`` strictly after ``now``.

    Raises:
        EvaluationError: ``now`` is naive, or ``kind`` has no scheduled outputs.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise EvaluationError("now", "must be timezone-aware")
    if kind is DeviceKind.CABINET:
        raise EvaluationError("kind", "cabinets have no scheduled outputs")
    now = now.astimezone(UTC)
    inputs = _Inputs(
        schedule=schedule,
        site=site,
        kind=kind,
        device_id=device_id,
        overrides=tuple(o for o in overrides if o.applies_to(kind, device_id)),
        lux=lux,
        sensor_holding=sensor_holding,
    )
    state = _state(inputs, now)
    return Decision(
        kind=kind,
        device_id=device_id,
        lamp_level=state.lamp_level,
        bollard=state.bollard,
        signal_mode=state.signal_mode,
        signal_plan=state.signal_plan,
        source=state.source,
        next_change=_next_change(inputs, now, state),
        sensor_holding=state.sensor_holding,
    )


def _state(inputs: _Inputs, now: datetime) -> _State:
    override = active_override(inputs.overrides, inputs.kind, inputs.device_id, now)
    if inputs.kind is DeviceKind.LAMP:
        return _lamp_state(inputs, now, override)
    if override is not None and inputs.kind is DeviceKind.BOLLARD:
        return _State(bollard=override.bollard, source=f"override:{override.id}")
    if override is not None:
        return _State(
            signal_mode=override.signal_mode or SignalMode.NORMAL,
            signal_plan=override.signal_plan,
            source=f"override:{override.id}",
        )
    if inputs.kind is DeviceKind.BOLLARD:
        bollard = _last_set(inputs, now, lambda point: point.bollard)
        if bollard is None:
            return _State()
        return _State(bollard=bollard[0], source=f"program:{bollard[1]}")
    mode = _last_set(inputs, now, lambda point: point.signal_mode)
    plan = _last_set(inputs, now, lambda point: point.signal_plan)
    setter = mode or plan
    return _State(
        signal_mode=SignalMode.NORMAL if mode is None else mode[0],
        signal_plan=None if plan is None else plan[0],
        source=DEFAULT_SOURCE if setter is None else f"program:{setter[1]}",
    )


def _lamp_state(inputs: _Inputs, now: datetime, override: Override | None) -> _State:
    schedule = inputs.schedule
    sensor = None if schedule is None else schedule.light_sensor
    holding = sensor_holds(sensor, inputs.lux, inputs.sensor_holding)
    if override is not None and override.lamp_level is not None:
        return _State(
            lamp_level=override.lamp_level,
            source=f"override:{override.id}",
            sensor_holding=holding,
        )
    default_level = 100 if schedule is None else schedule.default_lamp_level
    carried = _last_set(inputs, now, lambda point: point.lamp_level)
    if carried is not None:
        level, source = carried[0], f"program:{carried[1]}"
    else:
        level = default_level if night_lamps_on(inputs.site, now) else 0
        source = DEFAULT_SOURCE
    if sensor is not None and holding:
        sensor_level = sensor.lamp_level or default_level
        if sensor_level > level:
            level, source = sensor_level, SENSOR_SOURCE
    return _State(lamp_level=level, source=source, sensor_holding=holding)


def _last_set(
    inputs: _Inputs, now: datetime, pick: Callable[[SwitchPoint], _T | None]
) -> tuple[_T, str] | None:
    """The value the programs last gave an output at or before ``now``, and its program."""
    if inputs.schedule is None:
        return None
    today = local_date(now, inputs.site.zone)
    for back in range(LOOKBACK_DAYS + 1):
        plan = day_plan(inputs.schedule, inputs.site, today - timedelta(days=back))
        if plan.program is None:
            return None
        for timed in reversed(plan.points):
            if timed.at <= now:
                value = pick(timed.point)
                if value is not None:
                    return value, timed.program_id
    return None


def _next_change(inputs: _Inputs, now: datetime, current: _State) -> datetime:
    """The first instant after ``now`` at which the state differs, else the next midnight."""
    midnight = next_day_start(now, inputs.site.zone)
    candidates = set(override_changes(inputs.overrides, inputs.kind, inputs.device_id, now))
    today = local_date(now, inputs.site.zone)
    if inputs.schedule is not None:
        plan = day_plan(inputs.schedule, inputs.site, today)
        candidates.update(timed.at for timed in plan.points if timed.at > now)
    if inputs.kind is DeviceKind.LAMP:
        candidates.update(at for at, _ in night_switches(inputs.site, today) if at > now)
    # Between two consecutive candidates nothing the state depends on moves, so the first
    # candidate where the state differs is exactly when the decision changes.
    for at in sorted(candidates):
        if at >= midnight:
            break
        if _state(inputs, at) != current:
            return at
    return midnight
