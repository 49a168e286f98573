"""A whole night at Dijon on the astronomical program, with dimming, on the lamps' pins:
an ordinary night and the night the clocks go back.

The agent holds the city's usual program (60 % at sunset, full at civil dusk, 40 % from
23:00, full again from 05:30 for the morning traffic, off at sunrise) and runs on its own
from the afternoon to the next morning. The bench replays the dimming and relay pins and
compares every switch with the instants computed here, independently, from the sun's
times for Dijon and the local times through ``zoneinfo``; the night of the DST change
has one hour more between 23:00 and 05:30.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from street import document, street, sun_event

from domain.schedule.model import SunEvent
from edge.bench.inventory import Inventory
from edge.bench.report import Record
from protos.ondijon.v1 import link_pb2, schedule_pb2

LONG = os.environ.get("ONDIJON_LONG", "") not in ("", "0")
PARIS = ZoneInfo("Europe/Paris")
STEP_S = 2.0  # the agent's clock moves in steps of this: each switch lands within one

SCHEDULE = document(
    link_pb2.DOCUMENT_KIND_SCHEDULE,
    schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="night",
                points=[
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_SUNSET, lamp_level=60
                    ),
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_CIVIL_DUSK, lamp_level=100
                    ),
                    schedule_pb2.SwitchPoint(local_time="23:00", lamp_level=40),
                    schedule_pb2.SwitchPoint(local_time="05:30", lamp_level=100),
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_SUNRISE, lamp_level=0
                    ),
                ],
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="night", priority=1)],
    ),
)

NIGHTS = [
    pytest.param(date(2026, 10, 24), id="dst-change-night"),  # 03:00 CEST -> 02:00 CET
    pytest.param(
        date(2026, 12, 21),
        id="longest-night",
        marks=pytest.mark.skipif(not LONG, reason="the long form: set ONDIJON_LONG=1"),
    ),
]


@pytest.mark.parametrize("evening", NIGHTS)
async def test_a_whole_night_on_the_astronomical_program(
    tmp_path: Path, sim_bench: Inventory, record: Record, evening: date
) -> None:
    """Dusk to dawn: every dimming step on the pins within one clock step of its instant,
    the relay at rest (lit) all night and energised (dark) after sunrise."""
    noon = datetime(evening.year, evening.month, evening.day, 12, 0, tzinfo=PARIS)
    morning = noon + timedelta(days=1)
    expected = [
        (sun_event(noon, SunEvent.SUNSET), 0.6, "sunset"),
        (sun_event(noon, SunEvent.CIVIL_DUSK), 1.0, "civil_dusk"),
        (datetime(evening.year, evening.month, evening.day, 23, 0, tzinfo=PARIS), 0.4, "23h"),
        (
            datetime.combine(
                morning.date(), datetime.min.time().replace(hour=5, minute=30), tzinfo=PARIS
            ),
            1.0,
            "05h30",
        ),
        (sun_event(morning, SunEvent.SUNRISE), 0.0, "sunrise"),
    ]
    start = expected[0][0] - timedelta(minutes=10)
    async with street(
        tmp_path, sim_bench, start=start, kinds=["lamps"], documents=[SCHEDULE], record=record
    ) as bench:
        await bench.run_until(expected[-1][0] + timedelta(minutes=10), step_s=STEP_S)
        for lamp in sim_bench.lamps:
            pwm = bench.inventory.pin(f"lamps.{lamp.id}.pwm")
            switched = [(c.at, float(c.state)) for c in bench.pins.history
                        if c.pin == pwm and c.at > start + timedelta(seconds=STEP_S)]  # fmt: skip
            assert [level for _, level in switched] == [level for _, level, _ in expected]
            for (at, _), (due, _, what) in zip(switched, expected, strict=True):
                bench.measure(f"{lamp.id}.{what}_switch_delay_s", (at - due).total_seconds(),
                              unit="s", low=0.0, high=STEP_S)  # fmt: skip
            relay = bench.inventory.pin(f"lamps.{lamp.id}.relay")
            moves = [(c.at, c.state) for c in bench.pins.history
                     if c.pin == relay and c.at > start + timedelta(seconds=STEP_S)]  # fmt: skip
            assert [state for _, state in moves] == [False, True]  # lit at sunset, dark at dawn
            # At 40 % from the 23:00 switch to the 05:30 one, as the pins say (UTC
            # arithmetic: the night the clocks go back has an hour more).
            dimmed = (switched[3][0] - switched[2][0]) / timedelta(hours=1)
            hours = 7.5 if evening == date(2026, 10, 24) else 6.5
            bench.measure(f"{lamp.id}.hours_at_40_percent", dimmed, unit="h",
                          low=hours - 0.001, high=hours + 0.001,
                          description="23:00 to 05:30 local")  # fmt: skip
        assert bench.alarms() == []
