"""The simulated lamp behaves like an LED lantern on a relay, on the injected clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edge.equipment.lamp.controller import LampDriverError
from edge.equipment.sim.lantern import SimulatedLamp
from foundation.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 6, 21, 21, 0, tzinfo=UTC))


def test_dark_until_the_relay_closes(clock: ManualClock) -> None:
    lamp = SimulatedLamp(clock=clock)
    reading = lamp.read()
    assert reading.current is False and reading.power_w == 0.0


def test_power_ramps_up_over_the_warm_up(clock: ManualClock) -> None:
    lamp = SimulatedLamp(clock=clock, nominal_power_w=60, warm_up_s=2)
    lamp.drive(True, 1.0)
    assert lamp.read().current is True
    assert lamp.read().power_w == pytest.approx(0.0)
    clock.advance(1)
    assert lamp.read().power_w == pytest.approx(30.0)
    clock.advance(5)
    assert lamp.read().power_w == pytest.approx(60.0)


def test_dimming_changes_power_without_a_new_warm_up(clock: ManualClock) -> None:
    lamp = SimulatedLamp(clock=clock, nominal_power_w=60, warm_up_s=2)
    lamp.drive(True, 1.0)
    clock.advance(10)
    lamp.drive(True, 0.5)
    assert lamp.read().power_w == pytest.approx(30.0)


def test_power_never_below_the_driver_minimum(clock: ManualClock) -> None:
    lamp = SimulatedLamp(clock=clock, nominal_power_w=100, warm_up_s=0)
    lamp.drive(True, 0.02)
    assert lamp.read().power_w == pytest.approx(10.0)


def test_opening_the_relay_cuts_current(clock: ManualClock) -> None:
    lamp = SimulatedLamp(clock=clock, warm_up_s=0)
    lamp.drive(True, 1.0)
    lamp.drive(False, 1.0)
    assert lamp.read().current is False
    assert lamp.duty == 0.0


def test_dead_lamp_draws_nothing(clock: ManualClock) -> None:
    lamp = SimulatedLamp(clock=clock, warm_up_s=0)
    lamp.dead = True
    lamp.drive(True, 1.0)
    assert lamp.read().current is False


def test_relay_stuck_closed_keeps_the_driver_at_minimum(clock: ManualClock) -> None:
    lamp = SimulatedLamp(clock=clock, nominal_power_w=60, warm_up_s=0)
    lamp.stick_relay(True)
    lamp.drive(False, 0.0)
    reading = lamp.read()
    assert reading.current is True and reading.power_w == pytest.approx(6.0)
    lamp.stick_relay(None)
    assert lamp.read().current is False


def test_relay_stuck_open_ignores_commands(clock: ManualClock) -> None:
    lamp = SimulatedLamp(clock=clock, warm_up_s=0)
    lamp.stick_relay(False)
    lamp.drive(True, 1.0)
    assert lamp.read().current is False
    lamp.stick_relay(None)  # repaired: the pending command takes effect
    assert lamp.read().current is True


def test_driver_that_ignores_dimming(clock: ManualClock) -> None:
    lamp = SimulatedLamp(clock=clock, nominal_power_w=60, warm_up_s=0)
    lamp.ignores_dimming = True
    lamp.drive(True, 0.3)
    assert lamp.read().power_w == pytest.approx(60.0)


def test_broken_backend_raises_driver_errors(clock: ManualClock) -> None:
    lamp = SimulatedLamp(clock=clock)
    lamp.broken = True
    with pytest.raises(LampDriverError):
        lamp.read()
    with pytest.raises(LampDriverError):
        lamp.drive(True, 1.0)


def test_rejects_impossible_parameters(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="nominal_power_w"):
        SimulatedLamp(clock=clock, nominal_power_w=0)
    with pytest.raises(ValueError, match="warm_up_s"):
        SimulatedLamp(clock=clock, warm_up_s=-1)
