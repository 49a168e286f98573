"""The cabinet: configuration, the gpiozero backend on mock pins, and the monitor's alarms."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from gpiozero.pins.mock import MockFactory

from edge.equipment.cabinet.monitor import (
    CabinetConfig,
    CabinetDriverError,
    CabinetMonitor,
    GpioCabinet,
)
from edge.equipment.registry import open_driver
from edge.equipment.sim.cabinet import SimulatedCabinet
from edge.events import EquipmentConfigError, EquipmentEvent, Priority
from foundation.clock import ManualClock
from protos.ondijon.v1 import schedule_pb2

DOOR, MAINS = 22, 23


class Events(list[EquipmentEvent]):
    """An event sink that keeps what it is given (``list.append`` does not match the
    ``EventSink`` protocol's named parameter)."""

    def __call__(self, event: EquipmentEvent) -> None:
        self.append(event)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    pins = MockFactory()
    yield pins
    pins.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 7, 14, 22, 0, tzinfo=UTC))


def config(**overrides: object) -> CabinetConfig:
    entry: dict[str, object] = {"id": "cab-12", "door_pin": DOOR, "mains_pin": MAINS}
    entry.update(overrides)
    return CabinetConfig.from_mapping(entry, "equipment.cabinet")


def alarms(events: list[EquipmentEvent]) -> list[tuple[str, str, Priority]]:
    return [(e.type, e.attributes["state"], e.priority) for e in events]


def test_config_defaults_and_fields() -> None:
    cabinet = config(max_temperature_c=55, temperature_hysteresis_c=3)
    assert (cabinet.device_id, cabinet.door_pin, cabinet.mains_pin) == ("cab-12", DOOR, MAINS)
    assert cabinet.max_temperature_c == 55.0 and cabinet.temperature_hysteresis_c == 3.0
    assert CabinetConfig.from_mapping({"id": "c", "backend": "simulated"}, "c").door_pin is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"door_pin": None}, "equipment.cabinet.door_pin"),
        ({"mains_pin": DOOR}, "equipment.cabinet.mains_pin"),
        ({"mains_pin": 2.5}, "equipment.cabinet.mains_pin"),
        ({"door_pin": ""}, "equipment.cabinet.door_pin"),
        ({"max_temperature_c": 500}, "equipment.cabinet.max_temperature_c"),
        ({"temperature_hysteresis_c": 0}, "equipment.cabinet.temperature_hysteresis_c"),
        ({"backend": "modbus"}, "equipment.cabinet.backend"),
        ({"id": 12}, "equipment.cabinet.id"),
        ({"dor_pin": 4}, "equipment.cabinet.dor_pin"),
    ],
)
def test_config_errors_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(EquipmentConfigError) as caught:
        config(**overrides)
    assert caught.value.field == field


def test_connect_picks_the_configured_backend(factory: MockFactory) -> None:
    assert isinstance(open_driver(config(), pin_factory=factory), GpioCabinet)
    simulated = CabinetConfig.from_mapping({"id": "c", "backend": "simulated"}, "c")
    assert isinstance(open_driver(simulated), SimulatedCabinet)


def test_gpio_inputs_drive_door_and_mains_alarms(factory: MockFactory, clock: ManualClock) -> None:
    events = Events()
    driver = GpioCabinet(door_pin=DOOR, mains_pin=MAINS, pin_factory=factory)
    monitor = CabinetMonitor(config(), driver, events)
    factory.pin(MAINS).drive_high()
    monitor.check(clock.now())
    assert events == []

    factory.pin(DOOR).drive_high()
    factory.pin(MAINS).drive_low()
    for _ in range(3):
        clock.advance(10)
        monitor.check(clock.now())
    assert alarms(events) == [
        ("door_open", "raised", Priority.ALARM),
        ("mains_lost", "raised", Priority.ALARM),
    ]
    state = monitor.state()
    assert state.kind == schedule_pb2.DEVICE_KIND_CABINET
    assert state.cabinet.door_open and state.cabinet.on_battery
    assert state.observed_at.ToDatetime(tzinfo=UTC) == clock.now()

    factory.pin(DOOR).drive_low()
    factory.pin(MAINS).drive_high()
    monitor.check(clock.now())
    monitor.check(clock.now())
    assert alarms(events)[2:] == [
        ("door_open", "cleared", Priority.EVENT),
        ("mains_lost", "cleared", Priority.EVENT),
    ]
    assert monitor.alarms == frozenset()


def test_a_door_opened_and_shut_between_checks_is_still_seen(
    factory: MockFactory, clock: ManualClock
) -> None:
    events = Events()
    driver = GpioCabinet(door_pin=DOOR, mains_pin=MAINS, pin_factory=factory)
    monitor = CabinetMonitor(config(), driver, events)
    factory.pin(MAINS).drive_high()
    monitor.check(clock.now())
    factory.pin(DOOR).drive_high()
    factory.pin(DOOR).drive_low()
    monitor.check(clock.now())
    monitor.check(clock.now())
    assert [(e.type, e.attributes["state"]) for e in events] == [
        ("door_open", "raised"),
        ("door_open", "cleared"),
    ]


def test_gpio_temperature_from_a_callable(factory: MockFactory) -> None:
    values: list[float] = [41.5]

    def sensor() -> float:
        if not values:
            raise OSError("1-wire CRC error")
        return values[0]

    driver = GpioCabinet(door_pin=DOOR, mains_pin=MAINS, temperature=sensor, pin_factory=factory)
    assert driver.read().temperature_c == 41.5
    values.clear()
    assert driver.read().temperature_c is None
    no_sensor = GpioCabinet(door_pin=5, mains_pin=6, pin_factory=factory)
    assert no_sensor.read().temperature_c is None


def test_pins_in_use_are_a_driver_error(factory: MockFactory) -> None:
    first = GpioCabinet(door_pin=DOOR, mains_pin=MAINS, pin_factory=factory)
    with pytest.raises(CabinetDriverError):
        GpioCabinet(door_pin=5, mains_pin=DOOR, pin_factory=factory)
    GpioCabinet(door_pin=5, mains_pin=6, pin_factory=factory)  # pin 5 was given back
    first.close()


def test_over_temperature_with_hysteresis(clock: ManualClock) -> None:
    events = Events()
    cabinet = SimulatedCabinet(temperature_c=50.0)
    monitor = CabinetMonitor(config(max_temperature_c=60), cabinet, events)
    for temperature in (58.0, 60.0, 59.0, 61.0, 56.0, 60.5, 55.5, 55.0, 57.0, 59.9):
        cabinet.temperature_c = temperature
        monitor.check(clock.now())
        clock.advance(60)
    assert alarms(events) == [
        ("over_temperature", "raised", Priority.ALARM),
        ("over_temperature", "cleared", Priority.EVENT),
    ]
    assert "60.0 °C" in events[0].message
    assert "55.0 °C" in events[1].message


def test_unknown_temperature_keeps_the_alarm_state(clock: ManualClock) -> None:
    events = Events()
    cabinet = SimulatedCabinet(temperature_c=70.0)
    monitor = CabinetMonitor(config(), cabinet, events)
    monitor.check(clock.now())
    cabinet.temperature_c = None
    monitor.check(clock.now())
    assert monitor.alarms == {"over_temperature"}
    assert math.isnan(monitor.state().cabinet.temperature_c)
    assert len(events) == 1
