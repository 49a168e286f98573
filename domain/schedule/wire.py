"""Schedules and overrides between their wire form (``ondijon.v1``) and the engine's model.

``schedule_from_proto`` and ``override_from_proto`` parse *and validate*: a document that
is wrong anywhere raises :class:`ScheduleError` / :class:`OverrideError` naming the field
path (``programs[1].points[0].local_time``) and the reason, and nothing is returned, so a
caller that keeps its previous schedule on error changes nothing. The orchestrator calls
the same functions to refuse bad input at its API.

Proto "unset" forms (``*_UNSPECIFIED``, empty strings, absent messages, ``0`` for the
default lamp level) become ``None`` or the documented default. An enum number this agent
does not know (sent by a newer orchestrator) is refused rather than guessed.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from enum import Enum
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from domain.schedule.errors import OverrideError, ScheduleError
from domain.schedule.model import (
    AccessPolicy,
    BollardPosition,
    BollardSetting,
    CalendarRule,
    DayKind,
    DeviceKind,
    LightSensor,
    Override,
    Program,
    Schedule,
    SignalMode,
    SunEvent,
    SwitchPoint,
    Weekday,
)
from domain.schedule.validation import check_override, check_schedule
from protos.ondijon.v1 import schedule_pb2

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?")
_E = TypeVar("_E", bound=Enum)


def schedule_from_proto(message: schedule_pb2.Schedule) -> Schedule:
    """Parse and validate a wire schedule.

    Raises:
        ScheduleError: the first problem found, with ``field`` and ``reason``.
    """
    sensor = None
    if message.HasField("light_sensor") and message.light_sensor.enabled:
        wire_sensor = message.light_sensor
        sensor = LightSensor(
            on_below_lux=wire_sensor.on_below_lux,
            off_above_lux=wire_sensor.off_above_lux,
            lamp_level=wire_sensor.lamp_level or None,
        )
    schedule = Schedule(
        programs=tuple(
            _program(program, f"programs[{index}]")
            for index, program in enumerate(message.programs)
        ),
        rules=tuple(_rule(rule, f"rules[{index}]") for index, rule in enumerate(message.rules)),
        holiday_region=message.holiday_region or None,
        extra_holidays=frozenset(
            _date(text, f"extra_holidays[{index}]", ScheduleError)
            for index, text in enumerate(message.extra_holidays)
        ),
        default_lamp_level=message.default_lamp_level or 100,
        light_sensor=sensor,
    )
    check_schedule(schedule)
    return schedule


def _program(message: schedule_pb2.Program, path: str) -> Program:
    return Program(
        id=message.id,
        points=tuple(
            _point(point, f"{path}.points[{index}]") for index, point in enumerate(message.points)
        ),
    )


def _point(message: schedule_pb2.SwitchPoint, path: str) -> SwitchPoint:
    at = message.WhichOneof("at")
    if at is None:
        raise ScheduleError(path, "needs exactly one of local_time and sun_event")
    local_time = None
    sun_event = None
    if at == "local_time":
        local_time = _time(message.local_time, f"{path}.local_time")
    else:
        sun_event = _enum(SunEvent, message.sun_event, f"{path}.sun_event", ScheduleError)
        if sun_event is None:
            raise ScheduleError(f"{path}.sun_event", "must be specified")
    return SwitchPoint(
        local_time=local_time,
        sun_event=sun_event,
        offset_minutes=message.offset_minutes,
        lamp_level=message.lamp_level if message.HasField("lamp_level") else None,
        bollard=(
            _bollard(message.bollard, f"{path}.bollard", ScheduleError)
            if message.HasField("bollard")
            else None
        ),
        signal_plan=message.signal_plan or None,
        signal_mode=_enum(SignalMode, message.signal_mode, f"{path}.signal_mode", ScheduleError),
    )


def _bollard(
    message: schedule_pb2.BollardSetting, path: str, error: type[ScheduleError]
) -> BollardSetting | None:
    position = _enum(BollardPosition, message.position, f"{path}.position", error)
    access = _enum(AccessPolicy, message.access, f"{path}.access", error)
    if position is None and access is None:
        return None
    return BollardSetting(position=position, access=access)


def _rule(message: schedule_pb2.CalendarRule, path: str) -> CalendarRule:
    weekdays = set()
    for index, number in enumerate(message.weekdays):
        weekday = _enum(Weekday, number, f"{path}.weekdays[{index}]", ScheduleError)
        if weekday is None:
            raise ScheduleError(f"{path}.weekdays[{index}]", "must be specified")
        weekdays.add(weekday)
    return CalendarRule(
        program_id=message.program_id,
        priority=message.priority,
        start_date=_optional_date(message.start_date, f"{path}.start_date"),
        end_date=_optional_date(message.end_date, f"{path}.end_date"),
        weekdays=frozenset(weekdays),
        day_kind=_enum(DayKind, message.day_kind, f"{path}.day_kind", ScheduleError) or DayKind.ANY,
        dates=frozenset(
            _date(text, f"{path}.dates[{index}]", ScheduleError)
            for index, text in enumerate(message.dates)
        ),
    )


def override_from_proto(message: schedule_pb2.Override) -> Override:
    """Parse and validate a wire override.

    Raises:
        OverrideError: the first problem found, with ``field`` and ``reason``.
    """
    kind = _enum(DeviceKind, message.kind, "kind", OverrideError)
    if kind is None:
        raise OverrideError("kind", "must be specified")
    override = Override(
        id=message.id,
        start=_timestamp(message, "start"),
        expiry=_timestamp(message, "expiry"),
        kind=kind,
        priority=message.priority,
        device_ids=frozenset(message.device_ids),
        lamp_level=message.lamp_level if message.HasField("lamp_level") else None,
        bollard=(
            _bollard(message.bollard, "bollard", OverrideError)
            if message.HasField("bollard")
            else None
        ),
        signal_mode=_enum(SignalMode, message.signal_mode, "signal_mode", OverrideError),
        signal_plan=message.signal_plan or None,
    )
    check_override(override)
    return override


def _timestamp(message: schedule_pb2.Override, name: str) -> datetime:
    if not message.HasField(name):  # type: ignore[arg-type]
        raise OverrideError(name, "is required")
    stamp: Timestamp = getattr(message, name)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise OverrideError(name, f"is not a valid timestamp ({exc})") from exc


def _enum(kind: type[_E], number: int, path: str, error: type[ScheduleError]) -> _E | None:
    if number == 0:
        return None
    try:
        return kind(number)
    except ValueError:
        raise error(path, f"unknown {kind.__name__} value {number}") from None


def _time(text: str, path: str) -> time:
    match = _TIME.fullmatch(text)
    if match is None:
        raise ScheduleError(path, f"expected HH:MM or HH:MM:SS, got {text!r}")
    hours, minutes, seconds = match.groups()
    return time(int(hours), int(minutes), int(seconds or 0))


def _date(text: str, path: str, error: type[ScheduleError]) -> date:
    try:
        if _DATE.fullmatch(text) is None:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise error(path, f"expected a date YYYY-MM-DD, got {text!r}") from None


def _optional_date(text: str, path: str) -> date | None:
    return _date(text, path, ScheduleError) if text else None


def schedule_to_proto(schedule: Schedule) -> schedule_pb2.Schedule:
    """The wire form of a schedule (sets and dates in a canonical, sorted order)."""
    message = schedule_pb2.Schedule(
        holiday_region=schedule.holiday_region or "",
        extra_holidays=[day.isoformat() for day in sorted(schedule.extra_holidays)],
        default_lamp_level=schedule.default_lamp_level,
    )
    for program in schedule.programs:
        wire_program = message.programs.add(id=program.id)
        for point in program.points:
            _point_to_proto(point, wire_program.points.add())
    for rule in schedule.rules:
        message.rules.add(
            program_id=rule.program_id,
            priority=rule.priority,
            start_date=rule.start_date.isoformat() if rule.start_date else "",
            end_date=rule.end_date.isoformat() if rule.end_date else "",
            weekdays=[day.value for day in sorted(rule.weekdays, key=lambda day: day.value)],
            day_kind=rule.day_kind.value,
            dates=[day.isoformat() for day in sorted(rule.dates)],
        )
    if schedule.light_sensor is not None:
        sensor = schedule.light_sensor
        message.light_sensor.enabled = True
        message.light_sensor.on_below_lux = sensor.on_below_lux
        message.light_sensor.off_above_lux = sensor.off_above_lux
        message.light_sensor.lamp_level = sensor.lamp_level or 0
    return message


def _point_to_proto(point: SwitchPoint, message: schedule_pb2.SwitchPoint) -> None:
    if point.local_time is not None:
        pattern = "%H:%M:%S" if point.local_time.second else "%H:%M"
        message.local_time = point.local_time.strftime(pattern)
    elif point.sun_event is not None:
        message.sun_event = point.sun_event.value  # type: ignore[assignment]
        message.offset_minutes = point.offset_minutes
    if point.lamp_level is not None:
        message.lamp_level = point.lamp_level
    if point.bollard is not None:
        _bollard_to_proto(point.bollard, message.bollard)
    message.signal_plan = point.signal_plan or ""
    if point.signal_mode is not None:
        message.signal_mode = point.signal_mode.value  # type: ignore[assignment]


def _bollard_to_proto(setting: BollardSetting, message: schedule_pb2.BollardSetting) -> None:
    if setting.position is not None:
        message.position = setting.position.value  # type: ignore[assignment]
    if setting.access is not None:
        message.access = setting.access.value  # type: ignore[assignment]


def override_to_proto(override: Override) -> schedule_pb2.Override:
    """The wire form of an override."""
    message = schedule_pb2.Override(
        id=override.id,
        priority=override.priority,
        kind=override.kind.value,  # type: ignore[arg-type]
        device_ids=sorted(override.device_ids),
        signal_plan=override.signal_plan or "",
    )
    message.start.FromDatetime(override.start.astimezone(UTC))
    message.expiry.FromDatetime(override.expiry.astimezone(UTC))
    if override.lamp_level is not None:
        message.lamp_level = override.lamp_level
    if override.bollard is not None:
        _bollard_to_proto(override.bollard, message.bollard)
    if override.signal_mode is not None:
        message.signal_mode = override.signal_mode.value  # type: ignore[assignment]
    return message
