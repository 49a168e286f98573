"""A day's program placed at UTC instants: wall times across DST, sun events, skips."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from domain.schedule.model import CalendarRule, Program, Schedule, Site, SunEvent, SwitchPoint
from domain.schedule.program import day_plan, resolve_program

DIJON = Site(47.3220, 5.0415, "Europe/Paris")
TROMSO = Site(69.65, 18.96, "Europe/Oslo")


def at(hour: int, minute: int = 0, level: int = 100) -> SwitchPoint:
    return SwitchPoint(local_time=time(hour, minute), lamp_level=level)


def sun(event: SunEvent, offset: int = 0, level: int = 100) -> SwitchPoint:
    return SwitchPoint(sun_event=event, offset_minutes=offset, lamp_level=level)


def instants(program: Program, site: Site, day: date) -> list[datetime]:
    return [timed.at for timed in resolve_program(program, site, day)]


def test_points_are_ordered_by_instant_not_by_listing() -> None:
    program = Program("p", (at(23), at(6), at(12)))
    day = date(2026, 1, 15)
    assert instants(program, DIJON, day) == [
        datetime(2026, 1, 15, 5, tzinfo=UTC),
        datetime(2026, 1, 15, 11, tzinfo=UTC),
        datetime(2026, 1, 15, 22, tzinfo=UTC),
    ]


def test_same_instant_keeps_listing_order_so_the_later_point_wins() -> None:
    program = Program("p", (at(20, level=30), at(20, level=70)))
    placed = resolve_program(program, DIJON, date(2026, 1, 15))
    assert [timed.point.lamp_level for timed in placed] == [30, 70]


def test_spring_gap_point_fires_right_after_the_gap() -> None:
    program = Program("p", (at(2, 30), at(1, 30)))
    assert instants(program, DIJON, date(2026, 3, 29)) == [
        datetime(2026, 3, 29, 0, 30, tzinfo=UTC),  # 01:30 winter time
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 03:00 summer time
    ]


def test_autumn_repeated_hour_point_is_placed_once() -> None:
    program = Program("p", (at(2, 30),))
    assert instants(program, DIJON, date(2026, 10, 25)) == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    ]


def test_sun_points_follow_the_event_with_offset() -> None:
    program = Program("p", (sun(SunEvent.SUNSET, 15), sun(SunEvent.SUNRISE, -30)))
    first, second = instants(program, DIJON, date(2026, 1, 1))
    # Reference: sunrise 08:26:54, sunset 17:00:02 local (UTC+1).
    assert abs(first - datetime(2026, 1, 1, 6, 56, 54, tzinfo=UTC)) < timedelta(seconds=60)
    assert abs(second - datetime(2026, 1, 1, 16, 15, 2, tzinfo=UTC)) < timedelta(seconds=60)


def test_sun_event_absent_that_day_is_skipped() -> None:
    program = Program("p", (sun(SunEvent.SUNSET), at(22)))
    assert instants(program, TROMSO, date(2026, 6, 21)) == [
        datetime(2026, 6, 21, 20, tzinfo=UTC)  # 22:00 in UTC+2, the only point left
    ]
    assert len(instants(program, TROMSO, date(2026, 12, 21))) == 1


def test_a_point_lands_on_the_date_it_happens_on() -> None:
    # Dijon midsummer sunset 21:39 + 180 min = 00:39 the next day: that day's point, and
    # 21 June gets the one of 20 June's sunset, just after its own midnight.
    program = Program("p", (sun(SunEvent.SUNSET, 180), sun(SunEvent.SUNSET, 120)))
    placed = instants(program, DIJON, date(2026, 6, 21))
    local = [p.astimezone(DIJON.zone).strftime("%d %H:%M") for p in placed]
    assert local == ["21 00:39", "21 23:39"]
    assert all(p.astimezone(DIJON.zone).date() == date(2026, 6, 21) for p in placed)


def test_day_plan_carries_program_and_day_bounds() -> None:
    schedule = Schedule(
        programs=(Program("leap", (at(12),)),),
        rules=(CalendarRule("leap", dates=frozenset({date(2028, 2, 29)})),),
    )
    plan = day_plan(schedule, DIJON, date(2028, 2, 29))
    assert plan.program is not None and plan.program.id == "leap"
    assert plan.start == datetime(2028, 2, 28, 23, tzinfo=UTC)
    assert plan.end == datetime(2028, 2, 29, 23, tzinfo=UTC)
    assert [timed.at for timed in plan.points] == [datetime(2028, 2, 29, 11, tzinfo=UTC)]
    empty = day_plan(schedule, DIJON, date(2028, 3, 1))
    assert empty.program is None and empty.points == ()
