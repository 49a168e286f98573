"""A crossing's plan changed while a group is green, and a plan with a conflicting pair.

The agent holds two plans for the inventory's crossing and a schedule that switches from
the morning's 90 s plan to the 60 s one at 08:01, when the morning plan has ``ew`` green
and the new one wants ``ns`` green at once. The bench replays the heads' pins: the green
ends through its amber, the intergreen of the safety card holds before the conflicting
green, and the two are never lit together. A plan whose greens overlap for a conflicting
pair is refused naming the plan and the pair, and the heads carry on as before.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from street import document, street
from test_hil_crossing import head

from edge.bench.inventory import Inventory
from edge.bench.report import Record
from edge.equipment.sim.bollard import PinChange
from protos.ondijon.v1 import link_pb2, schedule_pb2, signal_pb2

PARIS = ZoneInfo("Europe/Paris")
CHANGE = datetime(2026, 6, 22, 8, 1, tzinfo=PARIS)


def plans(*extra: signal_pb2.SignalPlan) -> signal_pb2.SignalPlans:
    groups = [
        signal_pb2.SignalGroup(
            id=g, kind=signal_pb2.SIGNAL_GROUP_KIND_VEHICLE, min_green_s=6, amber_s=3, all_red_s=2
        )
        for g in ("ns", "ew")
    ]
    return signal_pb2.SignalPlans(
        intersection=signal_pb2.Intersection(
            groups=groups,
            intergreens=[
                signal_pb2.Intergreen(from_group="ns", to_group="ew", seconds=5),
                signal_pb2.Intergreen(from_group="ew", to_group="ns", seconds=5),
            ],
        ),
        plans=[
            signal_pb2.SignalPlan(  # at 08:01, second 60 of its cycle: ew green
                id="morning",
                cycle_s=90,
                greens=[
                    signal_pb2.GreenInterval(group="ns", start_s=0, end_s=29),
                    signal_pb2.GreenInterval(group="ew", start_s=34, end_s=80),
                ],
            ),
            signal_pb2.SignalPlan(  # at 08:01, second 0 of its cycle: ns green
                id="day",
                cycle_s=60,
                greens=[
                    signal_pb2.GreenInterval(group="ns", start_s=0, end_s=29),
                    signal_pb2.GreenInterval(group="ew", start_s=34, end_s=55),
                ],
            ),
            *extra,
        ],
    )


def point(local_time: str, plan: str) -> schedule_pb2.SwitchPoint:
    return schedule_pb2.SwitchPoint(
        local_time=local_time, signal_plan=plan, signal_mode=schedule_pb2.SIGNAL_MODE_NORMAL
    )


SCHEDULE = document(
    link_pb2.DOCUMENT_KIND_SCHEDULE,
    schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="weekday", points=[point("00:00", "morning"), point("08:01", "day")]
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="weekday", priority=1)],
    ),
)


def green_spans(
    history: list[PinChange], pin: str, end: datetime
) -> list[tuple[datetime, datetime]]:
    """When ``pin`` was lit: (on, off) pairs, the last one closed at ``end``."""
    spans, on = [], None
    for change in history:
        if change.pin != pin:
            continue
        if change.state and on is None:
            on = change.at
        elif not change.state and on is not None:
            spans.append((on, change.at))
            on = None
    if on is not None:
        spans.append((on, end))
    return spans


async def test_a_plan_change_while_a_group_is_green_keeps_the_intergreens(
    tmp_path: Path, sim_bench: Inventory, record: Record
) -> None:
    """Plan change at 08:01 with ew green and the new plan wanting ns green: ew goes
    through its amber, ns waits out the 5 s intergreen, never both green."""
    start = CHANGE - timedelta(minutes=2)
    async with street(
        tmp_path, sim_bench, start=start, kinds=["crossings"],
        documents=[document(link_pb2.DOCUMENT_KIND_SIGNAL_PLANS, plans()), SCHEDULE],
        record=record,
    ) as bench:  # fmt: skip
        await bench.run_until(CHANGE - timedelta(seconds=1))
        assert bench.pins.pin(head(bench, "ew", "green")).state, "ew not green before 08:01"
        await bench.run_until(CHANGE + timedelta(minutes=2))
        end = bench.clock.now()
        history = bench.pins.history
        ew = green_spans(history, head(bench, "ew", "green"), end)
        ns = green_spans(history, head(bench, "ns", "green"), end)
        overlap = sum(
            max(0.0, (min(a1, b1) - max(a0, b0)).total_seconds()) for a0, a1 in ew for b0, b1 in ns
        )
        bench.measure("conflicting_greens_together_s", overlap, unit="s", high=0.0)
        ew_end = next(off for on, off in ew if on < CHANGE <= off)
        ns_next = next(on for on, _ in ns if on >= ew_end)
        bench.measure("intergreen_ew_to_ns_at_change_s", (ns_next - ew_end).total_seconds(),
                      unit="s", low=5.0, description="the safety card's intergreen")  # fmt: skip
        amber = green_spans(history, head(bench, "ew", "amber"), end)
        after = next(span for span in amber if span[0] >= ew_end)
        bench.measure("ew_amber_after_green_s", (after[1] - after[0]).total_seconds(),
                      unit="s", low=3.0)  # fmt: skip
        # The new plan runs after the change: ns green for 30 s of each 60 s cycle.
        later = [(on, off) for on, off in ns if on > ns_next and off < end]
        assert later and all(off - on == timedelta(seconds=29) for on, off in later), later
        assert bench.alarms() == []


async def test_a_plan_with_a_conflicting_pair_green_together_is_refused(
    tmp_path: Path, sim_bench: Inventory, record: Record
) -> None:
    """A plan whose greens overlap for ns and ew (a conflicting pair): refused, naming the
    plan and the pair; the crossing carries on with the plans it held."""
    bad = signal_pb2.SignalPlan(
        id="event",
        cycle_s=60,
        greens=[
            signal_pb2.GreenInterval(group="ns", start_s=0, end_s=29),
            signal_pb2.GreenInterval(group="ew", start_s=20, end_s=50),
        ],
    )
    async with street(
        tmp_path, sim_bench, start=CHANGE + timedelta(minutes=5), kinds=["crossings"],
        documents=[document(link_pb2.DOCUMENT_KIND_SIGNAL_PLANS, plans()), SCHEDULE],
        record=record,
    ) as bench:  # fmt: skip
        await bench.run_for(30)
        offered = document(link_pb2.DOCUMENT_KIND_SIGNAL_PLANS, plans(bad))
        offered.version = 2
        before = len(bench.pins.history)
        refusal = await bench.agent.accept_document(offered)
        assert refusal.startswith("plans[2].greens"), refusal  # the field path of the plan
        assert "'ew'" in refusal and "'ns'" in refusal, refusal  # and the pair
        held = bench.agent.state.document(link_pb2.DOCUMENT_KIND_SIGNAL_PLANS)
        assert held is not None and held.version == 1
        await bench.run_for(120)
        end = bench.clock.now()
        history = bench.pins.history[before:]
        ew = green_spans(history, head(bench, "ew", "green"), end)
        ns = green_spans(history, head(bench, "ns", "green"), end)
        overlap = sum(
            max(0.0, (min(a1, b1) - max(a0, b0)).total_seconds()) for a0, a1 in ew for b0, b1 in ns
        )
        bench.measure("conflicting_greens_together_s", overlap, unit="s", high=0.0)
        assert all(off - on == timedelta(seconds=29) for on, off in ns if off < end)
