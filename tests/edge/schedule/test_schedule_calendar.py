"""Which program runs on a local date: ranges, weekdays, holidays, one-off dates, priorities."""

from __future__ import annotations

from datetime import date, time

import pytest

from domain.schedule.calendar import is_public_holiday, program_for
from domain.schedule.model import CalendarRule, DayKind, Program, Schedule, SwitchPoint, Weekday


def _program(name: str) -> Program:
    return Program(name, (SwitchPoint(local_time=time(20), lamp_level=100),))


def _schedule(
    *rules: CalendarRule,
    region: str | None = "FR",
    extra_holidays: frozenset[date] = frozenset(),
) -> Schedule:
    names = {rule.program_id for rule in rules}
    return Schedule(
        programs=tuple(_program(name) for name in sorted(names)),
        rules=rules,
        holiday_region=region,
        extra_holidays=extra_holidays,
    )


def _picked(schedule: Schedule, day: date) -> str | None:
    program = program_for(schedule, day)
    return None if program is None else program.id


HOLIDAYS = _schedule(
    CalendarRule("everyday"),
    CalendarRule("holiday", priority=10, day_kind=DayKind.PUBLIC_HOLIDAY),
)


@pytest.mark.parametrize(
    "day",
    [date(2026, 7, 14), date(2026, 12, 25), date(2026, 4, 6), date(2026, 1, 1)],
)
def test_french_public_holidays_pick_the_holiday_program(day: date) -> None:
    assert _picked(HOLIDAYS, day) == "holiday"


@pytest.mark.parametrize("day", [date(2026, 4, 5), date(2026, 4, 7), date(2026, 7, 13)])
def test_ordinary_days_around_holidays_do_not(day: date) -> None:
    assert _picked(HOLIDAYS, day) == "everyday"


def test_regional_holiday_good_friday_in_moselle_only() -> None:
    good_friday = date(2026, 4, 3)
    assert not is_public_holiday(HOLIDAYS, good_friday)
    moselle = _schedule(*HOLIDAYS.rules, region="FR-57")
    assert is_public_holiday(moselle, good_friday)
    assert _picked(moselle, good_friday) == "holiday"


def test_extra_holidays_count_as_public_holidays() -> None:
    fete = date(2026, 9, 12)
    schedule = _schedule(*HOLIDAYS.rules, extra_holidays=frozenset({fete}))
    assert _picked(schedule, fete) == "holiday"
    assert _picked(schedule, date(2026, 9, 13)) == "everyday"


def test_no_region_means_no_public_holidays() -> None:
    schedule = _schedule(*HOLIDAYS.rules, region=None)
    assert _picked(schedule, date(2026, 7, 14)) == "everyday"


def test_working_days_exclude_weekends_and_holidays() -> None:
    schedule = _schedule(
        CalendarRule("rest"), CalendarRule("work", priority=1, day_kind=DayKind.WORKING_DAY)
    )
    assert _picked(schedule, date(2026, 7, 13)) == "work"  # Monday
    assert _picked(schedule, date(2026, 7, 14)) == "rest"  # Tuesday, Bastille Day
    assert _picked(schedule, date(2026, 7, 18)) == "rest"  # Saturday


def test_weekdays_and_inclusive_date_range() -> None:
    schedule = _schedule(
        CalendarRule("base"),
        CalendarRule(
            "market",
            priority=1,
            start_date=date(2026, 6, 1),
            end_date=date(2026, 6, 30),
            weekdays=frozenset({Weekday.TUESDAY, Weekday.SATURDAY}),
        ),
    )
    assert _picked(schedule, date(2026, 6, 2)) == "market"  # Tuesday, first week
    assert _picked(schedule, date(2026, 6, 30)) == "market"  # Tuesday, last day included
    assert _picked(schedule, date(2026, 6, 3)) == "base"  # Wednesday
    assert _picked(schedule, date(2026, 5, 30)) == "base"  # Saturday before the range
    assert _picked(schedule, date(2026, 7, 4)) == "base"  # Saturday after it


def test_one_off_dates_apply_exactly_on_those_dates() -> None:
    schedule = _schedule(
        CalendarRule("base"),
        CalendarRule(
            "concert",
            priority=1,
            dates=frozenset({date(2026, 6, 21), date(2028, 2, 29)}),
            # Ignored when dates are given: "exactly these dates".
            weekdays=frozenset({Weekday.MONDAY}),
        ),
    )
    assert _picked(schedule, date(2026, 6, 21)) == "concert"  # a Sunday
    assert _picked(schedule, date(2028, 2, 29)) == "concert"
    assert _picked(schedule, date(2028, 2, 28)) == "base"
    assert _picked(schedule, date(2028, 3, 1)) == "base"
    assert _picked(schedule, date(2026, 6, 22)) == "base"  # a Monday


def test_highest_priority_wins_whatever_the_order() -> None:
    low = CalendarRule("low", priority=1)
    high = CalendarRule("high", priority=5)
    assert _picked(_schedule(low, high), date(2026, 1, 5)) == "high"
    assert _picked(_schedule(high, low), date(2026, 1, 5)) == "high"


def test_tie_one_off_beats_recurring_then_earlier_rule_wins() -> None:
    day = date(2026, 12, 25)
    recurring = CalendarRule("recurring", priority=3, day_kind=DayKind.PUBLIC_HOLIDAY)
    one_off = CalendarRule("one_off", priority=3, dates=frozenset({day}))
    assert _picked(_schedule(recurring, one_off), day) == "one_off"
    assert _picked(_schedule(one_off, recurring), day) == "one_off"
    first = CalendarRule("first", priority=2)
    second = CalendarRule("second", priority=2)
    assert _picked(_schedule(first, second), day) == "first"
    assert _picked(_schedule(second, first), day) == "second"


def test_no_matching_rule_means_no_program() -> None:
    schedule = _schedule(CalendarRule("summer", start_date=date(2026, 6, 1)))
    assert _picked(schedule, date(2026, 5, 31)) is None
    assert _picked(schedule, date(2026, 6, 1)) == "summer"
