"""Quarter-hour energy intervals from sampled lamp counters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.equipment.metering import MeteringError, QuarterHourMeter, quarter_start
from edge.events import EquipmentEvent, Priority
from foundation.clock import ManualClock

START = datetime(2026, 3, 31, 23, 40, tzinfo=UTC)


def intervals(events: list[EquipmentEvent]) -> list[tuple[str, str, float, float]]:
    return [
        (
            e.attributes["interval_start"][11:16],
            e.attributes["interval_end"][11:16],
            float(e.attributes["wh"]),
            float(e.attributes["on_seconds"]),
        )
        for e in events
    ]


def run_lamp(
    meter: QuarterHourMeter,
    clock: ManualClock,
    *,
    minutes: int,
    watts: float,
    step_s: float = 60,
    energy_wh: float = 0.0,
    hours: float = 0.0,
) -> tuple[list[EquipmentEvent], float, float]:
    """Feed a lamp burning ``watts`` for ``minutes``, sampled every ``step_s``."""
    events = meter.feed("lamp-1", clock.now(), energy_wh, hours)
    for _ in range(int(minutes * 60 / step_s)):
        clock.advance(step_s)
        energy_wh += watts * step_s / 3600
        if watts:
            hours += step_s / 3600
        events += meter.feed("lamp-1", clock.now(), energy_wh, hours)
    return events, energy_wh, hours


def test_quarter_start_is_aligned_on_utc() -> None:
    paris = timezone(timedelta(hours=2))
    assert quarter_start(datetime(2026, 7, 1, 12, 44, 59, tzinfo=paris)) == datetime(
        2026, 7, 1, 10, 30, tzinfo=UTC
    )
    assert quarter_start(datetime(2026, 7, 1, 0, 0, tzinfo=UTC)) == datetime(2026, 7, 1, tzinfo=UTC)


def test_intervals_across_midnight() -> None:
    clock = ManualClock(START)
    meter = QuarterHourMeter()
    events, _, _ = run_lamp(meter, clock, minutes=50, watts=60)
    # 23:40 -> 00:30: the first quarter is partial, the quarter running at 00:30 stays open
    assert intervals(events) == [
        ("23:30", "23:45", 5.0, 300.0),
        ("23:45", "00:00", 15.0, 900.0),
        ("00:00", "00:15", 15.0, 900.0),
        ("00:15", "00:30", 15.0, 900.0),
    ]
    assert events[1].attributes["interval_end"] == "2026-04-01T00:00:00+00:00"
    assert all(e.priority is Priority.METERING for e in events)
    assert all(e.type == "energy_interval" and e.device_id == "lamp-1" for e in events)
    assert events[0].attributes["covered_seconds"] == "300"
    assert events[0].at == datetime(2026, 3, 31, 23, 45, tzinfo=UTC)


def test_energy_between_sparse_samples_is_split_at_the_boundary() -> None:
    clock = ManualClock(datetime(2026, 1, 1, 18, 10, tzinfo=UTC))
    meter = QuarterHourMeter()
    meter.feed("lamp-1", clock.now(), 100.0, 10.0)
    clock.advance(600)  # 18:10 -> 18:20 at 60 W: 10 Wh, half before 18:15
    events = meter.feed("lamp-1", clock.now(), 110.0, 10.0 + 600 / 3600)
    assert intervals(events) == [("18:00", "18:15", 5.0, 300.0)]
    clock.set(datetime(2026, 1, 1, 18, 30, tzinfo=UTC))
    events = meter.feed("lamp-1", clock.now(), 120.0, 10.0 + 1200 / 3600)
    assert intervals(events) == [("18:15", "18:30", 15.0, 900.0)]


def test_devices_are_metered_separately() -> None:
    meter = QuarterHourMeter()
    t0 = datetime(2026, 1, 1, 18, 0, tzinfo=UTC)
    meter.feed("a", t0, 0.0, 0.0)
    meter.feed("b", t0, 50.0, 0.0)
    meter.feed("a", t0 + timedelta(minutes=10), 10.0, 0.1)
    events = meter.feed("b", t0 + timedelta(minutes=15), 53.0, 0.0)
    assert [(e.device_id, e.attributes["wh"]) for e in events] == [("b", "3.000")]


def test_a_counter_restart_counts_from_zero() -> None:
    clock = ManualClock(datetime(2026, 1, 1, 18, 0, tzinfo=UTC))
    meter = QuarterHourMeter()
    meter.feed("node-7", clock.now(), 5000.0, 900.0)
    clock.advance(300)
    meter.feed("node-7", clock.now(), 5005.0, 900 + 300 / 3600)
    clock.advance(300)  # the field node rebooted: its counters start again from zero
    meter.feed("node-7", clock.now(), 4.0, 240 / 3600)
    clock.advance(300)
    events = meter.feed("node-7", clock.now(), 9.0, 540 / 3600)
    assert intervals(events) == [("18:00", "18:15", 14.0, 840.0)]


def test_a_long_gap_is_one_record_not_a_week_of_empty_ones() -> None:
    clock = ManualClock(datetime(2026, 1, 1, 18, 5, tzinfo=UTC))
    meter = QuarterHourMeter(max_gap_s=3600)
    meter.feed("lamp-1", clock.now(), 0.0, 0.0)
    clock.advance(300)
    meter.feed("lamp-1", clock.now(), 5.0, 300 / 3600)
    clock.advance(7 * 86400)  # a week without samples, the lamp's own counter kept going
    events = meter.feed("lamp-1", clock.now(), 3000.0, 50.0)
    assert [
        (e.attributes["interval_start"], e.attributes["interval_end"], e.attributes["wh"])
        for e in events
    ] == [
        ("2026-01-01T18:00:00+00:00", "2026-01-01T18:15:00+00:00", "5.000"),
        ("2026-01-01T18:15:00+00:00", "2026-01-08T18:00:00+00:00", "2995.000"),
    ]
    assert events[1].attributes["covered_seconds"] == "0"
    clock.advance(900)  # metering resumes in the quarter of the sample after the gap
    events = meter.feed("lamp-1", clock.now(), 3015.0, 50.25)
    assert intervals(events) == [("18:00", "18:15", 5.0, 300.0)]


def test_a_gap_shorter_than_the_limit_is_spread() -> None:
    clock = ManualClock(datetime(2026, 1, 1, 18, 0, tzinfo=UTC))
    meter = QuarterHourMeter(max_gap_s=3600)
    meter.feed("lamp-1", clock.now(), 0.0, 0.0)
    clock.advance(2700)
    events = meter.feed("lamp-1", clock.now(), 45.0, 0.75)
    assert intervals(events) == [
        ("18:00", "18:15", 15.0, 900.0),
        ("18:15", "18:30", 15.0, 900.0),
        ("18:30", "18:45", 15.0, 900.0),
    ]


def test_clock_set_back_closes_and_starts_again() -> None:
    meter = QuarterHourMeter()
    t0 = datetime(2026, 1, 1, 18, 0, tzinfo=UTC)
    meter.feed("lamp-1", t0, 0.0, 0.0)
    meter.feed("lamp-1", t0 + timedelta(minutes=5), 5.0, 300 / 3600)
    events = meter.feed("lamp-1", t0 - timedelta(hours=1), 6.0, 360 / 3600)
    assert intervals(events) == [("18:00", "18:15", 5.0, 300.0)]
    events = meter.feed("lamp-1", t0 - timedelta(minutes=45), 21.0, 360 / 3600)
    assert intervals(events) == [("17:00", "17:15", 16.0, 0.0)]


def test_flush_closes_open_intervals_once() -> None:
    meter = QuarterHourMeter()
    t0 = datetime(2026, 1, 1, 18, 0, tzinfo=UTC)
    meter.feed("lamp-1", t0, 0.0, 0.0)
    meter.feed("lamp-1", t0 + timedelta(minutes=5), 5.0, 300 / 3600)
    meter.feed("lamp-2", t0, 0.0, 0.0)  # a single sample: nothing to report
    assert intervals(meter.flush()) == [("18:00", "18:15", 5.0, 300.0)]
    assert meter.flush() == []


@pytest.mark.parametrize(
    ("now", "wh", "hours", "field"),
    [
        (datetime(2026, 1, 1, 18, 0), 1.0, 0.0, "now"),
        (datetime(2026, 1, 1, 18, 0, tzinfo=UTC), float("nan"), 0.0, "energy_wh"),
        (datetime(2026, 1, 1, 18, 0, tzinfo=UTC), 1.0, -1.0, "operating_hours"),
    ],
)
def test_bad_samples_are_refused_and_change_nothing(
    now: datetime, wh: float, hours: float, field: str
) -> None:
    meter = QuarterHourMeter()
    t0 = datetime(2026, 1, 1, 17, 50, tzinfo=UTC)
    meter.feed("lamp-1", t0, 0.0, 0.0)
    with pytest.raises(MeteringError, match=field):
        meter.feed("lamp-1", now, wh, hours)
    events = meter.feed("lamp-1", t0 + timedelta(minutes=10), 10.0, 600 / 3600)
    assert intervals(events) == [("17:45", "18:00", 10.0, 600.0)]


def test_max_gap_must_span_a_quarter() -> None:
    with pytest.raises(ValueError, match="max_gap_s"):
        QuarterHourMeter(max_gap_s=600)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.floats(1, 3000), st.floats(0, 100)),
        min_size=1,
        max_size=40,
    )
)
def test_no_energy_is_lost_or_invented(steps: list[tuple[float, float]]) -> None:
    clock = ManualClock(START)
    meter = QuarterHourMeter(max_gap_s=2000)
    energy = 0.0
    events = meter.feed("lamp-1", clock.now(), energy, 0.0)
    for seconds, watts in steps:
        clock.advance(seconds)
        energy += watts * seconds / 3600
        events += meter.feed("lamp-1", clock.now(), energy, 0.0)
    events += meter.flush()
    assert sum(float(e.attributes["wh"]) for e in events) == pytest.approx(energy, abs=0.05)
    starts = [e.attributes["interval_start"] for e in events]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
