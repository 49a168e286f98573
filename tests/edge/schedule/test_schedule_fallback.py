"""Default lamps: on from sunset to sunrise, on through polar night, off in polar day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from domain.schedule.astronomy import sun_day
from domain.schedule.fallback import night_lamps_on
from domain.schedule.model import Site

DIJON = Site(47.3220, 5.0415, "Europe/Paris")
TROMSO = Site(69.65, 18.96, "Europe/Oslo")
LONGYEARBYEN = Site(78.22, 15.65, "Arctic/Longyearbyen")
SECOND = timedelta(seconds=1)


def test_dijon_lamps_switch_exactly_at_sunrise_and_sunset() -> None:
    sun = sun_day(DIJON, date(2026, 1, 15))
    assert sun.sunrise is not None and sun.sunset is not None
    assert night_lamps_on(DIJON, sun.sunrise - SECOND)
    assert not night_lamps_on(DIJON, sun.sunrise)
    assert not night_lamps_on(DIJON, sun.sunset - SECOND)
    assert night_lamps_on(DIJON, sun.sunset)


def test_dijon_lamps_stay_on_across_midnight() -> None:
    assert night_lamps_on(DIJON, datetime(2026, 1, 15, 23, tzinfo=UTC))  # local midnight
    assert night_lamps_on(DIJON, datetime(2026, 1, 15, 22, 59, 59, tzinfo=UTC))


@pytest.mark.parametrize("site", [TROMSO, LONGYEARBYEN])
def test_polar_night_lamps_on_all_day(site: Site) -> None:
    for hour in range(0, 24, 3):
        assert night_lamps_on(site, datetime(2026, 12, 21, hour, tzinfo=UTC))


@pytest.mark.parametrize("site", [TROMSO, LONGYEARBYEN])
def test_polar_day_lamps_off_all_day(site: Site) -> None:
    for hour in range(0, 24, 3):
        assert not night_lamps_on(site, datetime(2026, 6, 21, hour, tzinfo=UTC))


def test_tromso_short_night_after_local_midnight() -> None:
    # 17 May 2026: sunset 00:02, sunrise 01:17 local (UTC+2).
    assert not night_lamps_on(TROMSO, datetime(2026, 5, 16, 21, 59, tzinfo=UTC))
    assert night_lamps_on(TROMSO, datetime(2026, 5, 16, 22, 30, tzinfo=UTC))
    assert not night_lamps_on(TROMSO, datetime(2026, 5, 16, 23, 30, tzinfo=UTC))
