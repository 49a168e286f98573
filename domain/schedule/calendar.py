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

A region's public holidays come from one :class:`HolidaySource` per process: the
``holidays`` package in this process by default (:class:`LibraryHolidays`); the cabinet
agent, whose memory is counted, installs one that asks a child process
(:mod:`edge.public_holidays`) with :func:`use_holidays`.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from typing import Protocol

from domain.schedule.errors import ScheduleError
from domain.schedule.model import CalendarRule, DayKind, Program, Schedule, Weekday


class HolidaySource(Protocol):
    """Where the public holidays of a region (``"FR"``, ``"FR-57"``) come from."""

    def check_region(self, region: str) -> None:
        """Raise :class:`ScheduleError` (field ``holiday_region``) for a region unknown."""

    def days(self, region: str, year: int) -> frozenset[date]:
        """The public holidays of a known ``region`` in ``year``."""


class LibraryHolidays:
    """The ``holidays`` package, in this process: the default source.

    It is imported at the first question, and whole: every country's calendar, ~15 MiB
    (the cabinet agent asks a child process instead, :mod:`edge.public_holidays`).
    """

    def __init__(self) -> None:
        self._supported: dict[str, frozenset[str]] | None = None

    def check_region(self, region: str) -> None:
        country, dash, subdivision = region.partition("-")
        supported = self._regions()
        if country not in supported:
            raise ScheduleError("holiday_region", f"unknown country {country!r}")
        if dash and subdivision not in supported[country]:
            raise ScheduleError(
                "holiday_region", f"unknown subdivision {subdivision!r} of {country}"
            )

    def days(self, region: str, year: int) -> frozenset[date]:
        """Raises NotImplementedError or KeyError from the ``holidays`` package for a region
        it does not know (:meth:`check_region` refuses them first)."""
        import holidays

        country, _, subdivision = region.partition("-")
        calendar = holidays.country_holidays(country, subdiv=subdivision or None, years=year)
        return frozenset(calendar.keys())

    def _regions(self) -> dict[str, frozenset[str]]:
        if self._supported is None:
            import holidays

            self._supported = {
                country: frozenset(subdivisions)
                for country, subdivisions in holidays.list_supported_countries().items()
            }
        return self._supported


_source: HolidaySource = LibraryHolidays()


def use_holidays(source: HolidaySource) -> None:
    """Make ``source`` the one every schedule of this process asks (a composition root
    calls this once, before evaluating anything)."""
    global _source
    _source = source
    region_holidays.cache_clear()


def check_region(region: str) -> None:
    """Refuse a ``holiday_region`` the holidays source does not know.

    Raises:
        ScheduleError: field ``holiday_region``, the country or subdivision unknown.
    """
    _source.check_region(region)


def is_public_holiday(schedule: Schedule, day: date) -> bool:
    """Whether ``day`` is a public holiday for this schedule (region's or extra)."""
    if day in schedule.extra_holidays:
        return True
    if schedule.holiday_region is None:
        return False
    return day in region_holidays(schedule.holiday_region, day.year)


@lru_cache(maxsize=256)
def region_holidays(region: str, year: int) -> frozenset[date]:
    """Public holidays of ``region`` ("FR" or "FR-57") in ``year``, from the source in use.

    Raises:
        NotImplementedError, KeyError or ScheduleError for a region the source does not
            know; :mod:`domain.schedule.validation` refuses such regions up front.
    """
    return _source.days(region, year)


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
