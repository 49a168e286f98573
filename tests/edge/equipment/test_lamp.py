"""Lamp configuration, the gpiozero backend on mock pins, and the lamp controller."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from edge.equipment.lamp.controller import (
    GpioLamp,
    LampConfig,
    LampController,
    LampCounters,
    LampDriverError,
)
from edge.equipment.registry import open_driver
from edge.equipment.sim.lantern import MockLantern, SimulatedLamp, clocked_pwm_factory
from edge.events import EquipmentConfigError, EquipmentEvent, Priority
from foundation.clock import ManualClock
from protos.ondijon.v1 import schedule_pb2

RELAY, PWM, SENSE = 17, 18, 27
# The relay is wired normally closed by default: the coil at rest (pin low on an active-high
# board) feeds the lamp, the agent energises it (pin high) to switch the lamp off.
COIL_AT_REST, COIL_ENERGISED = 0, 1
DUSK = datetime(2026, 1, 15, 16, 30, tzinfo=UTC)


class Events(list[EquipmentEvent]):
    """An event sink that keeps what it is given (``list.append`` does not match the
    ``EventSink`` protocol's named parameter)."""

    def __call__(self, event: EquipmentEvent) -> None:
        self.append(event)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    pins = MockFactory(pin_class=MockPWMPin)
    yield pins
    pins.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(DUSK)


@pytest.fixture
def events() -> Events:
    return Events()


def gpio_config(**overrides: object) -> LampConfig:
    entry: dict[str, object] = {
        "id": "lamp-1",
        "nominal_power_w": 60,
        "relay_pin": RELAY,
        "pwm_pin": PWM,
        "sense_pin": SENSE,
        "fault_delay_s": 10,
    }
    entry.update(overrides)
    return LampConfig.from_mapping(entry, "lamps[0]")


def gpio_controller(
    factory: MockFactory,
    clock: ManualClock,
    events: Events,
    **overrides: object,
) -> LampController:
    config = gpio_config(**overrides)
    driver = open_driver(config, clock=clock, pin_factory=factory)
    return LampController(config, driver, events, clock)


def sim_controller(
    clock: ManualClock, events: Events, **overrides: object
) -> tuple[LampController, SimulatedLamp]:
    config = gpio_config(backend="simulated", **overrides)
    driver = SimulatedLamp(clock=clock, nominal_power_w=config.nominal_power_w, warm_up_s=2)
    return LampController(config, driver, events, clock), driver


def alarms(events: Events) -> list[tuple[str, str]]:
    return [(e.type, e.attributes.get("state", "")) for e in events]


# --- configuration -------------------------------------------------------------------


def test_config_reads_a_complete_gpio_entry() -> None:
    config = gpio_config(
        relay_active_high=False,
        relay_wiring="normally_open",
        pwm_active_high=False,
        pwm_frequency_hz=500,
        dimming_tolerance=0.2,
    )
    assert config.device_id == "lamp-1"
    assert config.nominal_power_w == 60.0
    assert (config.relay_pin, config.pwm_pin, config.sense_pin) == (RELAY, PWM, SENSE)
    assert config.relay_active_high is False
    assert config.relay_wiring == "normally_open"
    assert config.pwm_active_high is False
    assert config.pwm_frequency_hz == 500.0


def test_the_relay_is_wired_normally_closed_unless_said_otherwise() -> None:
    config = gpio_config()
    assert (config.relay_wiring, config.relay_active_high, config.pwm_active_high) == (
        "normally_closed",
        True,
        True,
    )


def test_simulated_backend_needs_no_pins() -> None:
    config = LampConfig.from_mapping(
        {"id": "sim", "nominal_power_w": 40, "backend": "simulated"}, "lamps[1]"
    )
    assert config.backend == "simulated"
    assert config.relay_pin is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"pwm_pin": None}, "lamps[3].pwm_pin"),
        ({"pwm_pin": -2}, "lamps[3].pwm_pin"),
        ({"pwm_pin": True}, "lamps[3].pwm_pin"),
        ({"sense_pin": RELAY}, "lamps[3].sense_pin"),
        ({"relay_pin": "  "}, "lamps[3].relay_pin"),
        ({"nominal_power_w": 0}, "lamps[3].nominal_power_w"),
        ({"nominal_power_w": "60"}, "lamps[3].nominal_power_w"),
        ({"nominal_power_w": float("nan")}, "lamps[3].nominal_power_w"),
        ({"id": ""}, "lamps[3].id"),
        ({"backend": "dali"}, "lamps[3].backend"),
        ({"relay_active_high": "yes"}, "lamps[3].relay_active_high"),
        ({"relay_wiring": "closed"}, "lamps[3].relay_wiring"),
        ({"relay_wiring": True}, "lamps[3].relay_wiring"),
        ({"pwm_active_high": 0}, "lamps[3].pwm_active_high"),
        ({"dimming_tolerance": 2}, "lamps[3].dimming_tolerance"),
        ({"fault_delay_s": -1}, "lamps[3].fault_delay_s"),
        ({"pwm_pn": 5}, "lamps[3].pwm_pn"),
    ],
)
def test_config_errors_name_the_field(overrides: dict[str, object], field: str) -> None:
    entry: dict[str, object] = {
        "id": "lamp-4",
        "nominal_power_w": 60,
        "relay_pin": RELAY,
        "pwm_pin": PWM,
        "sense_pin": SENSE,
    }
    entry.update(overrides)
    with pytest.raises(EquipmentConfigError) as caught:
        LampConfig.from_mapping(entry, "lamps[3]")
    assert caught.value.field == field


