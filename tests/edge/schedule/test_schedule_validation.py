"""Checks on model values built in Python (the orchestrator may build them directly)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from domain.schedule.errors import OverrideError, ScheduleError
from domain.schedule.model import (
    AccessPolicy,
    BollardPosition,
    BollardSetting,
    DeviceKind,
    Override,
    Program,
    Schedule,
    SignalMode,
    SunEvent,
    SwitchPoint,
)
from domain.schedule.validation import check_override, check_schedule


def _with_point(point: SwitchPoint) -> Schedule:
    return Schedule(programs=(Program("p", (point,)),))


@pytest.mark.parametrize(
    ("point", "field"),
    [
        (
            SwitchPoint(local_time=time(1), sun_event=SunEvent.SUNSET, lamp_level=1),
            "programs[0].points[0]",
        ),
        (SwitchPoint(lamp_level=1), "programs[0].points[0]"),
        (SwitchPoint(local_time=time(1), lamp_level=-1), "programs[0].points[0].lamp_level"),
        (SwitchPoint(local_time=time(1), signal_plan=""), "programs[0].points[0].signal_plan"),
        (
            SwitchPoint(local_time=time(1), bollard=BollardSetting()),
            "programs[0].points[0].bollard",
        ),
        (
            SwitchPoint(
                local_time=time(1),
                bollard=BollardSetting(BollardPosition.DOWN, AccessPolicy.LIST),
            ),
            "programs[0].points[0].bollard",
        ),
    ],
)
def test_points_that_make_no_sense_are_refused(point: SwitchPoint, field: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        check_schedule(_with_point(point))
    assert caught.value.field == field


def test_consistent_points_pass() -> None:
    check_schedule(
        Schedule(
            programs=(
                Program(
                    "p",
                    (
                        SwitchPoint(
                            sun_event=SunEvent.CIVIL_DUSK, offset_minutes=-720, lamp_level=0
                        ),
                        SwitchPoint(
                            local_time=time(5),
                            bollard=BollardSetting(BollardPosition.DOWN, AccessPolicy.OPEN),
                            signal_mode=SignalMode.FLASHING_AMBER,
                        ),
                    ),
                ),
            ),
            default_lamp_level=1,
        )
    )


def test_default_level_zero_is_refused_in_the_model() -> None:
    # The wire's 0 means 100; a model value of 0 would leave streets dark.
    with pytest.raises(ScheduleError) as caught:
        check_schedule(Schedule(default_lamp_level=0))
    assert caught.value.field == "default_lamp_level"


def test_naive_override_times_are_refused() -> None:
    start = datetime(2026, 1, 1, 12)
    override = Override(
        id="o",
        start=start,
        expiry=start + timedelta(hours=1),
        kind=DeviceKind.LAMP,
        lamp_level=10,
    )
    with pytest.raises(OverrideError) as caught:
        check_override(override)
    assert caught.value.field == "start"


def test_signal_override_with_a_mode_passes() -> None:
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    check_override(
        Override(
            id="flash",
            start=start,
            expiry=start + timedelta(minutes=5),
            kind=DeviceKind.SIGNAL,
            signal_mode=SignalMode.FLASHING_AMBER,
        )
    )
