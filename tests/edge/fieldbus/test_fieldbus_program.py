"""The program the cabinet computes for a node agrees, at every whole second, with the
schedule engine it comes from: many sites and zones (DST north and south, none), random
starts over four years (leap day included), midnight and DST nights."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf import json_format

from domain.schedule import evaluate, schedule_from_proto
from domain.schedule.model import DeviceKind, Schedule, Site
from edge.fieldbus.program import ProgramTooLong, node_program
from edge.node import bus
from protos.ondijon.v1 import schedule_pb2

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "schedule.json"
SITES = [
    Site(47.322, 5.0415, "Europe/Paris"),
    Site(40.7128, -74.006, "America/New_York"),
    Site(-33.8688, 151.2093, "Australia/Sydney"),
    Site(19.076, 72.8777, "Asia/Kolkata"),
    Site(64.1466, -21.9426, "Atlantic/Reykjavik"),
]


def _schedule() -> Schedule:
    return schedule_from_proto(json_format.Parse(EXAMPLE.read_text(), schedule_pb2.Schedule()))


def _engine(schedule: Schedule, site: Site, t: int) -> int:
    decision = evaluate(
        schedule, site, datetime.fromtimestamp(t, UTC), kind=DeviceKind.LAMP, device_id="n-1"
    )
    assert decision.lamp_level is not None
    return decision.lamp_level


@pytest.mark.parametrize("site", SITES, ids=lambda s: s.time_zone)
def test_the_node_program_equals_the_engine_at_every_probe(site: Site) -> None:
    rng = random.Random(site.time_zone)
    schedule = _schedule()
    starts = [
        datetime(2026, 3, 28, 9, 17, 3, tzinfo=UTC),  # Paris DST night ahead
        datetime(2026, 10, 24, 23, 59, 59, tzinfo=UTC),  # autumn back, from midnight
        datetime(2028, 2, 28, 6, tzinfo=UTC),  # leap day
        datetime(2026, 4, 4, 0, tzinfo=UTC),  # Sydney's autumn change
    ]
    starts += [
        datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(4 * 365 * 86400))
        for _ in range(3)
    ]
    for start in starts:
        program = node_program(schedule, site, start, number=1, device_id="n-1", days=3)
        program = bus.decode_program(bus.encode_program(program))  # as the node gets it
        probes = [program.t0 + rng.randrange(program.end) for _ in range(40)]
        for offset in program.offsets:
            at = program.t0 + offset
            probes += [at - 1, at, at + 1]
        for t in probes:
            if program.covers(t):
                assert program.level_at(t) == _engine(schedule, site, t), (start, t)


def test_a_schedule_switching_too_often_for_a_node_is_refused() -> None:
    points = [
        {"local_time": f"{i // 2:02d}:{i % 2 * 30:02d}", "lamp_level": i % 2 * 100}
        for i in range(48)
    ]
    document = {
        "programs": [{"id": "p", "points": points}],
        "rules": [{"program_id": "p", "priority": 1}],
        "default_lamp_level": 100,
    }
    schedule = schedule_from_proto(json_format.ParseDict(document, schedule_pb2.Schedule()))
    start = datetime(2026, 5, 1, tzinfo=UTC)
    one_day = node_program(schedule, SITES[0], start, number=1, device_id="n", days=1)
    assert len(one_day.offsets) == 48
    with pytest.raises(ProgramTooLong):
        node_program(schedule, SITES[0], start, number=1, device_id="n", days=3)
