"""The rules a schedule or an override must obey, checked on model values.

:mod:`domain.schedule.wire` runs these after parsing, so the agent refuses a bad document
whole (keeping the one it runs) and the orchestrator refuses it at its API with the same
words. Each failure raises :class:`ScheduleError` (or :class:`OverrideError`) naming the
field path and the reason.

Besides ranges and references, a bollard setting that contradicts itself is refused:
``OPEN`` access means the bollard stays down, ``LIST`` and ``CLOSED`` mean it stands up.
"""

from __future__ import annotations

import math

from domain.schedule.calendar import check_region
from domain.schedule.errors import OverrideError, ScheduleError
from domain.schedule.model import (
    AccessPolicy,
    BollardPosition,
    BollardSetting,
    DeviceKind,
    LightSensor,
    Override,
    Program,
    Schedule,
    SwitchPoint,
)

MAX_OFFSET_MINUTES = 720


def check_schedule(schedule: Schedule) -> None:
    """Refuse an invalid schedule.

    Raises:
        ScheduleError: with ``field`` (e.g. ``programs[1].points[0].lamp_level``) and
            ``reason``.
    """
    seen: set[str] = set()
    for index, program in enumerate(schedule.programs):
        _check_program(program, f"programs[{index}]")
        if program.id in seen:
            raise ScheduleError(f"programs[{index}].id", f"duplicate program id {program.id!r}")
        seen.add(program.id)
    for index, rule in enumerate(schedule.rules):
        path = f"rules[{index}]"
        if rule.program_id not in seen:
            raise ScheduleError(f"{path}.program_id", f"unknown program {rule.program_id!r}")
        if (
            rule.start_date is not None
            and rule.end_date is not None
            and rule.end_date < rule.start_date
        ):
            raise ScheduleError(f"{path}.end_date", "is before start_date")
    if schedule.holiday_region is not None:
        check_region(schedule.holiday_region)
    if not 1 <= schedule.default_lamp_level <= 100:
        raise ScheduleError("default_lamp_level", "must be within 1..100")
    if schedule.light_sensor is not None:
        _check_sensor(schedule.light_sensor)


def _check_program(program: Program, path: str) -> None:
    if not program.id:
        raise ScheduleError(f"{path}.id", "must not be empty")
    for index, point in enumerate(program.points):
        _check_point(point, f"{path}.points[{index}]")


def _check_point(point: SwitchPoint, path: str) -> None:
    if (point.local_time is None) == (point.sun_event is None):
        raise ScheduleError(path, "needs exactly one of local_time and sun_event")
    if point.local_time is not None and point.offset_minutes:
        raise ScheduleError(f"{path}.offset_minutes", "only allowed with sun_event")
    if abs(point.offset_minutes) > MAX_OFFSET_MINUTES:
        raise ScheduleError(
            f"{path}.offset_minutes",
            f"must be within -{MAX_OFFSET_MINUTES}..{MAX_OFFSET_MINUTES}",
        )
    _check_level(point.lamp_level, f"{path}.lamp_level", ScheduleError)
    if point.bollard is not None:
        _check_bollard(point.bollard, f"{path}.bollard", ScheduleError)
    if point.signal_plan == "":
        raise ScheduleError(f"{path}.signal_plan", "must not be empty when set")
    outputs = (point.lamp_level, point.bollard, point.signal_plan, point.signal_mode)
    if all(output is None for output in outputs):
        raise ScheduleError(path, "sets no output")


def _check_level(level: int | None, path: str, error: type[ScheduleError]) -> None:
    if level is not None and not 0 <= level <= 100:
        raise error(path, f"must be within 0..100, got {level}")


def _check_bollard(setting: BollardSetting, path: str, error: type[ScheduleError]) -> None:
    if setting.position is None and setting.access is None:
        raise error(path, "sets neither position nor access")
    if setting.access is AccessPolicy.OPEN and setting.position is BollardPosition.UP:
        raise error(path, "OPEN access means the bollard stays down, not UP")
    if setting.access in (AccessPolicy.LIST, AccessPolicy.CLOSED) and (
        setting.position is BollardPosition.DOWN
    ):
        raise error(path, f"{setting.access.name} access means the bollard stands UP")


def _check_sensor(sensor: LightSensor) -> None:
    if not (math.isfinite(sensor.on_below_lux) and sensor.on_below_lux >= 0):
        raise ScheduleError("light_sensor.on_below_lux", "must be a finite lux value >= 0")
    if not (math.isfinite(sensor.off_above_lux) and sensor.off_above_lux > sensor.on_below_lux):
        raise ScheduleError(
            "light_sensor.off_above_lux", "must be finite and above on_below_lux (hysteresis)"
        )
    if sensor.lamp_level is not None and not 1 <= sensor.lamp_level <= 100:
        raise ScheduleError("light_sensor.lamp_level", "must be within 1..100")


def check_override(override: Override) -> None:
    """Refuse an invalid override.

    Raises:
        OverrideError: with ``field`` and ``reason``.
    """
    if not override.id:
        raise OverrideError("id", "must not be empty")
    for name, instant in (("start", override.start), ("expiry", override.expiry)):
        if instant.tzinfo is None or instant.utcoffset() is None:
            raise OverrideError(name, "must be timezone-aware")
    if override.expiry <= override.start:
        raise OverrideError("expiry", "must be after start")
    for index, device_id in enumerate(sorted(override.device_ids)):
        if not device_id:
            raise OverrideError(f"device_ids[{index}]", "must not be empty")
    _check_level(override.lamp_level, "lamp_level", OverrideError)
    if override.bollard is not None:
        _check_bollard(override.bollard, "bollard", OverrideError)
    if override.signal_plan == "":
        raise OverrideError("signal_plan", "must not be empty when set")
    _check_outputs_fit_kind(override)


def _check_outputs_fit_kind(override: Override) -> None:
    kind = override.kind
    given = {
        "lamp_level": (override.lamp_level is not None, DeviceKind.LAMP),
        "bollard": (override.bollard is not None, DeviceKind.BOLLARD),
        "signal_mode": (override.signal_mode is not None, DeviceKind.SIGNAL),
        "signal_plan": (override.signal_plan is not None, DeviceKind.SIGNAL),
    }
    for name, (present, owner) in given.items():
        if present and owner is not kind:
            raise OverrideError(name, f"does not apply to {kind.name} devices")
    if kind is DeviceKind.CABINET:
        raise OverrideError("kind", "cabinets have no scheduled outputs")
    if not any(present for present, _ in given.values()):
        raise OverrideError("kind", f"the override sets no output for {kind.name} devices")
