"""The agent's public holidays, worked out by a child interpreter: the same days and the same
refusals as the holidays package in process, one child per region, the package in process
when no child can answer."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator, Sequence
from datetime import date, time

import pytest

from domain.schedule.calendar import LibraryHolidays, program_for, use_holidays
from domain.schedule.errors import ScheduleError
from domain.schedule.model import CalendarRule, DayKind, Program, Schedule, SwitchPoint
from domain.schedule.validation import check_schedule
from edge.public_holidays import YEARS_AFTER, YEARS_BEFORE, HolidayWindow, answer, run_child


@pytest.fixture(autouse=True)
def _library_afterwards() -> Iterator[None]:
    yield
    use_holidays(LibraryHolidays())


def _schedule(region: str) -> Schedule:
    return Schedule(
        programs=tuple(
            Program(name, (SwitchPoint(local_time=time(20), lamp_level=level),))
            for name, level in (("everyday", 100), ("holiday", 50))
        ),
        rules=(
            CalendarRule("everyday"),
            CalendarRule("holiday", priority=10, day_kind=DayKind.PUBLIC_HOLIDAY),
        ),
        holiday_region=region,
    )


def _in_process(args: Sequence[str]) -> str:
    """The child's answer, without the child."""
    region, first, last = args
    return json.dumps(answer(region, int(first), int(last)))


def test_the_child_gives_the_packages_days_and_the_calendar_uses_them() -> None:
    window = HolidayWindow(this_year=lambda: 2026)
    use_holidays(window)
    library = LibraryHolidays()
    check_schedule(_schedule("FR-57"))  # the agent validates the document first
    for region in ("FR", "FR-57"):
        for year in (2026, 2027, 2026 + YEARS_AFTER):
            assert window.days(region, year) == library.days(region, year)
    good_friday = date(2026, 4, 3)  # a holiday in Moselle, not in the rest of France
    assert program_for(_schedule("FR-57"), good_friday).id == "holiday"  # type: ignore[union-attr]
    assert program_for(_schedule("FR"), good_friday).id == "everyday"  # type: ignore[union-attr]
    assert program_for(_schedule("FR"), date(2026, 7, 14)).id == "holiday"  # type: ignore[union-attr]
    assert window.children == 2  # one per region, for the whole window


def test_a_year_outside_the_window_asks_once_more() -> None:
    window = HolidayWindow(run=_in_process)
    window.days("FR", 2026)
    window.days("FR", 2026 - YEARS_BEFORE)
    assert window.children == 1
    assert date(2040, 7, 14) in window.days("FR", 2040)
    assert window.children == 2


@pytest.mark.parametrize(
    ("region", "reason"),
    [("XX", "unknown country 'XX'"), ("FR-99", "unknown subdivision '99' of FR")],
)
def test_an_unknown_region_is_refused_in_the_packages_words(region: str, reason: str) -> None:
    use_holidays(HolidayWindow(run=run_child))
    with pytest.raises(ScheduleError) as refused:
        check_schedule(_schedule(region))
    assert (refused.value.field, refused.value.reason) == ("holiday_region", reason)
    use_holidays(LibraryHolidays())
    with pytest.raises(ScheduleError) as in_process:
        check_schedule(_schedule(region))
    assert str(in_process.value) == str(refused.value)


def test_a_refusal_is_remembered() -> None:
    window = HolidayWindow(run=_in_process)
    for _ in range(3):
        with pytest.raises(ScheduleError, match="unknown country 'XX'"):
            window.check_region("XX")
    assert window.children == 1


def _fails(args: Sequence[str]) -> str:
    raise subprocess.CalledProcessError(1, ["python"], stderr="MemoryError")


@pytest.mark.parametrize(
    "run",
    [_fails, lambda args: "Traceback (most recent call last):", lambda args: '{"days": {}}'],
    ids=["exit status", "not json", "years missing"],
)
def test_a_child_that_cannot_answer_leaves_it_to_the_package(
    run: object, caplog: pytest.LogCaptureFixture
) -> None:
    window = HolidayWindow(run=run)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="ondijon.edge.holidays"):
        assert window.days("FR", 2026) == LibraryHolidays().days("FR", 2026)
        window.check_region("FR-57")
        with pytest.raises(ScheduleError, match="unknown country 'XX'"):
            window.check_region("XX")
    assert window.children == 1  # never asked again
    assert "the child process failed" in caplog.text
    # The failure met by a check: the region is still checked, by the package.
    checking = HolidayWindow(run=run)  # type: ignore[arg-type]
    with pytest.raises(ScheduleError, match="unknown country 'XX'"):
        checking.check_region("XX")