def test_config_requires_nominal_power() -> None:
    with pytest.raises(EquipmentConfigError) as caught:
        LampConfig.from_mapping({"id": "x", "backend": "simulated"}, "lamps[0]")
    assert caught.value.field == "lamps[0].nominal_power_w"


def test_connect_picks_the_configured_backend(factory: MockFactory, clock: ManualClock) -> None:
    assert isinstance(open_driver(gpio_config(), clock=clock, pin_factory=factory), GpioLamp)
    simulated = gpio_config(backend="simulated")
    assert isinstance(open_driver(simulated, clock=clock), SimulatedLamp)


# --- gpiozero backend: the actual pins -------------------------------------------------


def test_dimming_to_40_percent_sets_pwm_and_closes_relay(
    factory: MockFactory, clock: ManualClock, events: Events
) -> None:
    lamp = gpio_controller(factory, clock, events)
    assert lamp.apply(40, "program:night") == 40
    assert factory.pin(PWM).state == pytest.approx(0.4)
    assert factory.pin(RELAY).state == COIL_AT_REST
    assert factory.pin(PWM).frequency == 200


def test_level_zero_opens_the_relay_before_dropping_pwm(
    factory: MockFactory, clock: ManualClock, events: Events
) -> None:
    lamp = gpio_controller(factory, clock, events)
    lamp.apply(100, "program:night")
    factory.pin(RELAY).clear_states()
    factory.pin(PWM).clear_states()
    lamp.apply(0, "program:night")
    assert factory.pin(RELAY).state == COIL_ENERGISED
    assert factory.pin(PWM).state == 0
    assert [s.state for s in factory.pin(RELAY).states] == [COIL_AT_REST, COIL_ENERGISED]
    assert [s.state for s in factory.pin(PWM).states] == [1, 0]


class JournalPin(MockPWMPin):  # type: ignore[misc]
    """A mock pin that also writes every change into one journal shared by all pins."""

    journal: list[tuple[str, float]] = []

    def _change_state(self, value: float) -> bool:
        changed: bool = super()._change_state(value)
        if changed and self.function == "output":
            JournalPin.journal.append((self.info.name, float(value)))
        return changed


