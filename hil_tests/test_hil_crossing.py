"""A signalised crossing on the bench: flashing amber on a conflict and when the agent stops.

The agent selects the day plan from its schedule and hands it to the simulated controller,
whose signal heads are on the bench's mock pins and whose conflict monitor reads those
pins. The bench welds a green relay and cuts the agent off, and checks the *lamps*.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from street import Street, document, street

from edge.bench.inventory import Inventory
from edge.bench.report import Record
from ondijon.demo import signal_plans
from protos.ondijon.v1 import link_pb2, schedule_pb2

START = datetime(2026, 6, 21, 8, 0, tzinfo=ZoneInfo("Europe/Paris"))

# The demo's crossing: the same groups, intergreens and day plan as `ondijon demo` runs.
PLANS = document(link_pb2.DOCUMENT_KIND_SIGNAL_PLANS, signal_plans())

SCHEDULE = document(
    link_pb2.DOCUMENT_KIND_SCHEDULE,
    schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="day",
                points=[
                    schedule_pb2.SwitchPoint(
                        local_time="00:00",
                        signal_plan="day",
                        signal_mode=schedule_pb2.SIGNAL_MODE_NORMAL,
                    )
                ],
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="day", priority=1)],
    ),
)


def head(bench: Street, group: str, lamp: str) -> str:
    """The pin of ``group``'s ``lamp`` (red, amber, green) on the inventory's crossing."""
    return bench.inventory.pin(f"crossings.{bench.inventory.crossings[0].id}.{group}.{lamp}")


def heads(bench: Street, *lamps: str) -> tuple[str, ...]:
    """The pins of ``lamps`` of every group."""
    groups = bench.inventory.crossings[0].heads
    return tuple(head(bench, g, lamp) for g in groups for lamp in lamps)


def lit(bench: Street, pins: tuple[str, ...]) -> list[str]:
    """Which of ``pins`` are lit now."""
    return [n for n in pins if bench.pins.pin(n).state]


def all_out(bench: Street, pins: tuple[str, ...], *, after: datetime) -> datetime:
    """The first instant after ``after`` when none of ``pins`` is lit (replaying the pins)."""
    on: set[str] = set()  # the heads open with every lamp off
    for change in bench.pins.history:
        if change.pin not in pins:
            continue
        if change.state:
            on.add(change.pin)
        else:
            on.discard(change.pin)
        if change.at > after and not on:
            return change.at
    raise AssertionError(f"{sorted(pins)} never all out after {after}")


async def until_green(bench: Street, group: str) -> None:
    """Run second by second until ``group``'s green lamp is lit."""
    for _ in range(120):
        if bench.pins.pin(head(bench, group, "green")).state:
            return
        await bench.run_for(1)
    raise AssertionError(f"{group} never turned green")


def assert_flashing_amber(bench: Street, since: datetime) -> None:
    """Every amber blinks once a second since ``since``; no red or green lit then."""
    ambers = heads(bench, "amber")
    for pin in ambers:
        changes = [c for c in bench.pins.history if c.pin == pin and c.at >= since]
        assert len(changes) >= 4, f"{pin} does not blink"
        assert all(b.state != a.state for a, b in itertools.pairwise(changes))
        assert all(b.at - a.at == timedelta(seconds=1) for a, b in itertools.pairwise(changes))
    late = [c for c in bench.pins.history if c.at > since and c.state]
    assert {c.pin for c in late} <= set(ambers)
    assert lit(bench, heads(bench, "red", "green")) == []


async def test_a_conflict_seen_on_the_pins_falls_to_flashing_amber(
    tmp_path: Path, sim_bench: Inventory, record: Record
) -> None:
    """A welded green against a green: flashing amber within the second, one alarm."""
    documents = [PLANS, SCHEDULE]
    crossing = sim_bench.crossings[0].id
    async with street(
        tmp_path, sim_bench, start=START, kinds=["crossings"], documents=documents, record=record
    ) as bench:
        await until_green(bench, "ns")
        assert bench.crossing().aspects() == {"ns": "green", "ew": "red"}

        # The east-west green lights on its own (a welded relay in the controller).
        welded = bench.inject("green_welded", f"crossings.{crossing}.ew.green")
        await bench.run_for(8)
        flashing = all_out(bench, heads(bench, "red", "green"), after=welded)
        bench.measure("conflict_to_flashing_amber_s", (flashing - welded).total_seconds(),
                      unit="s", low=0.0, high=1.0)  # fmt: skip

        # The monitor saw the two greens on the pins within the second: flashing amber,
        # latched although the agent still asks for the day plan.
        assert_flashing_amber(bench, welded + timedelta(seconds=1))
        alarms = bench.events("signal.conflict_fault")
        assert [(e.device_id, e.priority) for e in alarms] == [
            (crossing, link_pb2.EVENT_PRIORITY_ALARM)
        ]
        assert alarms[0].at.ToDatetime(tzinfo=welded.tzinfo) <= welded + timedelta(seconds=3)
        state = bench.agent.signals[0].state().signal
        assert state.conflict_fault
        assert state.mode == schedule_pb2.SIGNAL_MODE_FLASHING_AMBER


async def test_the_crossing_flashes_amber_while_it_does_not_hear_the_agent(
    tmp_path: Path, sim_bench: Inventory, record: Record
) -> None:
    """The controller lost: flashing amber after its watchdog, an alarm, back after."""
    documents = [PLANS, SCHEDULE]
    device = sim_bench.crossings[0].id
    async with street(
        tmp_path, sim_bench, start=START, kinds=["crossings"], documents=documents, record=record
    ) as bench:
        await until_green(bench, "ew")
        crossing = bench.crossing()
        # The agent and the controller lose each other: its alive line drops and every call
        # the agent makes fails, as when its process dies or the cabinet cable is cut.
        cut = bench.inject("controller_lost", device)
        await bench.run_for(7)
        assert lit(bench, heads(bench, "red", "green")) != []  # the plan runs on for a while
        await bench.run_for(10)
        # Silent for more than watchdog_s (10 s; the last heartbeat was up to 2 s before
        # the cut): every red and green out, flashing amber from then on.
        flashing_from = all_out(bench, heads(bench, "red", "green"), after=cut)
        bench.measure("lost_to_flashing_amber_s", (flashing_from - cut).total_seconds(),
                      unit="s", low=9.0, high=11.0)  # fmt: skip
        assert cut + timedelta(seconds=9) <= flashing_from <= cut + timedelta(seconds=11)
        assert_flashing_amber(bench, flashing_from)
        lost = bench.events("signal.communication_lost")
        assert [(e.device_id, e.priority) for e in lost] == [
            (device, link_pb2.EVENT_PRIORITY_ALARM)
        ]

        crossing.reconnect()
        await bench.run_for(70)
        # Heard again: the start-up sequence, then the day plan, without a conflict.
        assert bench.events("signal.communication_restored") != []
        assert lit(bench, heads(bench, "green")) != []
        state = bench.agent.signals[0].state().signal
        assert (state.plan, state.mode, state.conflict_fault) == (
            "day",
            schedule_pb2.SIGNAL_MODE_NORMAL,
            False,
        )
