"""The field-bus lamp backend under the wired lamps' controller, without a broker.

What the node reported is set on the :class:`FieldBus` entry as the gateway would on a
state message; the controller is the one every lamp has.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edge.equipment.lamp.controller import LampConfig, LampController
from edge.equipment.lamp.fieldbus import FIRST_REPORT_S, FieldbusLamp
from edge.events import EquipmentEvent
from edge.fieldbus.gateway import FieldBus, FieldbusConfig
from edge.node import bus
from foundation.clock import ManualClock

DUSK = datetime(2026, 1, 15, 16, 30, tzinfo=UTC)


class Events(list[EquipmentEvent]):
    def __call__(self, event: EquipmentEvent) -> None:
        self.append(event)

    def types(self) -> list[str]:
        return [e.type for e in self]


def state(level: int, power_w: float, faults: tuple[str, ...] = ()) -> bus.NodeState:
    return bus.NodeState(level, bus.MODE_COMMAND, power_w, 0, faults, 60, 0, 1, 0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(DUSK)


def lamp(clock: ManualClock, events: Events) -> tuple[FieldBus, LampController]:
    fieldbus = FieldBus(
        FieldbusConfig(cabinet="cab-01", credentials="unused.json"),
        "unused",
        clock=clock,
        record=events,
        nodes=["n-0001"],
    )
    config = LampConfig.from_mapping(
        {"id": "n-0001", "backend": "fieldbus", "nominal_power_w": 60, "fault_delay_s": 10},
        "lamps[0]",
    )
    driver = FieldbusLamp(fieldbus, "n-0001", clock=clock)
    return fieldbus, LampController(config, driver, events, clock)


def test_a_node_not_heard_yet_reads_not_lit_without_a_fault_until_it_reports(
    clock: ManualClock,
) -> None:
    events = Events()
    fieldbus, controller = lamp(clock, events)
    controller.apply(100, "program:night")
    assert fieldbus.node("n-0001").level == 100  # the command went to the bus
    for _ in range(5):  # well past fault_delay_s: nothing judged, nothing claimed
        clock.advance(60)
        controller.check(clock.now())
    shown = controller.state()
    assert not shown.lamp.lit and shown.lamp.active_power_w == 0.0
    assert not shown.HasField("observed_at")
    assert controller.counters().energy_wh == 0.0 and controller.counters().operating_hours == 0
    assert events.types() == []
    # Its first state: lit, its power metered from then on.
    fieldbus.node("n-0001").state = state(100, 60.5)
    controller.check(clock.now())
    for _ in range(120):  # an hour of the agent's 30 s monitor passes
        clock.advance(30)
        controller.check(clock.now())
    shown = controller.state()
    assert shown.lamp.lit and shown.lamp.active_power_w == 60.5
    assert shown.observed_at.ToDatetime(tzinfo=UTC) == clock.now()
    assert controller.counters().energy_wh == pytest.approx(60.5)
    assert events.types() == []


def test_a_node_silent_past_its_first_report_time_is_a_driver_failure(
    clock: ManualClock,
) -> None:
    events = Events()
    _, controller = lamp(clock, events)
    controller.apply(100, "program:night")
    clock.step_wall(-3 * 3600)  # a wall-clock step neither shortens nor stretches the wait
    clock.advance(FIRST_REPORT_S - 1)
    controller.check(clock.now())
    assert events.types() == []
    clock.advance(2)
    controller.check(clock.now())
    assert events.types() == ["driver_failure"]
    assert "has not reported in 601 s" in events[0].message


def test_a_lamp_fault_then_its_return_to_normal_are_the_wired_lamps_alarms(
    clock: ManualClock,
) -> None:
    events = Events()
    fieldbus, controller = lamp(clock, events)
    controller.apply(80, "program:night")
    fieldbus.node("n-0001").state = state(80, 48.5)
    controller.check(clock.now())
    fieldbus.node("n-0001").state = state(80, 0.0, (bus.FAULT_LAMP,))
    for _ in range(3):
        clock.advance(6)
        controller.check(clock.now())
    fieldbus.node("n-0001").state = state(80, 48.5)
    for _ in range(3):
        clock.advance(6)
        controller.check(clock.now())
    assert [(e.type, e.attributes.get("state")) for e in events] == [
        ("lamp_failure", "raised"),
        ("lamp_failure", "cleared"),
    ]