@pytest.mark.parametrize(
    ("wiring", "feeds", "cuts"),
    [("normally_closed", 0.0, 1.0), ("normally_open", 1.0, 0.0)],
)
def test_outputs_change_in_an_order_that_never_flashes(
    wiring: str, feeds: float, cuts: float
) -> None:
    journal_factory = MockFactory(pin_class=JournalPin)
    lamp = GpioLamp(
        relay_pin=RELAY,
        pwm_pin=PWM,
        sense_pin=SENSE,
        relay_wiring=wiring,
        pin_factory=journal_factory,
    )
    lamp.drive(False, 0.0)
    JournalPin.journal.clear()
    lamp.drive(True, 0.3)
    lamp.drive(False, 0.3)
    relay, pwm = f"GPIO{RELAY}", f"GPIO{PWM}"
    # dimming set before the contacts close; the contacts open before dimming drops
    assert JournalPin.journal == [(pwm, 0.3), (relay, feeds), (relay, cuts), (pwm, 0.0)]
    journal_factory.close()


def test_active_low_relay_board_is_driven_low_to_energise_the_coil(
    factory: MockFactory,
) -> None:
    lamp = GpioLamp(
        relay_pin=RELAY,
        pwm_pin=PWM,
        sense_pin=SENSE,
        relay_active_high=False,
        pin_factory=factory,
    )
    assert factory.pin(RELAY).state == 1  # opened with the coil at rest: lit
    lamp.drive(False, 0.0)
    assert factory.pin(RELAY).state == 0  # coil energised: the contacts open, dark
    lamp.drive(True, 1.0)
    assert factory.pin(RELAY).state == 1


def test_an_inverted_dimming_line_is_driven_high_to_dim(factory: MockFactory) -> None:
    lamp = GpioLamp(
        relay_pin=RELAY, pwm_pin=PWM, sense_pin=SENSE, pwm_active_high=False, pin_factory=factory
    )
    lamp.drive(True, 0.3)
    # a transistor sinking the 1-10 V line while the pin is high: 70 % sunk leaves 30 %
    assert factory.pin(PWM).state == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("overrides", "lit_without_agent"),
    [
        ({}, True),  # the default: normally closed
        ({"relay_active_high": False}, True),
        ({"relay_wiring": "normally_open"}, False),  # what that setting costs
    ],
)
@pytest.mark.parametrize("level", [0, 40])
def test_a_released_relay_output_leaves_the_lamp_lit_unless_wired_normally_open(
    clock: ManualClock, overrides: dict[str, object], lit_without_agent: bool, level: int
) -> None:
    pins = clocked_pwm_factory(clock)
    config = gpio_config(**overrides)
    lantern = MockLantern(
        pins,
        relay_pin=RELAY,
        sense_pin=SENSE,
        relay_wiring=config.relay_wiring,
        relay_active_high=config.relay_active_high,
    )
    lamp = LampController(
        config, open_driver(config, clock=clock, pin_factory=pins), Events(), clock
    )
    lamp.apply(level, "program:x")
    assert lantern.lit is (level > 0)
    # The agent stops (gpiozero turns the output into an input) or the board loses power:
    # the relay board's own resistor then holds its input at the coil's rest level.
    lamp.close()
    pin = pins.pin(RELAY)
    assert pin.function == "input"
    pin.pull = "down" if config.relay_active_high else "up"
    assert lantern.lit is lit_without_agent
    pins.close()


def test_current_sense_and_power_reader_are_read(factory: MockFactory) -> None:
    watts = [31.5]
    lamp = GpioLamp(
        relay_pin=RELAY,
        pwm_pin=PWM,
        sense_pin=SENSE,
        power_reader=lambda: watts[0],
        pin_factory=factory,
    )
    assert lamp.read().current is False
    factory.pin(SENSE).drive_high()
    reading = lamp.read()
    assert reading.current is True and reading.power_w == 31.5
    watts[0] = float("nan")
    with pytest.raises(LampDriverError):
        lamp.read()


def test_pins_in_use_are_a_driver_error(factory: MockFactory) -> None:
    first = GpioLamp(relay_pin=RELAY, pwm_pin=PWM, sense_pin=SENSE, pin_factory=factory)
    with pytest.raises(LampDriverError):
        GpioLamp(relay_pin=5, pwm_pin=6, sense_pin=SENSE, pin_factory=factory)
    # the pins it had opened before failing were given back
    GpioLamp(relay_pin=5, pwm_pin=6, sense_pin=26, pin_factory=factory)
    first.close()


