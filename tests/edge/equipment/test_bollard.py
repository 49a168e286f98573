"""The bollard shell: configuration, the gpiozero backend, and the controller on mock pins.

Controller tests run the real GpioBollard on the simulated bollard's clocked mock pins and
assert what the pins did, and when, on the injected clock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from domain.access import Grant, LocalAccessList, credential_digest, digest_prefix
from domain.schedule.model import AccessPolicy, BollardPosition, BollardSetting
from edge.equipment.bollard.controller import (
    BollardConfig,
    BollardController,
    BollardReadings,
    GpioBollard,
    target_from_setting,
)
from edge.equipment.bollard.rules import (
    Access,
    BollardOutputs,
    BollardTarget,
    Mode,
    Position,
)
from edge.equipment.registry import open_driver
from edge.equipment.sim.bollard import ClockedMockFactory, SimulatedBollard
from edge.events import EquipmentConfigError, EquipmentEvent, Priority
from foundation.clock import ManualClock
from protos.ondijon.v1 import schedule_pb2, state_pb2

T0 = datetime(2026, 9, 14, 7, 0, tzinfo=UTC)
UP_LIST = BollardTarget(Position.UP, Access.LIST)
BADGE = "livreur-0042"
PINS: dict[str, Any] = {
    "motor_up_pin": 17,
    "motor_down_pin": 27,
    "warning_light_pin": 22,
    "up_limit_pin": 5,
    "down_limit_pin": 6,
    "loop_pin": 13,
    "edge_pin": 19,
    "emergency_pin": 26,
}


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


class Site:
    """A controller running a simulated bollard on a manual clock."""

    def __init__(self, config: BollardConfig) -> None:
        self.clock = ManualClock(T0)
        self.config = config
        self.sim = SimulatedBollard(config, self.clock)
        self.events: list[EquipmentEvent] = []
        access = LocalAccessList([Grant(credential_digest(BADGE), "Livraisons Darcy")])
        self.controller = BollardController(
            config=config,
            driver=self.sim,
            clock=self.clock,
            sink=self.events.append,
            access_list=access,
        )

    async def run_for(self, seconds: float, tick: float = 0.01) -> None:
        await settle()  # let the loop handle what the test just did, before time moves
        for _ in range(round(seconds / tick)):
            self.clock.advance(tick)
            await settle()

    def elapsed(self) -> float:
        return (self.clock.now() - T0).total_seconds()

    def changes(self, field: str) -> list[tuple[float, bool]]:
        """When the pin of ``field`` changed, in seconds since T0, and to what."""
        name = self.sim.pins[field].info.name
        return [
            (round((c.at - T0).total_seconds(), 3), c.state)
            for c in self.sim.factory.history
            if c.pin == name
        ]

    def rises(self) -> list[float]:
        return [t for t, state in self.changes("motor_up_pin") if state]

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def assert_motors_never_both_on(self) -> None:
        up_name = self.sim.pins["motor_up_pin"].info.name
        down_name = self.sim.pins["motor_down_pin"].info.name
        on = {up_name: False, down_name: False}
        for change in self.sim.factory.history:
            if change.pin in on:
                on[change.pin] = change.state
                assert not all(on.values()), f"both motors on at {change.at}"
        assert not self.sim.both_motors_seen


@pytest.fixture
def config() -> BollardConfig:
    return BollardConfig(device_id="bollard-darcy-1", backend="simulated")


@pytest.fixture
async def site(config: BollardConfig) -> AsyncIterator[Site]:
    site = Site(config)
    task = asyncio.create_task(site.controller.run())
    await settle()
    yield site
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    site.assert_motors_never_both_on()
    site.sim.close()


async def rise(site: Site) -> None:
    site.controller.apply(UP_LIST, source="program:pietonnier")
    await site.run_for(4.5)
    assert site.sim.read().up_limit


# -- the rise, on the pins -------------------------------------------------------------------


async def test_warning_light_pin_goes_high_a_second_before_the_motor_up_pin(site: Site) -> None:
    site.controller.apply(UP_LIST)
    await site.run_for(5)
    light = site.sim.pins["warning_light_pin"]
    motor_up = site.sim.pins["motor_up_pin"]
    # (seconds since the previous change, state), on the injected clock
    light.assert_states_and_times([(0.0, False), (0.0, True), (3.98, False)])
    motor_up.assert_states_and_times([(0.0, False), (1.0, True), (2.98, False)])
    assert site.changes("warning_light_pin")[0] == (0.0, True)
    assert site.rises() == [1.0]
    assert site.types() == ["rising", "raised"]


async def test_waits_for_the_vehicle_to_leave_the_loop_before_rising(site: Site) -> None:
    site.sim.car_arrives()
    site.controller.apply(UP_LIST)
    await site.run_for(30, tick=0.1)
    assert site.changes("motor_up_pin") == []
    assert site.changes("warning_light_pin") == []
    site.sim.car_leaves()
    await site.run_for(5)
    assert site.changes("warning_light_pin")[0] == (30.0, True)
    assert site.rises() == [31.0]


async def test_vehicle_on_the_loop_during_the_rise_reverses_it_at_once(site: Site) -> None:
    site.controller.apply(UP_LIST)
    await site.run_for(2)
    site.sim.car_arrives()
    await settle()
    assert site.changes("motor_up_pin")[-1] == (2.0, False)
    assert site.changes("motor_down_pin") == [(2.0, True)]
    site.assert_motors_never_both_on()
    await site.run_for(3)
    assert site.sim.read().down_limit
    assert site.controller.state().bollard.reversals == 1


async def test_three_reversals_lock_the_bollard_down_with_an_alarm(site: Site) -> None:
    site.sim.place_obstacle(height=0.5)
    site.controller.apply(UP_LIST)
    await site.run_for(60, tick=0.05)
    assert len(site.rises()) == 3
    alarms = [e for e in site.events if e.priority is Priority.ALARM]
    assert [e.type for e in alarms] == ["locked_out"]
    bollard = site.controller.state().bollard
    assert bollard.motion == state_pb2.BOLLARD_MOTION_DOWN
    assert bollard.reversals == 3
    assert "reversal_lockout" in bollard.faults
    site.sim.remove_obstacle()
    await site.run_for(30, tick=0.1)
    assert len(site.rises()) == 3  # still locked out with the obstacle gone
    site.controller.reset()
    await site.run_for(5)
    assert site.sim.read().up_limit
    assert site.controller.state().bollard.reversals == 0


async def test_a_mode_change_keeps_the_lockout_only_a_reset_clears_it() -> None:
    site = Site(BollardConfig(device_id="b", backend="simulated", max_reversals=1))
    task = asyncio.create_task(site.controller.run())
    try:
        await settle()
        site.sim.place_obstacle(height=0.3)
        site.controller.apply(UP_LIST)
        await site.run_for(10, tick=0.05)
        assert site.controller.state().bollard.faults == ["reversal_lockout"]
        site.sim.remove_obstacle()
        site.controller.set_mode(Mode.HELD_UP)
        await site.run_for(5)
        assert site.sim.read().down_limit and not site.rises()[1:]
        site.controller.reset()
        await site.run_for(5)
        assert site.sim.read().up_limit
        assert [e.message for e in site.events if e.type == "reset"] == [
            "reset by operator: reversal lockout"
        ]
        assert site.controller.state().bollard.mode == state_pb2.BOLLARD_MODE_HELD_UP
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        site.sim.close()


# -- emergency and faults ----------------------------------------------------------------------


async def test_emergency_key_lowers_a_held_up_bollard_and_keeps_it_down(site: Site) -> None:
    site.controller.set_mode(Mode.HELD_UP)
    await site.run_for(4.5)
    assert site.sim.read().up_limit
    site.sim.turn_emergency_key(True)
    await settle()
    assert site.changes("motor_down_pin") == [(4.5, True)]
    await site.run_for(120, tick=0.1)
    assert site.rises() == [1.0]  # no rise while the key is turned
    state = site.controller.state()
    assert state.bollard.emergency
    assert state.source == "sensor"
    assert state.bollard.motion == state_pb2.BOLLARD_MOTION_DOWN
    site.sim.turn_emergency_key(False)
    await site.run_for(5)
    assert site.rises() == [1.0, 125.5]


async def test_emergency_key_during_a_rise_reverses_it(site: Site) -> None:
    site.controller.apply(UP_LIST)
    await site.run_for(2)
    site.sim.turn_emergency_key(True)
    await settle()
    assert site.changes("motor_down_pin") == [(2.0, True)]
    assert "emergency_lowering" in site.types()


async def test_jammed_post_is_a_fault_after_the_travel_timeout(site: Site) -> None:
    site.sim.jam()
    site.controller.apply(UP_LIST)
    await site.run_for(12, tick=0.05)
    assert site.changes("motor_up_pin") == [(1.0, True), (9.0, False)]
    faults = [e for e in site.events if e.type == "fault"]
    assert [(e.priority, e.attributes["fault"]) for e in faults] == [
        (Priority.ALARM, "rise_timeout")
    ]
    assert site.controller.state().bollard.motion == state_pb2.BOLLARD_MOTION_FAULT


async def test_travel_timeout_follows_the_configuration() -> None:
    site = Site(BollardConfig(device_id="b", backend="simulated", travel_timeout_s=5))
    task = asyncio.create_task(site.controller.run())
    try:
        await settle()
        site.sim.jam()
        site.controller.apply(UP_LIST)
        await site.run_for(8, tick=0.05)
        assert site.changes("motor_up_pin") == [(1.0, True), (6.0, False)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        site.sim.close()


async def test_both_limit_switches_active_is_a_sensor_fault(site: Site) -> None:
    await rise(site)
    site.sim.stick_limit_switch("down", True)
    await settle()
    state = site.controller.state().bollard
    assert state.motion == state_pb2.BOLLARD_MOTION_FAULT
    assert list(state.faults) == ["limit_switches"]
    assert [e.priority for e in site.events if e.type == "fault"] == [Priority.ALARM]


# -- access ------------------------------------------------------------------------------------


async def test_granted_identifier_lowers_for_one_passage(site: Site) -> None:
    await rise(site)
    decision = site.controller.present(BADGE)
    assert decision.granted
    await site.run_for(3)
    assert site.sim.read().down_limit
    site.sim.car_arrives()
    await site.run_for(2)
    site.sim.car_leaves()
    await site.run_for(5)
    assert site.rises() == [1.0, 10.5]  # rose again once the vehicle had passed
    granted = next(e for e in site.events if e.type == "access_granted")
    assert granted.attributes == {
        "credential": digest_prefix(BADGE),
        "reason": "granted",
        "label": "Livraisons Darcy",
    }
    assert all(BADGE not in repr(e) for e in site.events)


async def test_passage_ends_after_the_configured_time(site: Site) -> None:
    await rise(site)
    site.controller.present(BADGE)
    await site.run_for(25, tick=0.05)
    assert site.rises() == [1.0, 4.5 + 20 + 1]


async def test_refused_identifier_is_logged_by_digest_prefix_only(site: Site) -> None:
    await rise(site)
    decision = site.controller.present("AB-123-CD")
    assert not decision.granted
    await site.run_for(3)
    assert site.sim.read().up_limit
    refused = site.events[-1]
    assert refused.type == "access_refused"
    assert refused.attributes == {
        "credential": digest_prefix("AB-123-CD"),
        "reason": "unknown_credential",
    }
    assert "AB-123-CD" not in repr(refused)


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (lambda c: c.apply(BollardTarget(Position.UP, Access.CLOSED)), "policy_closed"),
        (lambda c: c.set_mode(Mode.HELD_UP), "mode_held_up"),
    ],
)
async def test_valid_identifier_does_not_override_policy_or_operator(
    site: Site, command: Callable[[BollardController], None], reason: str
) -> None:
    command(site.controller)
    await site.run_for(4.5)
    decision = site.controller.present(BADGE)
    assert (decision.granted, decision.reason) == (False, reason)
    await site.run_for(3)
    assert site.sim.read().up_limit


# -- state, threads, lifecycle -----------------------------------------------------------------


async def test_state_reports_the_bollard(site: Site) -> None:
    await rise(site)
    site.sim.car_arrives()
    await settle()
    state = site.controller.state()
    assert state.device_id == "bollard-darcy-1"
    assert state.kind == schedule_pb2.DEVICE_KIND_BOLLARD
    assert state.source == "program:pietonnier"
    assert state.observed_at.ToDatetime(UTC) == site.clock.now()
    assert state.bollard.motion == state_pb2.BOLLARD_MOTION_UP
    assert state.bollard.mode == state_pb2.BOLLARD_MODE_AUTOMATIC
    assert state.bollard.loop_occupied


class Recording:
    """A driver wrapper that notes which thread reads the inputs, and how often."""

    def __init__(self, inner: SimulatedBollard) -> None:
        self.inner = inner
        self.reader_threads: set[int] = set()

    def read(self) -> BollardReadings:
        self.reader_threads.add(threading.get_ident())
        return self.inner.read()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_input_changes_from_another_thread_are_handled_on_the_loop() -> None:
    site = Site(BollardConfig(device_id="b", backend="simulated"))
    driver = Recording(site.sim)
    controller = BollardController(
        config=site.config, driver=driver, clock=site.clock, sink=site.events.append
    )
    task = asyncio.create_task(controller.run())
    try:
        await settle()
        loop_pin = site.sim.pins["loop_pin"]
        # Normally closed: the detector opens its contact (the pin goes high) when occupied.
        await asyncio.to_thread(loop_pin.drive_high)  # gpiozero calls back in that thread
        await settle()
        assert controller.state().bollard.loop_occupied
        assert driver.reader_threads == {threading.get_ident()}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        site.sim.close()


async def test_an_idle_bollard_does_not_poll(site: Site) -> None:
    reads = 0
    real_read = site.sim.read

    def counting_read() -> BollardReadings:
        nonlocal reads
        reads += 1
        return real_read()

    site.sim.read = counting_read  # type: ignore[method-assign]
    await site.run_for(3600, tick=10)
    assert reads == 0


async def test_stopping_the_controller_switches_the_motors_off(config: BollardConfig) -> None:
    site = Site(config)
    task = asyncio.create_task(site.controller.run())
    await settle()
    site.controller.apply(UP_LIST)
    await site.run_for(2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not site.sim.pins["motor_up_pin"].state
    assert not site.sim.pins["warning_light_pin"].state
    site.sim.close()


# -- gpiozero backend --------------------------------------------------------------------------


@pytest.fixture
def mock_factory() -> Iterator[MockFactory]:
    previous = Device.pin_factory
    Device.pin_factory = MockFactory()
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = previous


def test_gpio_backend_reads_open_safety_circuits_as_unsafe(mock_factory: MockFactory) -> None:
    """Nothing wired (every input pulled up, every circuit open): the loop reads occupied,
    the edge obstructed, the emergency key turned; the limit switches (normally open) idle."""
    driver = open_driver(BollardConfig(device_id="b", **PINS), ManualClock(T0))
    try:
        assert isinstance(driver, GpioBollard)
        assert driver.read() == BollardReadings(
            loop_occupied=True, obstruction=True, emergency=True
        )
        for safety_pin in (13, 19, 26):  # closed contacts to ground: all clear
            mock_factory.pin(safety_pin).drive_low()
        assert driver.read() == BollardReadings()
        mock_factory.pin(6).drive_low()  # the down switch closes
        mock_factory.pin(13).drive_high()  # the loop detector opens: a vehicle, or a cut
        assert driver.read() == BollardReadings(down_limit=True, loop_occupied=True)
    finally:
        driver.close()


def test_gpio_backend_reports_input_changes(mock_factory: MockFactory) -> None:
    driver = GpioBollard(BollardConfig(device_id="b", **PINS))
    calls: list[str] = []
    driver.on_change(lambda: calls.append("changed"))
    try:
        mock_factory.pin(19).drive_low()
        mock_factory.pin(19).drive_high()
        assert calls == ["changed", "changed"]
    finally:
        driver.close()


def test_gpio_backend_switches_a_motor_off_before_the_other_on() -> None:
    clock = ManualClock(T0)
    factory = ClockedMockFactory(clock)
    driver = GpioBollard(BollardConfig(device_id="b", **PINS), pin_factory=factory)
    try:
        driver.drive(BollardOutputs(motor_up=True, warning_light=True))
        driver.drive(BollardOutputs(motor_down=True, warning_light=True))
        motors = [(c.pin, c.state) for c in factory.history if c.pin in ("GPIO17", "GPIO27")]
        assert motors == [("GPIO17", True), ("GPIO17", False), ("GPIO27", True)]
    finally:
        driver.close()


def test_gpio_backend_names_the_pin_it_cannot_claim(mock_factory: MockFactory) -> None:
    first = GpioBollard(BollardConfig(device_id="a", **PINS))
    try:
        other: dict[str, Any] = {
            **PINS,
            "motor_up_pin": 4,
            "motor_down_pin": 12,
            "warning_light_pin": 16,
        }
        other.update(up_limit_pin=20, down_limit_pin=21, loop_pin=13, edge_pin=23)
        with pytest.raises(EquipmentConfigError) as caught:
            GpioBollard(BollardConfig(device_id="b", field_prefix="bollards[1]", **other))
        assert caught.value.field == "bollards[1].loop_pin"
        with pytest.raises(EquipmentConfigError) as caught:
            GpioBollard(BollardConfig(device_id="c", **{**PINS, "motor_up_pin": "GPIO99"}))
        assert caught.value.field == "motor_up_pin"
    finally:
        first.close()
    GpioBollard(BollardConfig(device_id="a", **PINS)).close()  # released on failure and close


# -- configuration -----------------------------------------------------------------------------


def test_config_from_mapping() -> None:
    config = BollardConfig.from_mapping(
        {"id": "b-7", **PINS, "warning_s": 2, "passage_s": 30, "max_reversals": 2},
        "equipment.bollards[0]",
    )
    assert config.motor_up_pin == 17
    assert config.warning_s == 2.0
    assert config.rules().max_reversals == 2
    assert config.field("loop_pin") == "equipment.bollards[0].loop_pin"


def test_simulated_backend_may_use_the_reference_wiring() -> None:
    config = BollardConfig.from_mapping({"id": "b", "backend": "simulated"}, "b")
    assert config.loop_pin == 13


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": ""}, "id"),
        ({"backend": "mqtt"}, "backend"),
        ({"loop_pin": None}, "loop_pin"),
        ({"loop_pin": True}, "loop_pin"),
        ({"loop_pin": -3}, "loop_pin"),
        ({"loop_pin": 17}, "loop_pin"),  # the motor's pin
        ({"warning_s": 0.5}, "warning_s"),
        ({"travel_timeout_s": 0}, "travel_timeout_s"),
        ({"passage_s": "20"}, "passage_s"),
        ({"max_reversals": 0}, "max_reversals"),
        ({"inputs_pull_up": "yes"}, "inputs_pull_up"),
        ({"loop_pni": 3}, "loop_pni"),
    ],
)
def test_bad_config_names_the_field(changes: dict[str, Any], field: str) -> None:
    mapping = {"id": "b", **PINS, **changes}
    mapping = {k: v for k, v in mapping.items() if v is not None}
    with pytest.raises(EquipmentConfigError) as caught:
        BollardConfig.from_mapping(mapping, "equipment.bollards[2]")
    assert caught.value.field == f"equipment.bollards[2].{field}"


def test_gpio_backend_requires_every_pin() -> None:
    mapping = {"id": "b", **PINS}
    del mapping["edge_pin"]
    with pytest.raises(EquipmentConfigError) as caught:
        BollardConfig.from_mapping(mapping, "")
    assert (caught.value.field, caught.value.reason) == (
        "edge_pin",
        "required for the gpio backend",
    )


UP, DOWN = BollardPosition.UP, BollardPosition.DOWN
OPEN, LIST, CLOSED = AccessPolicy.OPEN, AccessPolicy.LIST, AccessPolicy.CLOSED


@pytest.mark.parametrize(
    ("position", "access", "expected"),
    [
        (None, None, BollardTarget(Position.DOWN, Access.OPEN)),
        (None, OPEN, BollardTarget(Position.DOWN, Access.OPEN)),
        (None, LIST, BollardTarget(Position.UP, Access.LIST)),
        (None, CLOSED, BollardTarget(Position.UP, Access.CLOSED)),
        # The case the agent and this module once read two ways: UP alone means closed.
        (UP, None, BollardTarget(Position.UP, Access.CLOSED)),
        (UP, OPEN, BollardTarget(Position.UP, Access.OPEN)),
        (UP, LIST, BollardTarget(Position.UP, Access.LIST)),
        (UP, CLOSED, BollardTarget(Position.UP, Access.CLOSED)),
        (DOWN, None, BollardTarget(Position.DOWN, Access.OPEN)),
        (DOWN, OPEN, BollardTarget(Position.DOWN, Access.OPEN)),
        (DOWN, LIST, BollardTarget(Position.DOWN, Access.LIST)),
        (DOWN, CLOSED, BollardTarget(Position.DOWN, Access.CLOSED)),
    ],
)
def test_schedule_setting_maps_to_one_target(
    position: BollardPosition | None, access: AccessPolicy | None, expected: BollardTarget
) -> None:
    assert target_from_setting(BollardSetting(position, access)) == expected
