"""Tonight's switch times (the console's preview) against a reference computed here from
the wall times alone, for many random programs, on ordinary nights and DST nights."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.schedule.errors import EvaluationError
from domain.schedule.model import CalendarRule, Program, Schedule, Site, SwitchPoint
from domain.schedule.preview import tonight

DIJON = Site(47.322, 5.041, "Europe/Paris")
PARIS = ZoneInfo("Europe/Paris")


def reference(points: list[tuple[time, int]], day: date) -> list[tuple[datetime, int]]:
    """Every day the same program: the level at noon is the last point before noon (or,
    none before, the day's last one carried from yesterday); then each point after noon,
    then the next morning's before noon; repeated levels are not changes."""
    ordered = sorted(points)
    before = [p for p in ordered if p[0] <= time(12)]
    at_noon = (before or ordered)[-1][1]

    def instant(d: date, t: time) -> datetime:
        return datetime.combine(d, t, PARIS).astimezone(UTC)  # fold=0: the first, in a gap: +1 h

    out = [(instant(day, time(12)), at_noon)]
    nxt = day + timedelta(days=1)
    later = [(instant(day, t), v) for t, v in ordered if t > time(12)]
    later += [(instant(nxt, t), v) for t, v in ordered if t < time(12)]
    for at, level in later:
        if level != out[-1][1]:
            out.append((at, level))
    return out


def every_day(points: list[tuple[time, int]]) -> Schedule:
    program = Program("p", tuple(SwitchPoint(local_time=t, lamp_level=v) for t, v in points))
    return Schedule(programs=(program,), rules=(CalendarRule("p", priority=1),))


@pytest.mark.parametrize("day", [date(2026, 1, 14), date(2026, 3, 28), date(2026, 10, 24)])
def test_an_evening_program_switches_at_its_wall_times(day: date) -> None:
    points = [(time(20), 80), (time(23, 30), 30), (time(6), 0)]
    night = tonight(every_day(points), DIJON, datetime.combine(day, time(18), PARIS))
    got = [(s.at, s.level) for s in night.switches]
    assert got == reference(points, day)
    # The DST nights: 29 March has a 23-hour night, 25 October a 25-hour one.
    hours = (night.end - night.start) / timedelta(hours=1)
    assert hours == {date(2026, 3, 28): 23, date(2026, 10, 24): 25}.get(day, 24)
    assert [s.at.astimezone(PARIS).strftime("%H:%M") for s in night.switches] == [
        "12:00",
        "20:00",
        "23:30",
        "06:00",
    ]
    assert {s.source for s in night.switches} == {"program:p"}


def test_random_programs_match_the_reference() -> None:
    rng = random.Random(14)
    for _ in range(300):
        points = [
            (time(rng.randrange(24), rng.choice([0, 15, 30, 45])), rng.choice([0, 30, 60, 100]))
            for _ in range(rng.randint(1, 5))
        ]
        points = list(dict((t, v) for t, v in points).items())  # one level per wall time
        day = date(2026, 1, 1) + timedelta(days=rng.randrange(365))
        now = datetime.combine(day, time(rng.randrange(12, 24)), PARIS)
        night = tonight(every_day(points), DIJON, now)
        assert [(s.at, s.level) for s in night.switches] == reference(points, day), points


def test_before_noon_is_still_last_night() -> None:
    points = [(time(21), 100), (time(5), 0)]
    night = tonight(every_day(points), DIJON, datetime(2026, 2, 3, 2, 0, tzinfo=PARIS))
    assert night.start == datetime(2026, 2, 2, 12, tzinfo=PARIS)
    assert [s.level for s in night.switches] == [0, 100, 0]


def test_no_schedule_is_the_sunset_to_sunrise_default() -> None:
    night = tonight(None, DIJON, datetime(2026, 6, 21, 15, tzinfo=PARIS))
    local = [(s.at.astimezone(PARIS), s.level, s.source) for s in night.switches]
    assert [(lvl, src) for _, lvl, src in local] == [
        (0, "default"),
        (100, "default"),
        (0, "default"),
    ]
    # Dijon at the solstice: sunset near 21:50, sunrise near 05:50 (local).
    assert time(21, 30) < local[1][0].time() < time(22, 15)
    assert time(5, 30) < local[2][0].time() < time(6, 15)


def test_a_naive_instant_is_refused_naming_the_field() -> None:
    with pytest.raises(EvaluationError, match="now"):
        tonight(None, DIJON, datetime(2026, 1, 1, 18))
