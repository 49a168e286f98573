"""Sun events: the 2026 Dijon reference to the minute, and polar sites."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from domain.schedule.astronomy import Daylight, sun_day
from domain.schedule.model import Site, SunEvent

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "sun" / "dijon-2026.csv"
DIJON = Site(47.3220, 5.0415, "Europe/Paris")
TROMSO = Site(69.65, 18.96, "Europe/Oslo")
LONGYEARBYEN = Site(78.22, 15.65, "Arctic/Longyearbyen")
COLUMNS = {
    "sunrise": SunEvent.SUNRISE,
    "sunset": SunEvent.SUNSET,
    "civil_dawn": SunEvent.CIVIL_DAWN,
    "civil_dusk": SunEvent.CIVIL_DUSK,
}


def _local(site: Site, instant: datetime | None) -> str | None:
    return None if instant is None else instant.astimezone(site.zone).strftime("%H:%M")


def test_every_dijon_2026_value_within_a_minute() -> None:
    paris = ZoneInfo("Europe/Paris")
    checked = 0
    worst = timedelta(0)
    with REFERENCE.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 365
    for row in rows:
        day = date.fromisoformat(row["date"])
        assert (float(row["lat"]), float(row["lon"]), row["tz"]) == (47.322, 5.0415, paris.key)
        sun = sun_day(DIJON, day)
        for column, event in COLUMNS.items():
            cell = row[column]
            got = sun.event(event)
            checked += 1
            if cell in ("", "always_up", "never_up"):
                assert got is None, (day, column)
                continue
            assert got is not None, (day, column)
            assert got.tzinfo is UTC
            expected = datetime.combine(day, datetime.strptime(cell, "%H:%M:%S").time(), paris)
            error = abs(got - expected)
            worst = max(worst, error)
            assert error <= timedelta(seconds=60), (day, column, got, cell)
    assert checked == 365 * 4
    assert worst < timedelta(seconds=60)


def test_dijon_events_fall_on_their_local_date_and_in_order() -> None:
    sun = sun_day(DIJON, date(2026, 6, 21))
    assert sun.daylight is Daylight.ORDINARY
    assert sun.civil_dawn is not None and sun.sunrise is not None
    assert sun.sunset is not None and sun.civil_dusk is not None
    assert sun.civil_dawn < sun.sunrise < sun.sunset < sun.civil_dusk
    assert _local(DIJON, sun.sunrise) == "05:43"
    assert _local(DIJON, sun.sunset) == "21:39"


def test_tromso_midsummer_is_polar_day() -> None:
    sun = sun_day(TROMSO, date(2026, 6, 21))
    assert (sun.sunrise, sun.sunset, sun.civil_dawn, sun.civil_dusk) == (None,) * 4
    assert sun.daylight is Daylight.POLAR_DAY
    assert sun.civil_daylight is Daylight.POLAR_DAY


def test_tromso_midwinter_is_polar_night_with_civil_twilight() -> None:
    sun = sun_day(TROMSO, date(2026, 12, 21))
    assert sun.sunrise is None and sun.sunset is None
    assert sun.daylight is Daylight.POLAR_NIGHT
    # The Sun stays above -6 degrees for a few hours around noon.
    assert sun.civil_daylight is Daylight.ORDINARY
    assert _local(TROMSO, sun.civil_dawn) == "09:31"
    assert _local(TROMSO, sun.civil_dusk) == "13:53"


def test_tromso_sunset_after_midnight_belongs_to_the_next_date() -> None:
    # Mid-May the Sun sets just after local midnight: 16 May has a sunrise, no sunset.
    may16 = sun_day(TROMSO, date(2026, 5, 16))
    may17 = sun_day(TROMSO, date(2026, 5, 17))
    assert _local(TROMSO, may16.sunrise) == "01:31"
    assert may16.sunset is None
    assert may16.daylight is Daylight.ORDINARY
    assert _local(TROMSO, may17.sunset) == "00:02"
    assert may17.sunset is not None and may17.sunset.date() == date(2026, 5, 16)  # UTC


def test_longyearbyen_polar_night_has_no_twilight_either() -> None:
    sun = sun_day(LONGYEARBYEN, date(2026, 12, 21))
    assert (sun.sunrise, sun.sunset, sun.civil_dawn, sun.civil_dusk) == (None,) * 4
    assert sun.daylight is Daylight.POLAR_NIGHT
    assert sun.civil_daylight is Daylight.POLAR_NIGHT


def test_longyearbyen_polar_day_and_an_ordinary_february_day() -> None:
    assert sun_day(LONGYEARBYEN, date(2026, 6, 21)).daylight is Daylight.POLAR_DAY
    february = sun_day(LONGYEARBYEN, date(2026, 2, 15))
    assert february.daylight is Daylight.ORDINARY
    assert _local(LONGYEARBYEN, february.sunrise) == "11:57"
    assert _local(LONGYEARBYEN, february.sunset) == "12:27"


@pytest.mark.parametrize("day", [date(2026, 3, 29), date(2026, 10, 25)])
def test_dst_change_days_keep_events_in_local_time(day: date) -> None:
    sun = sun_day(DIJON, day)
    assert sun.sunrise is not None
    # On both change days the sunrise is after the change (02:00/03:00 local).
    assert sun.sunrise.astimezone(DIJON.zone).hour == 7
