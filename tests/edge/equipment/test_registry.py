"""The registry: one place picks every backend, and the simulated ones run the real drivers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from edge.equipment.bollard.config import BollardConfig
from edge.equipment.cabinet.config import CabinetConfig
from edge.equipment.cabinet.monitor import GpioCabinet
from edge.equipment.device import BOLLARD, CABINET, LAMP, Device
from edge.equipment.lamp.config import LampConfig
from edge.equipment.lamp.controller import GpioLamp, LampDriverError
from edge.equipment.registry import Context, open_equipment
from edge.equipment.sim.cabinet import SimulatedCabinet
from edge.equipment.sim.lantern import SimulatedLamp
from edge.events import EquipmentEvent
from foundation.clock import ManualClock

T0 = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)


def lamp(device_id: str, **pins: int) -> LampConfig:
    return LampConfig(device_id=device_id, nominal_power_w=60, **pins)  # type: ignore[arg-type]


def test_the_devices_come_in_configuration_order_with_their_kind() -> None:
    clock = ManualClock(T0)
    events: list[EquipmentEvent] = []
    equipment = open_equipment(
        lamps=[
            LampConfig(device_id="l1", nominal_power_w=60, backend="simulated"),
            LampConfig(device_id="l2", nominal_power_w=60, backend="simulated"),
        ],
        bollards=[BollardConfig(device_id="b1", backend="simulated")],
        cabinet=CabinetConfig(device_id="cab", backend="simulated"),
        context=Context(clock=clock),
        record=events.append,
        report=lambda state: None,
    )
    try:
        devices: list[Device] = equipment.devices
        assert [(d.device_id, d.kind) for d in devices] == [
            ("l1", LAMP),
            ("l2", LAMP),
            ("b1", BOLLARD),
            ("cab", CABINET),
        ]
        assert [d.state().device_id for d in devices] == ["l1", "l2", "b1", "cab"]
    finally:
        equipment.close()


def test_a_simulated_lamp_drives_the_pins_of_the_gpio_driver() -> None:
    clock = ManualClock(T0)
    lamp_ = SimulatedLamp(clock=clock, warm_up_s=0)
    assert isinstance(lamp_._gpio, GpioLamp)
    lamp_.drive(True, 0.4)
    # The relay coil energised (normally open: closed contacts), the dimming duty on its pin.
    assert lamp_.relay_pin.state and lamp_.pwm_pin.state == pytest.approx(0.4)
    assert lamp_.sense_pin.state  # the lantern behind the pins draws current
    lamp_.drive(False, 0.4)
    assert not lamp_.relay_pin.state and not lamp_.sense_pin.state
    lamp_.close()


def test_a_simulated_cabinet_latches_a_brief_door_opening_like_the_gpio_one() -> None:
    cabinet = SimulatedCabinet(clock=ManualClock(T0))
    assert isinstance(cabinet._gpio, GpioCabinet)
    cabinet.door_open = True
    cabinet.door_open = False  # opened and shut between two readings: a break-in's look
    assert cabinet.read().door_open is True
    assert cabinet.read().door_open is False
    cabinet.on_battery = True
    assert cabinet.read().on_battery is True
    cabinet.close()


def test_a_device_that_cannot_be_opened_leaves_nothing_open() -> None:
    factory = MockFactory(pin_class=MockPWMPin)
    clock = ManualClock(T0)
    with pytest.raises(LampDriverError):
        open_equipment(
            lamps=[
                lamp("l1", relay_pin=5, pwm_pin=6, sense_pin=13),
                lamp("l2", relay_pin=5, pwm_pin=19, sense_pin=26),  # pin 5 again
            ],
            context=Context(clock=clock, pin_factory=factory),
            record=lambda event: None,
            report=lambda state: None,
        )
    # l1's pins were released: they can be claimed again.
    again = GpioLamp(relay_pin=5, pwm_pin=6, sense_pin=13, pin_factory=factory)
    again.close()
