"""Light sensor hysteresis."""

from __future__ import annotations

import pytest

from domain.schedule.model import LightSensor
from domain.schedule.sensor import sensor_holds

SENSOR = LightSensor(on_below_lux=20.0, off_above_lux=50.0, lamp_level=80)


@pytest.mark.parametrize(
    ("lux", "holding", "expected"),
    [
        (19.9, False, True),  # dark enough: takes hold
        (20.0, False, False),  # the on threshold itself is not below it
        (35.0, False, False),  # between thresholds, not holding: stays off
        (35.0, True, True),  # between thresholds, holding: stays on
        (50.0, True, True),  # the off threshold itself is not above it
        (50.1, True, False),  # bright again: lets go
        (5.0, True, True),
    ],
)
def test_hysteresis(lux: float, holding: bool, expected: bool) -> None:
    assert sensor_holds(SENSOR, lux, holding) is expected


def test_no_reading_or_no_sensor_never_holds() -> None:
    assert not sensor_holds(SENSOR, None, True)
    assert not sensor_holds(None, 1.0, True)
