"""The simulated bollard: physics on clocked gpiozero mock pins, no real sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from edge.equipment.bollard.controller import BollardConfig
from edge.equipment.bollard.rules import BollardError, BollardOutputs
from edge.equipment.registry import open_driver
from edge.equipment.sim.bollard import ClockedMockFactory, SimulatedBollard
from foundation.clock import ManualClock

T0 = datetime(2026, 6, 21, 22, 0, tzinfo=UTC)
CONFIG = BollardConfig(device_id="bollard-sim", backend="simulated")
UP = BollardOutputs(motor_up=True, warning_light=True)
DOWN = BollardOutputs(motor_down=True, warning_light=True)
OFF = BollardOutputs()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def run_for(clock: ManualClock, seconds: float, tick: float = 0.01) -> None:
    await settle()  # let the loop handle what the test just did, before time moves
    for _ in range(round(seconds / tick)):
        clock.advance(tick)
        await settle()


class Street:
    def __init__(self, clock: ManualClock, sim: SimulatedBollard) -> None:
        self.clock = clock
        self.sim = sim


@pytest.fixture
async def street() -> AsyncIterator[Street]:
    clock = ManualClock(T0)
    sim = SimulatedBollard(CONFIG, clock)
    task = asyncio.create_task(sim.run())
    await settle()
    yield Street(clock, sim)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    sim.close()


async def test_starts_down_with_only_the_down_switch(street: Street) -> None:
    readings = street.sim.read()
    assert (readings.down_limit, readings.up_limit) == (True, False)
    assert not (readings.loop_occupied or readings.obstruction or readings.emergency)


async def test_rises_in_three_seconds_with_the_switches_following(street: Street) -> None:
    street.sim.drive(UP)
    await run_for(street.clock, 0.1)
    assert not street.sim.read().down_limit
    await run_for(street.clock, 2.8)
    assert not street.sim.read().up_limit
    await run_for(street.clock, 0.1)
    assert street.sim.read().up_limit
    # Inputs are active low: pulled up when claimed, then the up switch pulled the pin low
    # after 2.97 s of travel.
    up_pin = street.sim.pins["up_limit_pin"]
    assert len(up_pin.states) == 3
    up_pin.assert_states_and_times([(0.0, False), (0.0, True), (2.97, False)])
    assert street.sim.pins["down_limit_pin"].states[-1].timestamp == pytest.approx(0.03, abs=0.02)


async def test_lowers_in_two_seconds(street: Street) -> None:
    street.sim.drive(UP)
    await run_for(street.clock, 3.0)
    street.sim.drive(DOWN)
    await run_for(street.clock, 1.9)
    assert not street.sim.read().down_limit
    await run_for(street.clock, 0.1)
    assert street.sim.read().down_limit
    assert street.sim.position == pytest.approx(0.0, abs=1e-9)


async def test_stops_where_the_motor_stops(street: Street) -> None:
    street.sim.drive(UP)
    await run_for(street.clock, 1.5)
    street.sim.drive(OFF)
    await run_for(street.clock, 10)
    assert street.sim.position == pytest.approx(0.5, abs=0.01)
    readings = street.sim.read()
    assert not (readings.up_limit or readings.down_limit)


async def test_a_car_occupies_the_loop(street: Street) -> None:
    street.sim.car_arrives()
    assert street.sim.read().loop_occupied
    street.sim.car_leaves()
    assert not street.sim.read().loop_occupied


async def test_an_obstacle_presses_the_edge_when_the_crown_reaches_it(street: Street) -> None:
    street.sim.place_obstacle(height=0.5)
    street.sim.drive(UP)
    await run_for(street.clock, 1.45)
    assert not street.sim.read().obstruction
    await run_for(street.clock, 0.1)
    assert street.sim.read().obstruction
    street.sim.drive(DOWN)
    await run_for(street.clock, 0.05)
    assert not street.sim.read().obstruction


async def test_a_jammed_post_does_not_move(street: Street) -> None:
    street.sim.jam()
    street.sim.drive(UP)
    await run_for(street.clock, 10, tick=0.1)
    assert street.sim.position == pytest.approx(0.0, abs=1e-9)
    assert street.sim.read().down_limit


async def test_a_stuck_switch_reads_active(street: Street) -> None:
    street.sim.stick_limit_switch("up", True)
    readings = street.sim.read()
    assert readings.up_limit and readings.down_limit
    street.sim.stick_limit_switch("up", None)
    assert not street.sim.read().up_limit


async def test_emergency_key(street: Street) -> None:
    street.sim.turn_emergency_key(True)
    assert street.sim.read().emergency


async def test_bad_injections_are_refused(street: Street) -> None:
    with pytest.raises(BollardError):
        street.sim.place_obstacle(height=1.0)
    with pytest.raises(BollardError):
        street.sim.stick_limit_switch("middle", True)


async def test_pin_history_is_timed_by_the_injected_clock(street: Street) -> None:
    street.clock.advance(3600)
    street.sim.car_arrives()
    loop_pin = street.sim.pins["loop_pin"]
    assert loop_pin.states[-1].timestamp == pytest.approx(3600.0)
    change = street.sim.factory.history[-1]
    # Normally closed loop contact: a vehicle opens it, the pull-up takes the pin high.
    assert (change.at, change.pin, change.state) == (street.clock.now(), "GPIO13", True)
    assert change.mono == street.clock.monotonic()


async def test_active_high_inputs() -> None:
    clock = ManualClock(T0)
    sim = SimulatedBollard(
        BollardConfig(device_id="b", backend="simulated", inputs_pull_up=False), clock
    )
    try:
        assert sim.pins["down_limit_pin"].state is True
        assert sim.read().down_limit
        assert sim.pins["loop_pin"].state is True  # normally closed, to the supply: clear
        sim.car_arrives()
        assert sim.pins["loop_pin"].state is False
        assert sim.read().loop_occupied
    finally:
        sim.close()


def test_clocked_factory_ticks_follow_the_clock() -> None:
    clock = ManualClock(T0)
    factory = ClockedMockFactory(clock)
    clock.advance(12.5)
    assert factory.ticks() == 12.5


def test_configuration_picks_the_simulated_backend() -> None:
    driver = open_driver(CONFIG, ManualClock(T0))
    try:
        assert isinstance(driver, SimulatedBollard)
    finally:
        driver.close()
