"""Energy folding against a minute-by-minute reference, over random lamp nights."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain import energy
from domain.energy import EnergyInputError, Interval, LampDay, SunWindows

PARIS = ZoneInfo("Europe/Paris")
DAY = date(2026, 12, 1)
START = datetime(2026, 12, 1, 0, 0, tzinfo=PARIS).astimezone(UTC)
END = datetime(2026, 12, 2, 0, 0, tzinfo=PARIS).astimezone(UTC)
SUNRISE = datetime(2026, 12, 1, 8, 5, tzinfo=PARIS).astimezone(UTC)
SUNSET = datetime(2026, 12, 1, 16, 55, tzinfo=PARIS).astimezone(UTC)


def windows(day: date) -> SunWindows:
    assert day == DAY
    return energy.windows_from_sun(START, END, SUNRISE, SUNSET)


def minutes_of(profile: list[float]) -> list[Interval]:
    """Quarter-hour intervals of a lamp whose power (W) is given per minute of the day."""
    out = []
    for q in range(96):
        watts = profile[q * 15 : q * 15 + 15]
        start = START + timedelta(minutes=15 * q)
        out.append(
            Interval(
                "lamp-1",
                start,
                start + timedelta(minutes=15),
                wh=sum(w / 60 for w in watts),
                on_seconds=60.0 * sum(1 for w in watts if w > 0),
                covered_seconds=900.0,
            )
        )
    return out


@pytest.mark.parametrize("seed", range(100))
def test_a_random_day_matches_the_minute_reference(seed: int) -> None:
    rng = random.Random(seed)
    nominal = rng.choice([30.0, 60.0, 90.0])
    # A night program in quarter hours: on at sunset, dimmed, maybe a day burner stretch.
    profile = [0.0] * 1440
    on_at = rng.randint(16 * 60 + 30, 17 * 60 + 30)
    dim_at = rng.randint(21 * 60, 23 * 60)
    off_at = rng.randint(7 * 60, 8 * 60 + 30)
    level = rng.choice([0.3, 0.5, 0.7])
    for m in range(1440):
        if m >= on_at:
            profile[m] = nominal if m < dim_at else nominal * level
        elif m < off_at:
            profile[m] = nominal * level
    burn = rng.random() < 0.3
    if burn:
        for m in range(11 * 60, 12 * 60):
            profile[m] = nominal
    # Quarter starts are aligned to the whole minute: round the profile to quarters, as an
    # agent's meter would see it, by re-expanding the folded quarters.
    days = energy.fold(minutes_of(profile), PARIS, windows)
    got = days[("lamp-1", DAY)]
    # Reference, minute by minute.
    minute = [START + timedelta(minutes=m) for m in range(1440)]
    night = [not (SUNRISE <= t < SUNSET) for t in minute]
    full_day = [
        SUNRISE + timedelta(minutes=30) <= t < SUNSET - timedelta(minutes=30) for t in minute
    ]
    assert got.wh == pytest.approx(sum(w / 60 for w in profile))
    assert got.on_seconds == pytest.approx(60 * sum(1 for w in profile if w > 0))
    assert got.peak_w == pytest.approx(nominal)
    # Night and day splits are spread evenly over each quarter: compare at quarter grain.
    assert got.night_seconds == pytest.approx(60 * sum(night), abs=900)
    assert got.day_wh == pytest.approx(
        sum(w / 60 for w, d in zip(profile, full_day, strict=True) if d), abs=nominal / 4
    )
    assert got.day_burner == burn
    assert not got.dark_at_night
    for hour in range(24):
        local = [
            w
            for m, w in enumerate(profile)
            if (START + timedelta(minutes=m)).astimezone(PARIS).hour == hour
        ]
        assert got.profile[hour] == pytest.approx(sum(w / 60 for w in local))
    summary = energy.summarise([("gw/lamp-1", got)])
    baseline = nominal * got.night_seconds / 3600 / 1000
    assert summary.baseline_kwh == pytest.approx(baseline)
    assert summary.saving == pytest.approx(1 - got.wh / 1000 / baseline)


def test_a_lamp_dark_all_night_is_found() -> None:
    days = energy.fold(minutes_of([0.0] * 1440), PARIS, windows)
    got = days[("lamp-1", DAY)]
    assert got.dark_at_night and not got.day_burner and got.wh == 0


def test_parts_of_a_day_add_up() -> None:
    profile = [60.0 if m >= 17 * 60 else 0.0 for m in range(1440)]
    quarters = minutes_of(profile)
    whole = energy.fold(quarters, PARIS, windows)[("lamp-1", DAY)]
    first = energy.fold(quarters[:50], PARIS, windows)[("lamp-1", DAY)]
    first.add(energy.fold(quarters[50:], PARIS, windows)[("lamp-1", DAY)])
    assert first == pytest.approx(whole) or first.__dict__ == pytest.approx(whole.__dict__)


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        (
            {
                "interval_end": "2026-12-01T00:15:00+00:00",
                "wh": "1",
                "on_seconds": "1",
                "covered_seconds": "1",
            },
            "interval_start",
        ),
        (
            {
                "interval_start": "2026-12-01T00:15:00+00:00",
                "interval_end": "2026-12-01T00:00:00+00:00",
                "wh": "1",
                "on_seconds": "1",
                "covered_seconds": "1",
            },
            "interval_end",
        ),
        (
            {
                "interval_start": "2026-12-01T00:00:00+00:00",
                "interval_end": "2026-12-01T00:15:00+00:00",
                "wh": "-1",
                "on_seconds": "1",
                "covered_seconds": "1",
            },
            "wh",
        ),
    ],
)
def test_unreadable_metering_is_refused(attributes: dict[str, str], field: str) -> None:
    with pytest.raises(EnergyInputError) as caught:
        Interval.from_attributes("lamp-1", attributes)
    assert caught.value.field == field


def test_summary_saving_is_zero_without_baseline() -> None:
    assert energy.summarise([("x", LampDay())]).saving == 0.0
