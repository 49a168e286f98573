"""The signal controller shell, its configuration and the contact-wired (gpio) backend."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from domain.schedule.model import SignalMode
from domain.signals.plans import (
    GreenInterval,
    GroupKind,
    Intergreen,
    Intersection,
    SignalGroup,
    SignalPlan,
    SignalPlanError,
    SignalPlans,
    plans_from_proto,
)
from edge.equipment.registry import open_driver
from edge.equipment.signal.bus_priority import BusPriorityLimits, BusPriorityOutcome
from edge.equipment.signal.config import (
    GpioBackendConfig,
    HeadPins,
    SafetyCardConfig,
    SignalConfig,
)
from edge.equipment.signal.controller import (
    DARK,
    FLASHING_AMBER,
    NORMAL,
    UNSPECIFIED,
    GpioSignalController,
    SignalCommunicationError,
    SignalController,
    SignalRefusedError,
)
from edge.equipment.sim.crossing import SimulatedSignalController
from edge.events import EquipmentConfigError, EquipmentEvent, Priority
from foundation.clock import ManualClock
from protos.ondijon.v1 import schedule_pb2, signal_pb2

T0 = datetime(2025, 3, 14, 8, 0, tzinfo=UTC)
HEADS = {
    "ns": HeadPins(red=2, amber=3, green=4),
    "ew": HeadPins(red=5, amber=6, green=7),
    "ped": HeadPins(red=8, green=9),
}
CROSSING = Intersection(
    groups=(
        SignalGroup("ns", GroupKind.VEHICLE, min_green_s=6, amber_s=3, all_red_s=2),
        SignalGroup("ew", GroupKind.VEHICLE, min_green_s=6, amber_s=3, all_red_s=2),
        SignalGroup("ped", GroupKind.PEDESTRIAN, min_green_s=5, amber_s=0, all_red_s=3),
    ),
    intergreens=(
        Intergreen("ns", "ew", 5),
        Intergreen("ew", "ns", 5),
        Intergreen("ew", "ped", 6),
        Intergreen("ped", "ew", 4),
    ),
)
DAY = SignalPlan(
    "day",
    40,
    0,
    (GreenInterval("ns", 0, 15), GreenInterval("ped", 1, 12), GreenInterval("ew", 20, 35)),
)
EVENING = SignalPlan(
    "evening", 60, 7, (GreenInterval("ew", 0, 30), GreenInterval("ns", 35, 55))
)  # fmt: skip
PLANS = SignalPlans(CROSSING, (DAY, EVENING))
CARD_ENTRY: dict[str, Any] = {
    "groups": ["ns", "ew", "ped"],
    "min_green_s": {"ns": 6, "ew": 6, "ped": 5},
    "intergreens": [["ns", "ew", 5], ["ew", "ns", 5], ["ew", "ped", 6], ["ped", "ew", 4]],
}
CARD = SafetyCardConfig.from_mapping(CARD_ENTRY, "safety_card").card()


wire_kind = signal_pb2.SignalGroupKind.ValueType


def to_proto(plans: SignalPlans) -> signal_pb2.SignalPlans:
    x = plans.intersection
    return signal_pb2.SignalPlans(
        intersection=signal_pb2.Intersection(
            groups=[
                signal_pb2.SignalGroup(id=g.id, kind=wire_kind(g.kind),
                                       min_green_s=g.min_green_s, amber_s=g.amber_s,
                                       all_red_s=g.all_red_s)
                for g in x.groups
            ],
            intergreens=[
                signal_pb2.Intergreen(
                    from_group=e.from_group, to_group=e.to_group, seconds=e.seconds
                )
                for e in x.intergreens
            ],
        ),
        plans=[
            signal_pb2.SignalPlan(
                id=p.id, cycle_s=p.cycle_s, offset_s=p.offset_s,
                greens=[signal_pb2.GreenInterval(group=g.group, start_s=g.start_s, end_s=g.end_s)
                        for g in p.greens],
            )
            for p in plans.plans
        ],
    )  # fmt: skip


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    pins = MockFactory()
    yield pins
    pins.reset()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def events() -> list[EquipmentEvent]:
    return []


@pytest.fixture
def sim(factory: MockFactory, clock: ManualClock) -> Iterator[SimulatedSignalController]:
    controller = SimulatedSignalController(
        heads=HEADS, conflicts=(("ns", "ew"), ("ew", "ped")), clock=clock, pin_factory=factory
    )
    yield controller
    controller.close()


@pytest.fixture
def shell(
    sim: SimulatedSignalController, clock: ManualClock, events: list[EquipmentEvent]
) -> SignalController:
    limits = BusPriorityLimits(max_requests=1, window_s=60, expiry_s=5)
    return SignalController(
        device_id="darcy",
        driver=sim,
        clock=clock,
        sink=events.append,
        card=CARD,
        bus_priority=limits,
    )


def types(events: list[EquipmentEvent], priority: Priority | None = None) -> list[str]:
    return [e.type for e in events if priority is None or e.priority == priority]


async def started(shell: SignalController) -> None:
    await shell.load_plans(plans_from_proto(to_proto(PLANS)))
    await shell.apply("day", NORMAL, source="program:weekday")


# --- the shell ------------------------------------------------------------------------------


async def test_a_plan_from_the_schedule_reaches_the_controller(
    shell: SignalController, sim: SimulatedSignalController, events: list[EquipmentEvent]
) -> None:
    await started(shell)
    status = await sim.read_status()
    assert (status.plan, status.faults) == ("day", ())
    assert types(events) == ["signal.plan_selected", "signal.mode_selected"]
    assert events[0].attributes == {"plan": "day", "source": "program:weekday"}
    assert all(e.priority == Priority.EVENT for e in events)


async def test_a_refused_document_raises_an_alarm_and_changes_nothing(
    shell: SignalController, sim: SimulatedSignalController, events: list[EquipmentEvent]
) -> None:
    await started(shell)
    bad = to_proto(PLANS)
    bad.plans[1].greens[0].end_s = 61
    with pytest.raises(SignalPlanError) as caught:
        await shell.load_plans(plans_from_proto(bad))
    assert caught.value.field == "plans[1].greens[0].end_s"
    alarm = events[-1]
    assert (alarm.type, alarm.priority) == ("signal.plans_refused", Priority.ALARM)
    assert alarm.attributes["field"] == "plans[1].greens[0].end_s"
    assert shell.plans == PLANS
    assert (await sim.read_status()).plan == "day"


async def test_an_unknown_plan_is_refused_and_the_running_one_stays(
    shell: SignalController, sim: SimulatedSignalController, events: list[EquipmentEvent]
) -> None:
    await started(shell)
    with pytest.raises(SignalPlanError, match="unknown plan 'night'"):
        await shell.apply("night", NORMAL)
    assert types(events, Priority.ALARM) == ["signal.plan_refused"]
    assert (await sim.read_status()).plan == "day"
    with pytest.raises(SignalPlanError):
        await shell.apply("day", 7)  # type: ignore[arg-type]


async def test_no_plan_reaches_the_controller_before_a_document_is_loaded(
    shell: SignalController, sim: SimulatedSignalController, events: list[EquipmentEvent]
) -> None:
    with pytest.raises(SignalPlanError, match="no plans loaded"):
        await shell.apply("day", NORMAL)
    assert (await sim.read_status()).plan == ""
    assert types(events) == ["signal.plan_refused"]


async def test_unset_outputs_keep_their_value_and_schedule_enums_are_understood(
    shell: SignalController, sim: SimulatedSignalController, clock: ManualClock
) -> None:
    await started(shell)
    await shell.apply("", SignalMode.FLASHING_AMBER, source="override:storm")
    await shell.apply(None, UNSPECIFIED)
    clock.advance(1)
    sim.step()
    status = await sim.read_status()
    assert (status.plan, status.mode) == ("day", FLASHING_AMBER)
    await shell.apply("evening", UNSPECIFIED)
    assert (await sim.read_status()).plan == "evening"
    assert shell.state().source == ""


def wider() -> Intersection:
    """Valid on paper, but the cabinet has no heads wired for a bus group."""
    bus = SignalGroup("bus", GroupKind.BUS, min_green_s=5, amber_s=3, all_red_s=2)
    return dataclasses.replace(CROSSING, groups=(*CROSSING.groups, bus))


async def test_a_plan_the_controller_refuses_leaves_the_running_one(
    sim: SimulatedSignalController, clock: ManualClock, events: list[EquipmentEvent]
) -> None:
    # A card that knows the bus group: the agent's checks pass, the controller refuses.
    card = dataclasses.replace(
        CARD, groups=(*CARD.groups, "bus"), min_green_s={**CARD.min_green_s, "bus": 5}
    )
    shell = SignalController(
        device_id="darcy", driver=sim, clock=clock, sink=events.append, card=card
    )
    await shell.load_plans(SignalPlans(wider(), (DAY, EVENING)))
    with pytest.raises(SignalRefusedError):
        await shell.apply("evening", NORMAL)
    assert events[-1].type == "signal.plan_refused"
    assert events[-1].priority == Priority.ALARM
    assert (await sim.read_status()).plan == ""


async def test_a_document_the_controller_cannot_run_is_not_adopted(
    shell: SignalController, sim: SimulatedSignalController, events: list[EquipmentEvent]
) -> None:
    await started(shell)
    with pytest.raises(SignalPlanError, match=r"groups\[3\]\.id: group 'bus' is not on the"):
        await shell.load_plans(SignalPlans(wider(), (DAY, EVENING)))
    assert (events[-1].type, events[-1].priority) == ("signal.plans_refused", Priority.ALARM)
    assert shell.plans == PLANS
    assert (await sim.read_status()).plan == "day"
    await shell.apply("evening", NORMAL)  # the previous document still works
    assert (await sim.read_status()).plan == "evening"


async def test_new_timings_for_the_running_plan_are_sent_at_once(
    shell: SignalController, sim: SimulatedSignalController
) -> None:
    await started(shell)
    longer = dataclasses.replace(DAY, cycle_s=50)
    await shell.load_plans(SignalPlans(CROSSING, (longer, EVENING)))
    assert sim.plan == longer  # the controller runs the new timings


async def test_a_document_without_the_running_plan_leaves_it_running(
    shell: SignalController, sim: SimulatedSignalController
) -> None:
    await started(shell)
    await shell.load_plans(SignalPlans(CROSSING, (EVENING,)))
    sim.disconnect()
    await shell.poll()
    sim.reconnect()
    status = await shell.poll()
    assert status is not None and status.plan == "day"


async def test_lost_communication_alarms_once_and_resends_when_back(
    shell: SignalController, sim: SimulatedSignalController, events: list[EquipmentEvent]
) -> None:
    await started(shell)
    sim.disconnect()
    assert await shell.poll() is None
    assert await shell.poll() is None
    assert types(events, Priority.ALARM) == ["signal.communication_lost"]
    state = shell.state().signal
    assert not state.communication_ok
    assert "communication_lost" in state.faults
    # The schedule moves on meanwhile: no error, the wish is kept.
    await shell.apply("evening", NORMAL, source="program:evening")
    sim.reconnect()
    status = await shell.poll()
    assert status is not None and status.plan == "evening"
    assert types(events)[-2:] == ["signal.communication_restored", "signal.plan_selected"]
    assert shell.state().signal.communication_ok


async def test_a_conflict_fault_is_alarmed_and_reported(
    shell: SignalController,
    sim: SimulatedSignalController,
    clock: ManualClock,
    factory: MockFactory,
    events: list[EquipmentEvent],
) -> None:
    await started(shell)
    for _ in range(45):
        clock.advance(1)
        sim.step()
        await shell.poll()
    factory.pin(7).state = True  # ew green lights beside ns green
    clock.advance(1)
    sim.step()
    await shell.poll()
    assert "signal.conflict_fault" in types(events, Priority.ALARM)
    state = shell.state()
    assert state.kind == schedule_pb2.DEVICE_KIND_SIGNAL
    assert state.signal.conflict_fault
    assert state.signal.mode == FLASHING_AMBER
    assert "conflict:ew/ns" in state.signal.faults
    sim.reset_conflict_monitor()
    clock.advance(1)
    sim.step()
    await shell.poll()
    assert "signal.conflict_cleared" in types(events)


async def test_door_and_controller_watchdog_are_reported(
    shell: SignalController,
    sim: SimulatedSignalController,
    clock: ManualClock,
    events: list[EquipmentEvent],
) -> None:
    await started(shell)
    await shell.poll()
    sim.set_door(True)
    await shell.poll()
    sim.set_door(False)
    await shell.poll()
    assert types(events)[-2:] == ["signal.door_opened", "signal.door_closed"]
    assert events[-2].priority == Priority.ALARM
    clock.advance(11)  # the agent was silent: the controller's watchdog trips
    sim.step()
    await shell.poll()
    assert "signal.agent_lost" in types(events, Priority.ALARM)
    assert not shell.state().signal.communication_ok
    clock.advance(1)
    sim.step()
    await shell.poll()
    assert "signal.agent_heard" in types(events)[-2:]


async def test_bus_priority_is_limited_forwarded_and_expires(
    shell: SignalController, sim: SimulatedSignalController, clock: ManualClock,
    events: list[EquipmentEvent],
) -> None:  # fmt: skip
    await started(shell)
    granted = await shell.request_bus_priority("ns", "bus-412")
    assert granted is not None and granted.outcome is BusPriorityOutcome.GRANTED
    assert sim.priorities == {"ns": T0 + timedelta(seconds=5)}
    limited = await shell.request_bus_priority("ns", "bus-7")
    assert limited is not None and limited.outcome is BusPriorityOutcome.LIMITED
    assert await shell.request_bus_priority("tram", "t1") is None
    assert types(events)[-3:] == [
        "signal.bus_priority.granted",
        "signal.bus_priority.limited",
        "signal.bus_priority.unknown_approach",
    ]


async def test_run_keeps_the_crossing_alive_and_reports_expiries(
    shell: SignalController,
    sim: SimulatedSignalController,
    clock: ManualClock,
    events: list[EquipmentEvent],
) -> None:
    await started(shell)
    task = asyncio.create_task(shell.run())
    await shell.request_bus_priority("ns", "bus-412")
    for _ in range(100):
        clock.advance(1)
        for _ in range(4):
            await asyncio.sleep(0)
    task.cancel()
    assert "signal.bus_priority.expired" in types(events)
    assert types(events, Priority.ALARM) == []  # the watchdog never tripped
    state = shell.state()
    assert state.signal.plan == "day"
    assert state.signal.mode == NORMAL
    assert state.observed_at.ToDatetime(UTC) >= T0 + timedelta(seconds=98)
    assert state.source == "program:weekday"
    assert "green" in sim.aspects().values()


def test_state_before_any_status_says_nothing_is_known(shell: SignalController) -> None:
    state = shell.state()
    assert (state.device_id, state.kind) == ("darcy", schedule_pb2.DEVICE_KIND_SIGNAL)
    assert state.signal.mode == UNSPECIFIED
    assert not state.signal.communication_ok


# --- configuration --------------------------------------------------------------------------


def simulated_entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": "darcy",
        "backend": "simulated",
        "poll_interval_s": 2,
        "safety_card": CARD_ENTRY,
        "bus_priority": {"max_requests": 2, "window_s": 90, "expiry_s": 8},
        "simulated": {
            "watchdog_s": 10,
            "conflicts": [["ns", "ew"], ["ew", "ped"]],
            "heads": {
                "ns": {"red": 2, "amber": 3, "green": 4},
                "ew": {"red": 5, "amber": 6, "green": 7},
                "ped": {"red": 8, "green": "GPIO9"},
            },
        },
    }
    entry.update(changes)
    return entry


def gpio_entry(**changes: Any) -> dict[str, Any]:
    gpio: dict[str, Any] = {
        "plan_pins": [17, 27, 22],
        "plans": {"day": 5, "evening": 2},
        "flash_pin": 23,
        "dark_pin": 24,
        "fault_pin": 25,
        "door_pin": 12,
        "alive_pin": 16,
        "heartbeat_pin": 20,
        "priority_pins": {"ns": 21},
    }
    gpio.update(changes)
    return {"id": "darcy", "backend": "gpio", "safety_card": CARD_ENTRY, "gpio": gpio}


def test_a_simulated_entry_is_read() -> None:
    config = SignalConfig.from_mapping(simulated_entry(), "equipment.signals[0]")
    assert config.device_id == "darcy"
    assert config.bus_priority == BusPriorityLimits(2, 90.0, 8.0)
    assert config.simulated is not None
    assert config.simulated.heads["ped"] == HeadPins(red=8, green="GPIO9")
    assert config.simulated.conflicts == (("ns", "ew"), ("ew", "ped"))


def test_a_gpio_entry_is_read() -> None:
    config = SignalConfig.from_mapping(gpio_entry(), "equipment.signals[1]")
    assert config.gpio is not None
    assert config.gpio.plan_numbers == {"day": 5, "evening": 2}
    assert config.gpio.priority_pins == {"ns": 21}


def bad_head(**pins: Any) -> dict[str, Any]:
    entry = simulated_entry()
    entry["simulated"]["heads"]["ns"] = pins
    return entry


def with_sim(**changes: Any) -> dict[str, Any]:
    entry = simulated_entry()
    entry["simulated"].update(changes)
    return entry


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        (simulated_entry(id=""), "s[0].id"),
        (simulated_entry(backend="ntcip"), "s[0].backend"),
        (simulated_entry(poll_interval_s=0), "s[0].poll_interval_s"),
        (simulated_entry(bus_priority={"max_requests": 0}), "s[0].bus_priority.max_requests"),
        (simulated_entry(bus_priority={"max_requests": 1.5}), "s[0].bus_priority.max_requests"),
        (simulated_entry(bus_priority={"expiry_s": "soon"}), "s[0].bus_priority.expiry_s"),
        (simulated_entry(simulated=[]), "s[0].simulated"),
        (with_sim(heads={}), "s[0].simulated.heads"),
        (bad_head(red=2, green=True), "s[0].simulated.heads.ns.green"),
        (bad_head(red=-1, green=4), "s[0].simulated.heads.ns.red"),
        (bad_head(green=4), "s[0].simulated.heads.ns.red"),
        (bad_head(red=2, green=5), "s[0].simulated.heads.ew.red"),
        (with_sim(conflicts=[["ns", "tram"]]), "s[0].simulated.conflicts[0]"),
        (with_sim(conflicts=[["ns", "ns"]]), "s[0].simulated.conflicts[0]"),
        (with_sim(conflicts="ns/ew"), "s[0].simulated.conflicts"),
        (with_sim(watchdog_s=4), "s[0].simulated.watchdog_s"),
        (gpio_entry(plan_pins=[]), "s[0].gpio.plan_pins"),
        (gpio_entry(plans={"day": 8}), "s[0].gpio.plans.day"),
        (gpio_entry(plans={"day": 0}), "s[0].gpio.plans.day"),
        (gpio_entry(plans={}), "s[0].gpio.plans"),
        (gpio_entry(flash_pin=None), "s[0].gpio.flash_pin"),
        (gpio_entry(door_pin=17), "s[0].gpio.door_pin"),
        (gpio_entry(priority_pins={"ns": "GPIO23"}), "s[0].gpio.priority_pins.ns"),
    ],
)
def test_config_errors_name_the_field(entry: dict[str, Any], field: str) -> None:
    with pytest.raises(EquipmentConfigError) as caught:
        SignalConfig.from_mapping(entry, "equipment.signals[0]")
    assert caught.value.field == f"equipment.signal{field}"


def test_the_backend_is_chosen_by_configuration(factory: MockFactory, clock: ManualClock) -> None:
    sim = open_driver(
        SignalConfig.from_mapping(simulated_entry(), "s"), clock=clock, pin_factory=factory
    )
    assert isinstance(sim, SimulatedSignalController)
    sim.close()
    gpio = open_driver(
        SignalConfig.from_mapping(gpio_entry(), "s"), clock=clock, pin_factory=factory
    )
    assert isinstance(gpio, GpioSignalController)
    gpio.close()


# --- the gpio backend -----------------------------------------------------------------------


@pytest.fixture
async def gpio(factory: MockFactory, clock: ManualClock) -> AsyncIterator[GpioSignalController]:
    config = SignalConfig.from_mapping(gpio_entry(), "s").gpio
    assert config is not None
    controller = GpioSignalController(config=config, clock=clock, pin_factory=factory)
    yield controller
    controller.close()


def level(factory: MockFactory, number: int) -> bool:
    return bool(factory.pin(number).state)


async def test_gpio_flashes_from_power_up_then_selects_plan_and_mode(
    gpio: GpioSignalController, factory: MockFactory
) -> None:
    factory.pin(16).drive_high()  # controller alive
    assert level(factory, 23)
    assert (await gpio.read_status()).mode == FLASHING_AMBER
    await gpio.set_plan(CROSSING, DAY)  # number 5: bits 1, 0, 1
    await gpio.set_mode(NORMAL)
    assert [level(factory, n) for n in (17, 27, 22)] == [True, False, True]
    assert not level(factory, 23) and not level(factory, 24)
    await gpio.set_mode(DARK)
    assert level(factory, 24) and not level(factory, 23)
    status = await gpio.read_status()
    assert (status.plan, status.mode) == ("day", DARK)


async def test_gpio_refuses_what_it_is_not_wired_for(
    gpio: GpioSignalController, factory: MockFactory, clock: ManualClock
) -> None:
    with pytest.raises(SignalRefusedError):
        await gpio.set_plan(CROSSING, dataclasses.replace(DAY, id="night"))
    with pytest.raises(SignalRefusedError):
        await gpio.request_bus_priority("ew", "bus-1", T0)
    no_dark = GpioBackendConfig(plan_pins=(5,), plan_numbers={"day": 1}, flash_pin=6)
    plain = GpioSignalController(config=no_dark, clock=clock, pin_factory=factory)
    with pytest.raises(SignalRefusedError):
        await plain.set_mode(DARK)
    plain.close()


async def test_gpio_reads_fault_door_and_alive_inputs(
    gpio: GpioSignalController, factory: MockFactory
) -> None:
    factory.pin(16).drive_high()
    await gpio.set_mode(NORMAL)
    factory.pin(25).drive_high()
    factory.pin(12).drive_high()
    status = await gpio.read_status()
    assert status.conflict_fault and status.door_open
    assert status.mode == FLASHING_AMBER
    factory.pin(16).drive_low()
    with pytest.raises(SignalCommunicationError):
        await gpio.read_status()


async def test_gpio_heartbeat_toggles_and_priority_holds_until_expiry(
    gpio: GpioSignalController, factory: MockFactory, clock: ManualClock
) -> None:
    await gpio.heartbeat()
    await gpio.heartbeat()
    assert [s.state for s in factory.pin(20).states] == [False, True, False]
    task = asyncio.create_task(gpio.run())
    await gpio.request_bus_priority("ns", "bus-1", T0 + timedelta(seconds=3))
    states = []
    for _ in range(4):
        clock.advance(1)
        for _ in range(3):
            await asyncio.sleep(0)
        states.append(level(factory, 21))
    task.cancel()
    assert states == [True, True, False, False]


async def test_a_dead_gpio_controller_alarms_through_the_shell(
    gpio: GpioSignalController, clock: ManualClock, events: list[EquipmentEvent]
) -> None:
    shell = SignalController(
        device_id="darcy", driver=gpio, clock=clock, sink=events.append, card=CARD
    )
    assert await shell.poll() is None  # alive input low
    assert types(events, Priority.ALARM) == ["signal.communication_lost"]


def test_a_misspelt_key_is_refused_not_defaulted() -> None:
    # It used to fall back silently to the default poll interval.
    with pytest.raises(EquipmentConfigError) as caught:
        SignalConfig.from_mapping(simulated_entry(poll_intervall_s=2), "signals[0]")
    assert str(caught.value) == "signals[0].poll_intervall_s: unknown setting"
    entry = simulated_entry()
    entry["simulated"]["heads"]["ns"]["ambre"] = 3
    with pytest.raises(EquipmentConfigError) as caught:
        SignalConfig.from_mapping(entry, "signals[0]")
    assert str(caught.value) == "signals[0].simulated.heads.ns.ambre: unknown setting"
