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

from ondijon.demo import signal_plans
from protos.ondijon.v1 import link_pb2, schedule_pb2

START = datetime(2026, 6, 21, 8, 0, tzinfo=ZoneInfo("Europe/Paris"))
# BCM pins of the heads: red, amber, green per group.
HEADS = {"ns": (2, 3, 4), "ew": (5, 6, 7)}
REDS_AND_GREENS = (2, 4, 5, 7)
AMBERS = (3, 6)

CROSSING = """
[[signals]]
id = "place-darcy"
backend = "simulated"
[signals.safety_card]    # from commissioning: no document may relax it
groups = ["ns", "ew"]
min_green_s = 6
min_amber_s = 3
min_all_red_s = 2
intergreens = [["ns", "ew", 5], ["ew", "ns", 5]]
[signals.simulated]
conflicts = [["ns", "ew"]]
watchdog_s = 10
[signals.simulated.heads.ns]
red = 2
amber = 3
green = 4
[signals.simulated.heads.ew]
red = 5
amber = 6
green = 7
"""

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


def lit(bench: Street, pins: tuple[int, ...]) -> list[int]:
    """Which of ``pins`` are lit now."""
    return [n for n in pins if bench.pins.pin(n).state]


def all_out(bench: Street, pins: tuple[int, ...], *, after: datetime) -> datetime:
    """The first instant after ``after`` when none of ``pins`` is lit (replaying the pins)."""
    names = {f"GPIO{n}" for n in pins}
    on: set[str] = set()  # the heads open with every lamp off
    for change in bench.pins.history:
        if change.pin not in names:
            continue
        if change.state:
            on.add(change.pin)
        else:
            on.discard(change.pin)
        if change.at > after and not on:
            return change.at
    raise AssertionError(f"{sorted(names)} never all out after {after}")


async def until_green(bench: Street, group: str) -> None:
    """Run second by second until ``group``'s green lamp is lit."""
    for _ in range(120):
        if bench.pins.pin(HEADS[group][2]).state:
            return
        await bench.run_for(1)
    raise AssertionError(f"{group} never turned green")


def assert_flashing_amber(bench: Street, since: datetime) -> None:
    """Every amber blinks once a second since ``since``; no red or green lit then."""
    for number in AMBERS:
        changes = [c for c in bench.pins.history if c.pin == f"GPIO{number}" and c.at >= since]
        assert len(changes) >= 4, f"GPIO{number} does not blink"
        assert all(b.state != a.state for a, b in itertools.pairwise(changes))
        assert all(b.at - a.at == timedelta(seconds=1) for a, b in itertools.pairwise(changes))
    late = [c for c in bench.pins.history if c.at > since and c.state]
    assert {c.pin for c in late} <= {f"GPIO{n}" for n in AMBERS}
    assert lit(bench, REDS_AND_GREENS) == []


async def test_a_conflict_seen_on_the_pins_falls_to_flashing_amber(tmp_path: Path) -> None:
    documents = [PLANS, SCHEDULE]
    async with street(tmp_path, start=START, equipment=CROSSING, documents=documents) as bench:
        await until_green(bench, "ns")
        assert bench.crossing().aspects() == {"ns": "green", "ew": "red"}

        welded = bench.clock.now()
        bench.pins.pin(HEADS["ew"][2]).state = True  # the east-west green lights on its own
        await bench.run_for(8)

        # The monitor saw the two greens on the pins within the second: flashing amber,
        # latched although the agent still asks for the day plan.
        assert_flashing_amber(bench, welded + timedelta(seconds=1))
        alarms = bench.events("signal.conflict_fault")
        assert [(e.device_id, e.priority) for e in alarms] == [
            ("place-darcy", link_pb2.EVENT_PRIORITY_ALARM)
        ]
        assert alarms[0].at.ToDatetime(tzinfo=welded.tzinfo) <= welded + timedelta(seconds=3)
        state = bench.agent.signals[0].state().signal
        assert state.conflict_fault
        assert state.mode == schedule_pb2.SIGNAL_MODE_FLASHING_AMBER


async def test_the_crossing_flashes_amber_while_it_does_not_hear_the_agent(
    tmp_path: Path,
) -> None:
    documents = [PLANS, SCHEDULE]
    async with street(tmp_path, start=START, equipment=CROSSING, documents=documents) as bench:
        await until_green(bench, "ew")
        crossing = bench.crossing()
        cut = bench.clock.now()
        # The agent goes silent for the controller: every call it makes fails, as when
        # its process dies or the cabinet cable is cut.
        crossing.disconnect()
        await bench.run_for(7)
        assert lit(bench, REDS_AND_GREENS) != []  # the plan runs on for a while
        await bench.run_for(10)
        # Silent for more than watchdog_s (10 s; the last heartbeat was up to 2 s before
        # the cut): every red and green out, flashing amber from then on.
        flashing_from = all_out(bench, REDS_AND_GREENS, after=cut)
        assert cut + timedelta(seconds=9) <= flashing_from <= cut + timedelta(seconds=11)
        assert_flashing_amber(bench, flashing_from)
        lost = bench.events("signal.communication_lost")
        assert [(e.device_id, e.priority) for e in lost] == [
            ("place-darcy", link_pb2.EVENT_PRIORITY_ALARM)
        ]

        crossing.reconnect()
        await bench.run_for(70)
        # Heard again: the start-up sequence, then the day plan, without a conflict.
        assert bench.events("signal.communication_restored") != []
        assert lit(bench, (HEADS["ns"][2], HEADS["ew"][2])) != []
        state = bench.agent.signals[0].state().signal
        assert (state.plan, state.mode, state.conflict_fault) == (
            "day",
            schedule_pb2.SIGNAL_MODE_NORMAL,
            False,
        )
