"""Wall times to instants across the 2026 daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.schedule.localtime import day_start, local_date, next_day_start, wall_to_utc

PARIS = ZoneInfo("Europe/Paris")
SPRING = date(2026, 3, 29)
AUTUMN = date(2026, 10, 25)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("wall", "expected"),
    [
        (time(1, 59), utc(2026, 3, 29, 0, 59)),
        # Inside the skipped hour: happens right after the gap, at 03:00 local.
        (time(2, 0), utc(2026, 3, 29, 1, 0)),
        (time(2, 30), utc(2026, 3, 29, 1, 0)),
        (time(2, 59, 59), utc(2026, 3, 29, 1, 0)),
        (time(3, 0), utc(2026, 3, 29, 1, 0)),
        (time(3, 30), utc(2026, 3, 29, 1, 30)),
    ],
)
def test_spring_gap_times_happen_when_the_clocks_have_jumped(
    wall: time, expected: datetime
) -> None:
    assert wall_to_utc(SPRING, wall, PARIS) == expected


@pytest.mark.parametrize(
    ("wall", "expected"),
    [
        (time(1, 59), utc(2026, 10, 24, 23, 59)),
        # The repeated hour: first occurrence (summer time, UTC+2) only.
        (time(2, 0), utc(2026, 10, 25, 0, 0)),
        (time(2, 30), utc(2026, 10, 25, 0, 30)),
        (time(3, 0), utc(2026, 10, 25, 2, 0)),
    ],
)
def test_autumn_repeated_hour_uses_first_occurrence(wall: time, expected: datetime) -> None:
    assert wall_to_utc(AUTUMN, wall, PARIS) == expected


def test_fold_on_input_is_ignored() -> None:
    assert wall_to_utc(AUTUMN, time(2, 30, fold=1), PARIS) == utc(2026, 10, 25, 0, 30)


def test_change_days_last_23_and_25_hours() -> None:
    assert day_start(SPRING, PARIS) == utc(2026, 3, 28, 23)
    assert day_start(SPRING + timedelta(days=1), PARIS) - day_start(SPRING, PARIS) == timedelta(
        hours=23
    )
    assert day_start(AUTUMN + timedelta(days=1), PARIS) - day_start(AUTUMN, PARIS) == timedelta(
        hours=25
    )


def test_day_starting_in_a_gap_starts_when_the_gap_ends() -> None:
    santiago = ZoneInfo("America/Santiago")
    # Chile springs forward at midnight: 6 Sept 2026 begins at 01:00 local.
    start = day_start(date(2026, 9, 6), santiago)
    assert start == utc(2026, 9, 6, 4)
    assert start.astimezone(santiago).time() == time(1, 0)
    assert local_date(start, santiago) == date(2026, 9, 6)
    assert local_date(start - timedelta(microseconds=1), santiago) == date(2026, 9, 5)


def test_local_date_and_next_day_start_in_the_repeated_hour() -> None:
    second_pass = utc(2026, 10, 25, 1, 30)  # 02:30 winter time
    assert local_date(second_pass, PARIS) == AUTUMN
    assert next_day_start(second_pass, PARIS) == utc(2026, 10, 25, 23)
    assert next_day_start(utc(2026, 10, 25, 22, 59, 59), PARIS) == utc(2026, 10, 25, 23)
    assert next_day_start(utc(2026, 10, 25, 23), PARIS) == utc(2026, 10, 26, 23)