# --- faults from the current-sense pin --------------------------------------------------


def test_lamp_failure_raised_once_after_the_delay_and_cleared_once(
    factory: MockFactory, clock: ManualClock, events: Events
) -> None:
    lamp = gpio_controller(factory, clock, events)
    lamp.apply(100, "program:night")
    for _ in range(5):
        lamp.check(clock.now())
        clock.advance(4)
    assert alarms(events) == [("lamp_failure", "raised")]
    assert events[0].priority is Priority.ALARM
    assert "lamp_failure" in lamp.state().lamp.faults
    factory.pin(SENSE).drive_high()
    for _ in range(5):
        lamp.check(clock.now())
        clock.advance(4)
    assert alarms(events) == [("lamp_failure", "raised"), ("lamp_failure", "cleared")]
    assert events[1].priority is Priority.EVENT
    assert lamp.state().lamp.faults == []


def test_a_short_dropout_is_not_a_fault(
    factory: MockFactory, clock: ManualClock, events: Events
) -> None:
    lamp = gpio_controller(factory, clock, events)
    factory.pin(SENSE).drive_high()
    lamp.apply(100, "program:night")
    lamp.check(clock.now())
    factory.pin(SENSE).drive_low()
    clock.advance(5)
    lamp.check(clock.now())
    factory.pin(SENSE).drive_high()
    clock.advance(10)
    lamp.check(clock.now())
    assert events == []


def test_reapplying_the_same_level_does_not_postpone_a_fault(
    factory: MockFactory, clock: ManualClock, events: Events
) -> None:
    lamp = gpio_controller(factory, clock, events)
    for _ in range(4):
        lamp.apply(80, "program:night")
        lamp.check(clock.now())
        clock.advance(5)
    assert alarms(events) == [("lamp_failure", "raised")]


def test_current_with_the_relay_off_is_relay_failure_and_day_burner(
    factory: MockFactory, clock: ManualClock, events: Events
) -> None:
    lamp = gpio_controller(factory, clock, events)
    lamp.apply(0, "program:day")
    factory.pin(SENSE).drive_high()
    lamp.check(clock.now())
    clock.advance(10)
    lamp.check(clock.now())
    assert sorted(alarms(events)) == [("day_burner", "raised"), ("relay_failure", "raised")]
    assert factory.pin(RELAY).state == COIL_ENERGISED
    state = lamp.state().lamp
    assert state.lit is True and state.level == 0
    assert list(state.faults) == ["day_burner", "relay_failure"]


def test_lit_in_daylight_is_a_day_burner_only(
    factory: MockFactory, clock: ManualClock, events: Events
) -> None:
    lamp = gpio_controller(factory, clock, events, fault_delay_s=0)
    lamp.apply(60, "default")
    factory.pin(SENSE).drive_high()
    lamp.check(clock.now(), daylight=False)
    assert events == []
    lamp.check(clock.now(), daylight=True)
    assert alarms(events) == [("day_burner", "raised")]
    lamp.check(clock.now(), daylight=False)
    assert alarms(events)[-1] == ("day_burner", "cleared")


def test_a_switch_restarts_the_confirmation(
    factory: MockFactory, clock: ManualClock, events: Events
) -> None:
    lamp = gpio_controller(factory, clock, events)
    lamp.apply(100, "program:night")
    lamp.check(clock.now())  # no current yet: lamp_failure pending
    clock.advance(8)
    lamp.apply(50, "program:night")
    clock.advance(5)
    lamp.check(clock.now())  # 13 s since first seen, but only 5 s since the switch
    assert events == []
    clock.advance(5)
    lamp.check(clock.now())
    assert alarms(events) == [("lamp_failure", "raised")]


# --- controller behaviour -------------------------------------------------------------


def test_invalid_level_falls_back_to_default_and_is_reported_once(
    factory: MockFactory, clock: ManualClock, events: Events
) -> None:
    lamp = gpio_controller(factory, clock, events)
    for _ in range(3):
        assert lamp.apply(150, "program:broken", default_level=70) == 70
    assert factory.pin(PWM).state == pytest.approx(0.7)
    assert factory.pin(RELAY).state == COIL_AT_REST
    assert alarms(events) == [("invalid_level", "")]
    assert events[0].priority is Priority.EVENT
    assert events[0].attributes["requested"] == "150"
    assert lamp.state().source == "default"


