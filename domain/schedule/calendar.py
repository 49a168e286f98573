"""The calendar: which program runs on a local date.

A rule matches a date when:

- it lists one-off ``dates``: the date is one of them (range, weekdays and day kind are
  then ignored, as the proto says "exactly these dates");
- otherwise: the date lies in ``start_date..end_date`` (inclusive, either bound may be
  open), its weekday is listed (or none are), and its kind fits: ``PUBLIC_HOLIDAY`` means
  a holiday of ``holiday_region`` or one of ``extra_holidays``; ``WORKING_DAY`` means
  Monday to Friday and not such a holiday.

Among matching rules the highest ``priority`` wins. Ties are broken, deterministically,
first in favour of a one-off (``dates``) rule over a recurring one (it is the more specific
intent), then by the order of the rules in the schedule: the earlier rule wins.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import holidays

from domain.schedule.model import CalendarRule, DayKind, Program, Schedule, Weekday


def is_public_holiday(schedule: Schedule, day: date) -> bool:
    """Whether ``day`` is a public holiday for this schedule (region's or extra)."""
    if day in schedule.extra_holidays:
        return True
    if schedule.holiday_region is None:
        return False
    return day in region_holidays(schedule.holiday_region, day.year)


@lru_cache(maxsize=256)
def region_holidays(region: str, year: int) -> frozenset[date]:
    """Public holidays of ``region`` ("FR" or "FR-57") in ``year``.

    Raises:
        NotImplementedError: or KeyError from the ``holidays`` package for a region it does
            not know; :mod:`domain.schedule.validation` refuses such regions up front.
    """
    country, _, subdivision = region.partition("-")
    calendar = holidays.country_holidays(country, subdiv=subdivision or None, years=year)
    return frozenset(calendar.keys())


def rule_matches(schedule: Schedule, rule: CalendarRule, day: date) -> bool:
    """Whether ``rule`` applies on local date ``day``."""
    if rule.dates:
        return day in rule.dates
    if rule.start_date is not None and day < rule.start_date:
        return False
    if rule.end_date is not None and day > rule.end_date:
        return False
    if rule.weekdays and Weekday(day.isoweekday()) not in rule.weekdays:
        return False
    if rule.day_kind is DayKind.PUBLIC_HOLIDAY:
        return is_public_holiday(schedule, day)
    if rule.day_kind is DayKind.WORKING_DAY:
        return day.isoweekday() <= 5 and not is_public_holiday(schedule, day)
    return True


def winning_rule(schedule: Schedule, day: date) -> CalendarRule | None:
    """The rule that picks the program on ``day`` (see module docstring), or None."""
    best: CalendarRule | None = None
    best_key: tuple[int, bool] | None = None
    for rule in schedule.rules:
        if not rule_matches(schedule, rule, day):
            continue
        key = (rule.priority, bool(rule.dates))
        # Strictly greater: on a full tie the earlier rule stays.
        if best_key is None or key > best_key:
            best, best_key = rule, key
    return best


def program_for(schedule: Schedule, day: date) -> Program | None:
    """The program that runs on local date ``day``, or None if no rule matches."""
    rule = winning_rule(schedule, day)
    return None if rule is None else schedule.program(rule.program_id)
