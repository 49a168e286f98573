"""The crossing's findings of the safety review (issue 9, items 9, 10 and 12), on the pins.

Plan changes run through the real shell (:class:`SignalController`) into the simulated
controller on gpiozero mock pins; the greens are read from the lamp pins, second by
second, and right after each change.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.signals.plans import (
    GreenInterval,
    GroupKind,
    Intergreen,
    Intersection,
    SignalGroup,
    SignalPlan,
    SignalPlans,
    validate_plans,
)
from domain.signals.safety_card import PlanSafetyCardError, SafetyCard
from edge.equipment.signal.config import (
    GpioBackendConfig,
    SignalConfig,
)
from edge.equipment.signal.controller import (
    NORMAL,
    GpioSignalController,
    SignalController,
)
from edge.equipment.sim.crossing import SimulatedSignalController
from edge.events import EquipmentConfigError, EquipmentEvent, Priority
from foundation.clock import ManualClock
from protos.ondijon.v1 import schedule_pb2
from tests.safety.crossings import GROUPS, HEADS, GreenWatch, conflict_sets, documents

T0 = datetime(2025, 3, 14, 8, 0, tzinfo=UTC)


def lit_greens(sim: SimulatedSignalController) -> set[str]:
    return {g for g, aspect in sim.aspects().items() if "green" in aspect.split("+")}


def together(greens: set[str], conflicts: set[frozenset[str]]) -> list[frozenset[str]]:
    return [pair for pair in conflicts if pair <= greens]


def conflicts_of(document: SignalPlans) -> set[frozenset[str]]:
    return set(document.intersection.conflicts)


def card_for(groups: tuple[str, ...], *documents: SignalPlans) -> SafetyCard:
    """The least strict card all ``documents`` satisfy (conflicts they all declare)."""
    shared = set.intersection(*(conflicts_of(d) for d in documents))
    entries = []
    for pair in shared:
        a, b = sorted(pair)
        for x, y in ((a, b), (b, a)):
            seconds = min(d.intersection.intergreen(x, y) or 0 for d in documents if d.intersection)
            entries.append(Intergreen(x, y, seconds))
    green = min(g.min_green_s for d in documents for g in d.intersection.groups)
    return SafetyCard(groups, tuple(entries), dict.fromkeys(groups, green), 3, 1)


class Crossing:
    """The shell and the simulated controller on one clock."""

    def __init__(self, groups: tuple[str, ...], card: SafetyCard) -> None:
        self.clock = ManualClock(T0)
        self.factory = MockFactory()
        self.events: list[EquipmentEvent] = []
        pins = list(HEADS.values())
        self.sim = SimulatedSignalController(
            heads={g: pins[i] for i, g in enumerate(groups)},
            conflicts=card.conflicts,
            clock=self.clock,
            pin_factory=self.factory,
            watchdog_s=1e9,
        )
        self.shell = SignalController(
            device_id="x", driver=self.sim, clock=self.clock, sink=self.events.append, card=card
        )

    def close(self) -> None:
        self.sim.close()
        self.factory.reset()

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.sim.step()


# -- item 9: a plan change passes through a safe intermediate -----------------------------------


def two_phase(conflict: bool, *, ns: tuple[int, int], ew: tuple[int, int]) -> SignalPlans:
    groups = tuple(
        SignalGroup(g, GroupKind.VEHICLE, min_green_s=5, amber_s=3, all_red_s=2)
        for g in ("ns", "ew")
    )
    intergreens = (Intergreen("ns", "ew", 5), Intergreen("ew", "ns", 5)) if conflict else ()
    plan = SignalPlan(
        "p", 60, 0, (GreenInterval("ns", *ns), GreenInterval("ew", *ew))
    )  # fmt: skip
    return SignalPlans(Intersection(groups, intergreens), (plan,))


async def test_a_new_document_adding_a_conflict_between_two_greens_ends_both_at_once() -> None:
    before = two_phase(False, ns=(0, 20), ew=(0, 20))
    after = two_phase(True, ns=(0, 20), ew=(30, 50))
    crossing = Crossing(("ns", "ew"), card_for(("ns", "ew"), before, after))
    try:
        await crossing.shell.load_plans(before)
        await crossing.shell.apply("p", NORMAL)
        for _ in range(70):  # start-up, then both green from cycle second 0
            crossing.tick(1)
        assert lit_greens(crossing.sim) == {"ns", "ew"}
        crossing.tick(1)  # 2 s into their greens: below the 5 s minimum green
        await crossing.shell.load_plans(after)
        assert lit_greens(crossing.sim) == set(), "conflicting greens kept after the change"
        seen = []
        for _ in range(60):
            crossing.tick(1)
            seen.append(lit_greens(crossing.sim))
            assert seen[-1] != {"ns", "ew"}
        assert {"ns"} in seen and {"ew"} in seen  # the new plan runs
    finally:
        crossing.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_no_pair_conflicting_in_either_plan_is_ever_green_together(data: st.DataObject) -> None:
    groups = GROUPS[: data.draw(st.integers(2, 4), label="groups")]
    first = data.draw(documents(groups, data.draw(conflict_sets(groups))), label="first")
    second = data.draw(documents(groups, data.draw(conflict_sets(groups))), label="second")
    change_at = data.draw(st.floats(10, 200), label="change after (s)")
    asyncio.run(_run_change(groups, first, second, change_at))


async def _run_change(
    groups: tuple[str, ...], first: SignalPlans, second: SignalPlans, change_at: float
) -> None:
    crossing = Crossing(groups, card_for(groups, first, second))
    watch = GreenWatch(first)

    def look() -> None:
        now = int(crossing.clock.monotonic())
        assert not watch.observe(now, lit_greens(crossing.sim))

    try:
        await crossing.shell.load_plans(first)
        await crossing.shell.apply("p", NORMAL)
        elapsed = 0.0
        while elapsed + 1 <= change_at:
            crossing.tick(1)
            elapsed += 1
            look()
        crossing.tick(change_at - elapsed)
        await crossing.shell.load_plans(second)
        watch.change(second, int(crossing.clock.monotonic()))
        look()  # right after the change
        for _ in range(2 * second.plans[0].cycle_s):
            crossing.tick(1)
            look()
        status = await crossing.sim.read_status()
        assert not status.conflict_fault, status.faults
    finally:
        crossing.close()


# -- item 10: the safety card, not the document, says what conflicts --------------------------


CARD = SafetyCard(
    groups=("ns", "ew"),
    intergreens=(Intergreen("ns", "ew", 5), Intergreen("ew", "ns", 5)),
    min_green_s={"ns": 5, "ew": 5},
)


async def test_a_document_without_the_cards_conflicts_is_refused_on_the_agent() -> None:
    naive = two_phase(False, ns=(0, 20), ew=(0, 20))  # conflicting groups green together
    validate_plans(naive)  # valid on its own: the document does not know the conflict
    crossing = Crossing(("ns", "ew"), CARD)
    try:
        with pytest.raises(PlanSafetyCardError) as refused:
            await crossing.shell.load_plans(naive)
        assert refused.value.field == "intersection.intergreens"
        assert "ns->ew" in refused.value.reason
        alarm = crossing.events[-1]
        assert (alarm.type, alarm.priority) == ("signal.plans_refused", Priority.ALARM)
        assert crossing.shell.plans is None
    finally:
        crossing.close()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"min_green_s": 0}, "intersection.groups[0].min_green_s"),
        ({"amber_s": 3, "all_red_s": 0}, "intersection.groups[0].all_red_s"),
    ],
)
def test_a_document_below_the_cards_minimum_times_is_refused(
    change: dict[str, Any], field: str
) -> None:
    document = two_phase(True, ns=(0, 20), ew=(30, 50))
    weaker = dataclasses.replace(document.intersection.groups[0], **change)
    groups = (weaker, document.intersection.groups[1])
    with pytest.raises(PlanSafetyCardError) as refused:
        CARD.check(dataclasses.replace(document, intersection=Intersection(groups, ())))
    assert refused.value.field in (field, "intersection.intergreens")
    one_second = SignalPlans(
        Intersection(groups, document.intersection.intergreens), document.plans
    )
    with pytest.raises(PlanSafetyCardError) as refused:
        CARD.check(one_second)
    assert refused.value.field == field


def test_a_stricter_document_is_accepted() -> None:
    stricter = two_phase(True, ns=(0, 20), ew=(30, 50))
    CARD.check(stricter)


def test_a_crossing_without_its_safety_card_is_refused_by_the_configuration() -> None:
    entry = {
        "id": "x",
        "backend": "simulated",
        "simulated": {"heads": {"ns": {"red": 2, "green": 3}, "ew": {"red": 4, "green": 5}}},
    }
    with pytest.raises(EquipmentConfigError) as refused:
        SignalConfig.from_mapping(entry, "signals[0]")
    assert refused.value.field == "signals[0].safety_card"
    card = {"groups": ["ns", "ew"], "min_green_s": 0, "intergreens": [["ns", "ew", 5]]}
    with pytest.raises(EquipmentConfigError) as refused:
        SignalConfig.from_mapping({**entry, "safety_card": card}, "signals[0]")
    assert refused.value.field == "signals[0].safety_card.min_green_s.ns"


def test_the_simulators_conflict_monitor_takes_the_cards_conflicts() -> None:
    card = {
        "groups": ["ns", "ew"],
        "min_green_s": 6,
        "intergreens": [["ns", "ew", 5], ["ew", "ns", 5]],
    }
    entry = {
        "id": "x",
        "backend": "simulated",
        "safety_card": card,
        "simulated": {"heads": {"ns": {"red": 2, "green": 3}, "ew": {"red": 4, "green": 5}}},
    }
    config = SignalConfig.from_mapping(entry, "signals[0]")
    assert config.simulated is not None
    assert config.simulated.conflicts == (("ew", "ns"),)


# -- item 12: a backend that cannot see says so ---------------------------------------------


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    pins = MockFactory()
    yield pins
    pins.reset()


async def test_a_gpio_controller_without_an_alive_pin_is_unconfirmed_never_healthy(
    factory: MockFactory,
) -> None:
    clock = ManualClock(T0)
    events: list[EquipmentEvent] = []
    blind = GpioSignalController(
        config=GpioBackendConfig(plan_pins=(5, 6), plan_numbers={"p": 1}, flash_pin=7),
        clock=clock,
        pin_factory=factory,
    )
    shell = SignalController(
        device_id="x", driver=blind, clock=clock, sink=events.append, card=CARD
    )
    try:
        await shell.load_plans(two_phase(True, ns=(0, 20), ew=(30, 50)))
        await shell.apply("p", NORMAL)
        assert await shell.poll() is not None
        state = shell.state().signal
        assert state.unconfirmed
        assert not state.communication_ok
        assert (state.plan, state.mode) == ("", schedule_pb2.SIGNAL_MODE_UNSPECIFIED)
        assert {"liveness_unobserved", "plan_unconfirmed"} <= set(state.faults)
        alarms = [e for e in events if e.priority is Priority.ALARM]
        assert [e.type for e in alarms] == ["signal.unconfirmed"]
        await shell.poll()
        assert len([e for e in events if e.type == "signal.unconfirmed"]) == 1  # once
    finally:
        blind.close()


async def test_a_gpio_controller_with_an_alive_pin_still_cannot_confirm_its_timings(
    factory: MockFactory,
) -> None:
    clock = ManualClock(T0)
    events: list[EquipmentEvent] = []
    wired = GpioSignalController(
        config=GpioBackendConfig(plan_pins=(5, 6), plan_numbers={"p": 1}, flash_pin=7, alive_pin=8),
        clock=clock,
        pin_factory=factory,
    )
    factory.pin(8).drive_high()
    shell = SignalController(
        device_id="x", driver=wired, clock=clock, sink=events.append, card=CARD
    )
    try:
        await shell.load_plans(two_phase(True, ns=(0, 20), ew=(30, 50)))
        await shell.apply("p", NORMAL)
        await shell.poll()
        state = shell.state().signal
        assert state.unconfirmed and state.communication_ok
        assert "plan_unconfirmed" in state.faults and "liveness_unobserved" not in state.faults
    finally:
        wired.close()


async def test_the_simulated_controller_confirms_what_it_runs() -> None:
    crossing = Crossing(("ns", "ew"), CARD)
    try:
        await crossing.shell.load_plans(two_phase(True, ns=(0, 20), ew=(30, 50)))
        await crossing.shell.apply("p", NORMAL)
        crossing.tick(1)
        await crossing.shell.poll()
        state = crossing.shell.state().signal
        assert not state.unconfirmed and state.plan == "p" and state.communication_ok
        assert state.safety_card.groups == ["ns", "ew"]
    finally:
        crossing.close()