@pytest.mark.parametrize("level", [-1, 101, True, 12.5, None])
def test_never_dark_even_with_a_bad_default(
    factory: MockFactory, clock: ManualClock, events: Events, level: object
) -> None:
    lamp = gpio_controller(factory, clock, events)
    assert lamp.apply(level, "program:x", default_level=0) == 100  # type: ignore[arg-type]
    assert factory.pin(RELAY).state == COIL_AT_REST
    assert factory.pin(PWM).state == 1


def test_switch_count_counts_switch_ons_not_dimming(
    factory: MockFactory, clock: ManualClock, events: Events
) -> None:
    lamp = gpio_controller(factory, clock, events)
    for level in (100, 50, 50, 0, 0, 30, 0):
        lamp.apply(level, "program:night")
    assert lamp.counters().switch_count == 2
    assert lamp.state().lamp.switch_count == 2


def test_energy_and_hours_from_the_sense_pin(
    factory: MockFactory, clock: ManualClock, events: Events
) -> None:
    lamp = gpio_controller(factory, clock, events)
    factory.pin(SENSE).drive_high()
    lamp.apply(50, "program:night")
    for _ in range(60):
        clock.advance(60)
        lamp.check(clock.now())
    counters = lamp.counters()
    # estimated from the level: 30 W for one hour
    assert counters.energy_wh == pytest.approx(30.0)
    assert counters.operating_hours == pytest.approx(1.0)
    assert lamp.state().lamp.active_power_w == pytest.approx(30.0)


def test_switching_off_between_checks_meters_up_to_the_switch(
    clock: ManualClock, events: Events
) -> None:
    lamp, _ = sim_controller(clock, events)
    lamp.apply(100, "program:night")
    for _ in range(10):
        clock.advance(60)
        lamp.check(clock.now())
    clock.advance(30)
    lamp.apply(0, "program:morning")
    for _ in range(10):
        clock.advance(60)
        lamp.check(clock.now())
    counters = lamp.counters()
    assert counters.energy_wh == pytest.approx(60.0 * 630 / 3600)
    assert counters.operating_hours == pytest.approx(630 / 3600)
    assert lamp.state().lamp.lit is False


def test_a_clock_jump_is_not_metered(
    factory: MockFactory, clock: ManualClock, events: Events
) -> None:
    lamp = gpio_controller(factory, clock, events)
    factory.pin(SENSE).drive_high()
    lamp.apply(100, "program:night")
    clock.advance(60)
    lamp.check(clock.now())
    clock.advance(86400 * 30)
    lamp.check(clock.now())
    assert lamp.counters().energy_wh == pytest.approx(1.0)


def test_counters_survive_a_restart(clock: ManualClock, events: Events) -> None:
    lamp, _ = sim_controller(clock, events)
    lamp.apply(100, "program:night")
    for _ in range(30):
        clock.advance(60)
        lamp.check(clock.now())
    saved = LampCounters.from_mapping(lamp.counters().as_mapping(), "counters.lamp-1")
    assert saved == lamp.counters()

    again, _ = sim_controller(clock, events)
    again.restore(saved)
    again.apply(100, "program:night")
    for _ in range(30):
        clock.advance(60)
        again.check(clock.now())
    total = again.counters()
    assert total.switch_count == 2
    assert total.operating_hours == pytest.approx(1.0)
    assert total.energy_wh == pytest.approx(60.0)  # 60 W for an hour


@pytest.mark.parametrize(
    ("stored", "field"),
    [
        ({"energy_wh": -1.0, "operating_hours": 0, "switch_count": 0}, "c.energy_wh"),
        ({"energy_wh": 1.0, "switch_count": 0}, "c.operating_hours"),
        ({"energy_wh": 1.0, "operating_hours": 0, "switch_count": 1.5}, "c.switch_count"),
        ([], "c"),
    ],
)
def test_corrupt_counters_are_refused(stored: object, field: str) -> None:
    with pytest.raises(EquipmentConfigError) as caught:
        LampCounters.from_mapping(stored, "c")
    assert caught.value.field == field


