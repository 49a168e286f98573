"""Model values: site checks, hashable and comparable schedules."""

from __future__ import annotations

import math
from datetime import date, time

import pytest

from domain.schedule.errors import SiteError
from domain.schedule.model import CalendarRule, Program, Schedule, Site, SwitchPoint, Weekday


@pytest.mark.parametrize(
    ("latitude", "longitude", "zone", "field"),
    [
        (91.0, 5.0, "Europe/Paris", "latitude"),
        (math.nan, 5.0, "Europe/Paris", "latitude"),
        (47.0, 181.0, "Europe/Paris", "longitude"),
        (47.0, 5.0, "Europe/Dijon", "time_zone"),
        (47.0, 5.0, "../etc/passwd", "time_zone"),
    ],
)
def test_site_refuses_bad_coordinates_and_zones(
    latitude: float, longitude: float, zone: str, field: str
) -> None:
    with pytest.raises(SiteError) as caught:
        Site(latitude, longitude, zone)
    assert caught.value.field == field


def test_site_exposes_its_zone() -> None:
    assert Site(47.322, 5.0415, "Europe/Paris").zone.key == "Europe/Paris"


def _schedule() -> Schedule:
    return Schedule(
        programs=(Program("p", (SwitchPoint(local_time=time(20), lamp_level=50),)),),
        rules=(CalendarRule("p", weekdays=frozenset({Weekday.MONDAY})),),
        extra_holidays=frozenset({date(2026, 9, 12)}),
    )


def test_equal_schedules_hash_equal_and_find_programs() -> None:
    first, second = _schedule(), _schedule()
    assert first == second and hash(first) == hash(second)
    assert first.program("p") is first.programs[0]
    assert first.program("missing") is None
    assert first != Schedule(programs=first.programs, rules=first.rules)
