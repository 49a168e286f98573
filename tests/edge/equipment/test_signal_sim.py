"""The simulated controller, watched through its lamp pins on a gpiozero mock factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from domain.signals.plans import (
    GreenInterval,
    GroupKind,
    Intergreen,
    Intersection,
    SignalGroup,
    SignalPlan,
    SignalPlanError,
    validate_plan,
)
from edge.equipment.signal.config import (
    HeadPins,
)
from edge.equipment.signal.controller import (
    DARK,
    FLASHING_AMBER,
    NORMAL,
    SignalCommunicationError,
    SignalRefusedError,
)
from edge.equipment.sim.crossing import SimulatedSignalController
from foundation.clock import ManualClock

# 08:00:00 UTC is a multiple of 40 s and of 60 s: cycle second 0 with offset 0.
T0 = datetime(2025, 3, 14, 8, 0, tzinfo=UTC)
HEADS = {
    "ns": HeadPins(red=2, amber=3, green=4),
    "ew": HeadPins(red=5, amber=6, green=7),
    "ped": HeadPins(red=8, green=9),  # French pedestrian heads: red and green only
}
CARD = (("ns", "ew"), ("ew", "ped"))
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
PLAN = SignalPlan(
    "day",
    cycle_s=40,
    offset_s=0,
    greens=(GreenInterval("ns", 0, 15), GreenInterval("ped", 1, 12), GreenInterval("ew", 20, 35)),
)
# Another phasing, to switch to mid-cycle.
OTHER = SignalPlan(
    "evening",
    cycle_s=60,
    offset_s=7,
    greens=(GreenInterval("ew", 0, 30), GreenInterval("ns", 35, 55), GreenInterval("ped", 36, 50)),
)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    pins = MockFactory()
    yield pins
    pins.reset()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def sim(factory: MockFactory, clock: ManualClock) -> AsyncIterator[SimulatedSignalController]:
    controller = SimulatedSignalController(
        heads=HEADS, conflicts=CARD, clock=clock, pin_factory=factory, watchdog_s=10
    )
    task = asyncio.create_task(controller.run())
    await settle()
    yield controller
    task.cancel()
    controller.close()


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def tick(
    clock: ManualClock, sim: SimulatedSignalController, seconds: int, *, agent: bool = True
) -> list[dict[str, str]]:
    """Advance second by second (the agent heartbeating); what the lamps showed each second."""
    shown = []
    for _ in range(seconds):
        clock.advance(1)
        await settle()
        if agent:
            await sim.heartbeat()
        shown.append(sim.aspects())
    return shown


def pin(factory: MockFactory, number: int) -> bool:
    return bool(factory.pin(number).state)


def steady_aspects(plan: SignalPlan, intersection: Intersection, second: int) -> dict[str, str]:
    """What a controller following ``plan`` exactly shows at cycle ``second``."""
    expected = {}
    for group in intersection.groups:
        if group.id in plan.greens_at(second):
            expected[group.id] = "green"
            continue
        since_green = next(
            (k for k in range(1, plan.cycle_s + 1) if group.id in plan.greens_at(second - k)), None
        )
        has_amber = HEADS[group.id].amber is not None and group.amber_s > 0
        amber = has_amber and since_green is not None and since_green <= group.amber_s
        expected[group.id] = "amber" if amber else "red"
    return expected


def assert_safe(history: list[dict[str, str]], intersection: Intersection) -> None:
    """Never a green with a green or amber of a conflicting group; intergreens respected."""
    green_end: dict[str, int] = {}
    for t, shown in enumerate(history):
        for e in intersection.intergreens:
            a, b = shown[e.from_group], shown[e.to_group]
            assert not (a == "green" and b in ("green", "amber")), (t, shown)
        for g, aspect in shown.items():
            if t and history[t - 1][g] == "green" and aspect != "green":
                green_end[g] = t
            if aspect == "green" and (t == 0 or history[t - 1][g] != "green"):
                for e in intersection.intergreens:
                    if e.to_group == g and e.from_group in green_end:
                        assert t - green_end[e.from_group] >= e.seconds, (t, e)


async def running(sim: SimulatedSignalController, plan: SignalPlan = PLAN) -> None:
    await sim.set_plan(CROSSING, plan)
    await sim.set_mode(NORMAL)


async def test_without_a_plan_it_flashes_amber(
    sim: SimulatedSignalController, clock: ManualClock, factory: MockFactory
) -> None:
    shown = await tick(clock, sim, 4)
    assert [s["ns"] for s in shown] == ["dark", "amber", "dark", "amber"]
    assert all(s["ped"] == "dark" for s in shown)  # no amber lamp on pedestrian heads
    status = await sim.read_status()
    assert status.mode == FLASHING_AMBER
    assert "no_plan" in status.faults


async def test_it_starts_up_then_follows_the_plan_exactly(
    sim: SimulatedSignalController, clock: ManualClock, factory: MockFactory
) -> None:
    await running(sim)
    start = await tick(clock, sim, 8)
    # Steady amber on vehicle heads, then all red before anything turns green.
    assert start[0] == {"ns": "amber", "ew": "amber", "ped": "red"}
    assert start[3] == {"ns": "red", "ew": "red", "ped": "red"}
    assert "green" not in {a for s in start[:5] for a in s.values()}
    await tick(clock, sim, 40 - 8)  # to the start of the next cycle
    cycle = await tick(clock, sim, 40)
    for second, shown in enumerate(cycle, start=1):
        assert shown == steady_aspects(PLAN, CROSSING, second), second
    # Now at cycle second 0: the north-south green lamp is lit, east-west shows red.
    assert (pin(factory, 4), pin(factory, 7), pin(factory, 5)) == (True, False, True)
    status = await sim.read_status()
    assert (status.plan, status.mode, status.faults) == ("day", NORMAL, ())


async def test_a_fault_lighting_conflicting_greens_falls_to_flashing_amber(
    sim: SimulatedSignalController, clock: ManualClock, factory: MockFactory
) -> None:
    await running(sim)
    await tick(clock, sim, 45)  # cycle second 5: ns and ped green, ew red
    assert sim.aspects() == {"ns": "green", "ew": "red", "ped": "green"}
    # A welded relay: the east-west green lamp lights on its own.
    factory.pin(7).state = True
    for number in (3, 6):
        factory.pin(number).clear_states()
    shown = await tick(clock, sim, 6)
    for s in shown:
        assert s["ns"] in ("amber", "dark") and s["ew"] in ("amber", "dark")
        assert s["ped"] == "dark"
    for number in (2, 4, 5, 7, 8, 9):  # every red and green lamp out
        assert not pin(factory, number)
    for number in (3, 6):  # every amber lamp flashing
        states = [s.state for s in factory.pin(number).states]
        assert states[:7] == [False, True, False, True, False, True, False]
    status = await sim.read_status()
    assert status.conflict_fault
    assert status.mode == FLASHING_AMBER
    assert "conflict:ew/ns" in status.faults


async def test_the_conflict_fault_latches_until_the_technician_resets_it(
    sim: SimulatedSignalController, clock: ManualClock, factory: MockFactory
) -> None:
    await running(sim)
    await tick(clock, sim, 45)
    factory.pin(7).state = True
    shown = await tick(clock, sim, 120)
    assert all("green" not in s.values() for s in shown)
    sim.reset_conflict_monitor()
    shown = await tick(clock, sim, 80)
    assert shown[0] == {"ns": "amber", "ew": "amber", "ped": "red"}  # start-up again
    assert "green" in shown[-1].values()
    assert not (await sim.read_status()).conflict_fault


async def test_a_green_lit_while_flashing_trips_the_monitor(
    sim: SimulatedSignalController, clock: ManualClock, factory: MockFactory
) -> None:
    await sim.set_mode(FLASHING_AMBER)
    await tick(clock, sim, 2)
    factory.pin(9).state = True
    await tick(clock, sim, 1)
    assert not pin(factory, 9)
    assert "green_while_flashing:ped" in (await sim.read_status()).faults


async def test_the_monitor_reads_pins_not_the_plan(
    sim: SimulatedSignalController, clock: ManualClock, factory: MockFactory
) -> None:
    await running(sim)
    await tick(clock, sim, 45)
    # Amber counts as permissive: an amber lit on a group conflicting with a green trips it.
    factory.pin(6).state = True
    await tick(clock, sim, 1)
    assert (await sim.read_status()).conflict_fault


async def test_silence_from_the_agent_flashes_amber_until_it_returns(
    sim: SimulatedSignalController, clock: ManualClock
) -> None:
    await running(sim)
    await tick(clock, sim, 60)  # cycle second 20: east-west green until 35
    quiet = await tick(clock, sim, 12, agent=False)
    assert quiet[9]["ew"] == "green"  # 10 s of silence is tolerated
    assert "green" not in quiet[11].values()
    status = await sim.read_status()  # the agent speaks again
    assert not status.communication_ok
    assert "agent_watchdog" in status.faults
    back = await tick(clock, sim, 60)
    assert back[0]["ns"] == "amber" and back[0]["ew"] == "amber"  # start-up sequence
    assert "green" in back[-1].values()
    assert (await sim.read_status()).communication_ok


async def test_a_cut_link_fails_every_call_and_the_crossing_flashes(
    sim: SimulatedSignalController, clock: ManualClock
) -> None:
    await running(sim)
    sim.disconnect()
    with pytest.raises(SignalCommunicationError):
        await sim.heartbeat()
    with pytest.raises(SignalCommunicationError):
        await sim.read_status()
    shown = await tick(clock, sim, 12, agent=False)
    assert shown[-1]["ns"] in ("amber", "dark") and "green" not in shown[-1].values()
    sim.reconnect()
    assert (await sim.read_status()).mode == FLASHING_AMBER


async def test_dark_mode_switches_every_lamp_off(
    sim: SimulatedSignalController, clock: ManualClock, factory: MockFactory
) -> None:
    await running(sim)
    await tick(clock, sim, 20)
    await sim.set_mode(DARK)
    await tick(clock, sim, 3)
    assert not any(pin(factory, n) for n in range(2, 10))
    assert (await sim.read_status()).mode == DARK


async def test_switching_plans_mid_cycle_stays_safe_and_adopts_the_new_plan(
    sim: SimulatedSignalController, clock: ManualClock
) -> None:
    await running(sim)
    history = await tick(clock, sim, 50)
    await sim.set_plan(CROSSING, OTHER)
    history += await tick(clock, sim, 150)
    assert_safe(history, CROSSING)
    assert (await sim.read_status()).faults == ()
    unix = int(clock.now().timestamp())
    for k in range(1, 61):  # the last full cycle follows the new plan exactly
        second = OTHER.cycle_second(unix - 60 + k)
        assert history[-60 + k - 1] == steady_aspects(OTHER, CROSSING, second)


@pytest.mark.parametrize(
    ("intersection", "plan", "words"),
    [
        (CROSSING, SignalPlan("bad", 40, 0, (GreenInterval("ns", 0, 3),)), "invalid plan"),
        (
            Intersection(CROSSING.groups[:2], CROSSING.intergreens[:2]),
            SignalPlan("two", 40, 0, (GreenInterval("ns", 0, 15),)),
            "do not match the heads",
        ),
        (
            Intersection(CROSSING.groups, CROSSING.intergreens[:2]),
            PLAN,
            "misses the conflict ew/ped",
        ),
    ],
)
async def test_plans_it_cannot_run_safely_are_refused_and_the_old_one_kept(
    sim: SimulatedSignalController, intersection: Intersection, plan: SignalPlan, words: str
) -> None:
    await running(sim)
    with pytest.raises(SignalRefusedError, match=words):
        await sim.set_plan(intersection, plan)
    assert (await sim.read_status()).plan == "day"


async def test_bus_priority_holds_a_green_and_the_cross_street_waits(
    sim: SimulatedSignalController, clock: ManualClock
) -> None:
    await running(sim)
    await tick(clock, sim, 53)  # cycle second 13: ns green until 15
    await sim.request_bus_priority("ns", "bus-412", clock.now() + timedelta(seconds=10))
    shown = await tick(clock, sim, 20)  # cycle seconds 14 .. 33
    ns = [s["ns"] for s in shown]
    # ns held until the request expired at cycle second 23, then amber; ew 5 s after
    # (cycle second 28 instead of 20).
    assert ns[:9] == ["green"] * 9
    assert ns[9] == "amber"
    assert [s["ew"] for s in shown].index("green") == 14
    assert_safe(shown, CROSSING)


async def test_door_is_reported(sim: SimulatedSignalController) -> None:
    sim.set_door(True)
    assert (await sim.read_status()).door_open
    sim.set_door(False)
    assert not (await sim.read_status()).door_open


# --- property: any plan the validator accepts runs safely and exactly on the lamps ---------


@st.composite
def plans(draw: st.DrawFn) -> SignalPlan:
    cycle = draw(st.integers(30, 90))
    greens: list[GreenInterval] = []
    cursor = draw(st.integers(0, cycle - 1))
    for _ in range(draw(st.integers(1, 5))):
        group = draw(st.sampled_from(["ns", "ew", "ped"]))
        length = draw(st.integers(5, 25))
        parallel = draw(st.booleans())
        if greens and parallel:
            start = greens[-1].start_s
        else:
            start = (cursor + draw(st.integers(0, 10))) % cycle
        greens.append(GreenInterval(group, start, (start + length) % cycle or cycle))
        cursor = (start + length) % cycle
    return SignalPlan("p", cycle, draw(st.integers(0, cycle - 1)), tuple(greens))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(plan=plans(), start=st.integers(0, 10_000))
def test_accepted_plans_run_on_the_lamps_without_tripping_the_monitor(
    plan: SignalPlan, start: int
) -> None:
    try:
        validate_plan(plan, CROSSING)
    except SignalPlanError:
        assume(False)
    clock = ManualClock(datetime.fromtimestamp(T0.timestamp() + start, UTC))
    # No agent here: a watchdog longer than the run.
    sim = SimulatedSignalController(
        heads=HEADS, conflicts=CARD, clock=clock, pin_factory=MockFactory(), watchdog_s=1e6
    )
    asyncio.run(running(sim, plan))
    history = []
    for _ in range(3 * plan.cycle_s):
        clock.advance(1)
        sim.step()
        history.append(sim.aspects())
    sim.close()
    assert_safe(history, CROSSING)
    assert asyncio.run(sim.read_status()).faults == ()
    unix = int(clock.now().timestamp())
    for k in range(plan.cycle_s):
        second = plan.cycle_second(unix - k)
        assert history[-1 - k] == steady_aspects(plan, CROSSING, second), k
