"""Wire schedules and overrides: parsed, validated with field paths, and round-tripped."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time

import pytest

from domain.schedule.errors import OverrideError, ScheduleError
from domain.schedule.model import (
    AccessPolicy,
    BollardPosition,
    BollardSetting,
    DayKind,
    DeviceKind,
    SignalMode,
    SunEvent,
    Weekday,
)
from domain.schedule.wire import (
    override_from_proto,
    override_to_proto,
    schedule_from_proto,
    schedule_to_proto,
)
from protos.ondijon.v1 import schedule_pb2 as pb


def wire_schedule() -> pb.Schedule:
    message = pb.Schedule(holiday_region="FR-57", extra_holidays=["2026-09-12"])
    night = message.programs.add(id="night")
    night.points.add(sun_event=pb.SUN_EVENT_SUNSET, offset_minutes=-10, lamp_level=100)
    night.points.add(local_time="23:30", lamp_level=40)
    night.points.add(sun_event=pb.SUN_EVENT_SUNRISE, offset_minutes=15, lamp_level=0)
    market = message.programs.add(id="market")
    market.points.add(
        local_time="06:00:30",
        bollard=pb.BollardSetting(position=pb.BOLLARD_POSITION_UP, access=pb.ACCESS_POLICY_LIST),
        signal_plan="P2",
        signal_mode=pb.SIGNAL_MODE_NORMAL,
    )
    market.points.add(local_time="14:00", lamp_level=0)
    message.rules.add(program_id="night")
    message.rules.add(
        program_id="market",
        priority=5,
        start_date="2026-04-01",
        end_date="2026-10-31",
        weekdays=[pb.WEEKDAY_TUESDAY, pb.WEEKDAY_SATURDAY],
        day_kind=pb.DAY_KIND_WORKING_DAY,
    )
    message.rules.add(program_id="night", priority=9, dates=["2028-02-29"])
    message.light_sensor.enabled = True
    message.light_sensor.on_below_lux = 20
    message.light_sensor.off_above_lux = 50
    return message


def test_valid_schedule_parses_to_model_values() -> None:
    schedule = schedule_from_proto(wire_schedule())
    night, market = schedule.programs
    assert night.points[0].sun_event is SunEvent.SUNSET
    assert night.points[0].offset_minutes == -10
    assert night.points[1].local_time == time(23, 30)
    assert night.points[2].lamp_level == 0  # "off" is a value, not "unset"
    point = market.points[0]
    assert point.local_time == time(6, 0, 30)
    assert point.lamp_level is None
    assert point.bollard == BollardSetting(BollardPosition.UP, AccessPolicy.LIST)
    assert (point.signal_plan, point.signal_mode) == ("P2", SignalMode.NORMAL)
    rule = schedule.rules[1]
    assert rule.weekdays == {Weekday.TUESDAY, Weekday.SATURDAY}
    assert (rule.start_date, rule.end_date) == (date(2026, 4, 1), date(2026, 10, 31))
    assert rule.day_kind is DayKind.WORKING_DAY
    assert schedule.rules[0].day_kind is DayKind.ANY
    assert schedule.rules[2].dates == {date(2028, 2, 29)}
    assert schedule.default_lamp_level == 100  # 0 on the wire
    assert schedule.light_sensor is not None and schedule.light_sensor.lamp_level is None
    assert schedule.extra_holidays == {date(2026, 9, 12)}


def test_schedule_round_trips() -> None:
    schedule = schedule_from_proto(wire_schedule())
    again = schedule_to_proto(schedule)
    assert schedule_from_proto(again) == schedule
    assert schedule_to_proto(schedule_from_proto(again)) == again


def test_disabled_sensor_is_no_sensor() -> None:
    message = wire_schedule()
    message.light_sensor.enabled = False
    message.light_sensor.off_above_lux = 0  # would be invalid if enabled
    assert schedule_from_proto(message).light_sensor is None


BAD_SCHEDULES: list[tuple[str, Callable[[pb.Schedule], None], str]] = [
    (
        "unknown program in a rule",
        lambda m: setattr(m.rules[1], "program_id", "fair"),
        "rules[1].program_id",
    ),
    (
        "duplicate program id",
        lambda m: setattr(m.programs[1], "id", "night"),
        "programs[1].id",
    ),
    ("empty program id", lambda m: setattr(m.programs[0], "id", ""), "programs[0].id"),
    (
        "lamp level above 100",
        lambda m: setattr(m.programs[1].points[1], "lamp_level", 101),
        "programs[1].points[1].lamp_level",
    ),
    (
        "bad HH:MM",
        lambda m: setattr(m.programs[1].points[0], "local_time", "7h30"),
        "programs[1].points[0].local_time",
    ),
    (
        "hour 24",
        lambda m: setattr(m.programs[1].points[0], "local_time", "24:00"),
        "programs[1].points[0].local_time",
    ),
    (
        "offset beyond 12 hours",
        lambda m: setattr(m.programs[0].points[0], "offset_minutes", 721),
        "programs[0].points[0].offset_minutes",
    ),
    (
        "offset beyond -12 hours",
        lambda m: setattr(m.programs[0].points[2], "offset_minutes", -721),
        "programs[0].points[2].offset_minutes",
    ),
    (
        "offset with a fixed time",
        lambda m: setattr(m.programs[0].points[1], "offset_minutes", 5),
        "programs[0].points[1].offset_minutes",
    ),
    (
        "sun event unspecified",
        lambda m: setattr(m.programs[0].points[0], "sun_event", pb.SUN_EVENT_UNSPECIFIED),
        "programs[0].points[0].sun_event",
    ),
    (
        "sun event from the future",
        lambda m: setattr(m.programs[0].points[0], "sun_event", 42),
        "programs[0].points[0].sun_event",
    ),
    (
        "point without time",
        lambda m: m.programs[0].points[0].ClearField("sun_event"),
        "programs[0].points[0]",
    ),
    (
        "point that sets nothing",
        lambda m: m.programs[0].points[1].ClearField("lamp_level"),
        "programs[0].points[1]",
    ),
    (
        "open bollard standing up",
        lambda m: setattr(m.programs[1].points[0].bollard, "access", pb.ACCESS_POLICY_OPEN),
        "programs[1].points[0].bollard",
    ),
    (
        "unknown signal mode",
        lambda m: setattr(m.programs[1].points[0], "signal_mode", 9),
        "programs[1].points[0].signal_mode",
    ),
    (
        "end before start",
        lambda m: setattr(m.rules[1], "end_date", "2026-03-31"),
        "rules[1].end_date",
    ),
    (
        "bad start date",
        lambda m: setattr(m.rules[1], "start_date", "2026-02-30"),
        "rules[1].start_date",
    ),
    ("compact date", lambda m: setattr(m.rules[1], "end_date", "20261031"), "rules[1].end_date"),
    ("bad one-off date", lambda m: m.rules[2].dates.append("29/02/2028"), "rules[2].dates[1]"),
    (
        "weekday unspecified",
        lambda m: m.rules[1].weekdays.append(pb.WEEKDAY_UNSPECIFIED),
        "rules[1].weekdays[2]",
    ),
    ("unknown day kind", lambda m: setattr(m.rules[1], "day_kind", 7), "rules[1].day_kind"),
    ("bad extra holiday", lambda m: m.extra_holidays.append("2026-13-01"), "extra_holidays[1]"),
    ("unknown country", lambda m: setattr(m, "holiday_region", "XX"), "holiday_region"),
    ("unknown subdivision", lambda m: setattr(m, "holiday_region", "FR-99"), "holiday_region"),
    (
        "default level above 100",
        lambda m: setattr(m, "default_lamp_level", 101),
        "default_lamp_level",
    ),
    (
        "sensor off threshold not above on",
        lambda m: setattr(m.light_sensor, "off_above_lux", 20),
        "light_sensor.off_above_lux",
    ),
    (
        "sensor negative threshold",
        lambda m: setattr(m.light_sensor, "on_below_lux", -1),
        "light_sensor.on_below_lux",
    ),
    (
        "sensor level above 100",
        lambda m: setattr(m.light_sensor, "lamp_level", 150),
        "light_sensor.lamp_level",
    ),
]


@pytest.mark.parametrize(
    ("change", "field"),
    [(change, field) for _, change, field in BAD_SCHEDULES],
    ids=[name for name, _, _ in BAD_SCHEDULES],
)
def test_bad_schedules_are_refused_naming_the_field(
    change: Callable[[pb.Schedule], None], field: str
) -> None:
    message = wire_schedule()
    change(message)
    with pytest.raises(ScheduleError) as caught:
        schedule_from_proto(message)
    assert caught.value.field == field
    assert caught.value.reason


def wire_override() -> pb.Override:
    message = pb.Override(
        id="fire-42",
        priority=10,
        kind=pb.DEVICE_KIND_BOLLARD,
        device_ids=["b2", "b1"],
        bollard=pb.BollardSetting(position=pb.BOLLARD_POSITION_DOWN),
    )
    message.start.FromDatetime(datetime(2026, 7, 14, 21, 0))
    message.expiry.FromDatetime(datetime(2026, 7, 14, 23, 30))
    return message


def test_valid_override_parses_and_round_trips() -> None:
    override = override_from_proto(wire_override())
    assert override.start == datetime(2026, 7, 14, 21, tzinfo=UTC)
    assert override.expiry == datetime(2026, 7, 14, 23, 30, tzinfo=UTC)
    assert override.kind is DeviceKind.BOLLARD
    assert override.device_ids == {"b1", "b2"}
    assert override.bollard == BollardSetting(position=BollardPosition.DOWN)
    assert override.lamp_level is None and override.signal_mode is None
    assert override_from_proto(override_to_proto(override)) == override


def _as_lamp(message: pb.Override, level: int | None) -> None:
    message.kind = pb.DEVICE_KIND_LAMP
    message.ClearField("bollard")
    if level is not None:
        message.lamp_level = level


def _as_cabinet(message: pb.Override) -> None:
    message.kind = pb.DEVICE_KIND_CABINET
    message.ClearField("bollard")


BAD_OVERRIDES: list[tuple[str, Callable[[pb.Override], None], str]] = [
    ("empty id", lambda m: setattr(m, "id", ""), "id"),
    ("no start", lambda m: m.ClearField("start"), "start"),
    ("no expiry", lambda m: m.ClearField("expiry"), "expiry"),
    ("expiry equal to start", lambda m: m.expiry.CopyFrom(m.start), "expiry"),
    ("expiry before start", lambda m: setattr(m.expiry, "seconds", m.start.seconds - 60), "expiry"),
    ("kind unspecified", lambda m: setattr(m, "kind", pb.DEVICE_KIND_UNSPECIFIED), "kind"),
    ("unknown kind", lambda m: setattr(m, "kind", 12), "kind"),
    ("lamp level on a bollard", lambda m: setattr(m, "lamp_level", 50), "lamp_level"),
    ("empty device id", lambda m: m.device_ids.append(""), "device_ids[0]"),
    ("lamp override without level", lambda m: _as_lamp(m, None), "kind"),
    ("lamp level above 100", lambda m: _as_lamp(m, 101), "lamp_level"),
    (
        "closed bollard lowered",
        lambda m: setattr(m.bollard, "access", pb.ACCESS_POLICY_CLOSED),
        "bollard",
    ),
    ("cabinet", _as_cabinet, "kind"),
]


@pytest.mark.parametrize(
    ("change", "field"),
    [(change, field) for _, change, field in BAD_OVERRIDES],
    ids=[name for name, _, _ in BAD_OVERRIDES],
)
def test_bad_overrides_are_refused_naming_the_field(
    change: Callable[[pb.Override], None], field: str
) -> None:
    message = wire_override()
    change(message)
    with pytest.raises(OverrideError) as caught:
        override_from_proto(message)
    assert caught.value.field == field