def test_state_message(factory: MockFactory, clock: ManualClock, events: Events) -> None:
    lamp = gpio_controller(factory, clock, events)
    factory.pin(SENSE).drive_high()
    lamp.apply(40, "override:incident-7")
    clock.advance(30)
    lamp.check(clock.now())
    state = lamp.state()
    assert state.device_id == "lamp-1"
    assert state.kind == schedule_pb2.DEVICE_KIND_LAMP
    assert state.source == "override:incident-7"
    assert state.observed_at.ToDatetime(tzinfo=UTC) == clock.now()
    assert state.WhichOneof("detail") == "lamp"
    assert state.lamp.level == 40 and state.lamp.lit is True


def test_dimming_failure_needs_a_power_reading(clock: ManualClock, events: Events) -> None:
    lamp, sim = sim_controller(clock, events)
    sim.ignores_dimming = True
    lamp.apply(100, "program:night")
    clock.advance(20)
    lamp.check(clock.now())
    clock.advance(20)
    lamp.check(clock.now())
    assert events == []  # at full power a driver that ignores dimming looks fine
    lamp.apply(30, "program:night")
    clock.advance(20)
    lamp.check(clock.now())
    clock.advance(20)
    lamp.check(clock.now())
    assert alarms(events) == [("dimming_failure", "raised")]
    assert lamp.state().lamp.active_power_w == pytest.approx(60.0)


def test_warm_up_is_not_a_dimming_failure(clock: ManualClock, events: Events) -> None:
    lamp, _ = sim_controller(clock, events)
    lamp.apply(80, "program:night")
    for _ in range(20):
        lamp.check(clock.now())
        clock.advance(1)
    assert events == []
    assert lamp.state().lamp.active_power_w == pytest.approx(48.0)


def test_dead_simulated_lamp_raises_lamp_failure(clock: ManualClock, events: Events) -> None:
    lamp, sim = sim_controller(clock, events)
    lamp.apply(100, "program:night")
    clock.advance(30)
    lamp.check(clock.now())
    sim.dead = True
    for _ in range(3):
        clock.advance(6)
        lamp.check(clock.now())
    assert alarms(events) == [("lamp_failure", "raised")]


def test_backend_failure_is_one_alarm_and_the_drive_is_retried(
    clock: ManualClock, events: Events
) -> None:
    lamp, sim = sim_controller(clock, events)
    sim.broken = True
    lamp.apply(100, "program:night")
    for _ in range(3):
        clock.advance(60)
        lamp.check(clock.now())
    assert alarms(events) == [("driver_failure", "raised")]
    sim.broken = False
    clock.advance(60)
    lamp.check(clock.now())
    assert alarms(events) == [("driver_failure", "raised"), ("driver_failure", "cleared")]
    assert sim.relay_closed and sim.duty == 1.0


def test_a_lit_lamp_is_reported_again_once_its_warm_up_is_over(
    clock: ManualClock, events: Events
) -> None:
    # The bug of issue 12: the state sent right after switching on showed the driver's
    # first milliseconds (6e-05 W for a 60 W lamp) and was never sent again.
    lamp, _ = sim_controller(clock, events)
    lamp.apply(100, "program:night")
    clock.advance(0.000002)
    lamp.check(clock.now())
    first = lamp.state()
    assert first.lamp.lit and first.lamp.active_power_w < 1.0
    assert not lamp.report_due
    clock.advance(30)
    lamp.check(clock.now())
    assert lamp.report_due
    assert lamp.state().lamp.active_power_w == pytest.approx(60.0)
    clock.advance(30)
    lamp.check(clock.now())
    assert not lamp.report_due  # steady: nothing new to report
    lamp.apply(50, "program:night")
    clock.advance(30)
    lamp.check(clock.now())
    assert lamp.report_due and lamp.state().lamp.active_power_w == pytest.approx(30.0)
