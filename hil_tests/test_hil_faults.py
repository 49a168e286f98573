"""Fault injection: each scenario declares its fault, and must end in the safe state with an
alarm (the pins say the state, the outbox the alarm).

Each row of :data:`SCENARIOS` is one scenario: the equipment it opens, when it starts, the
fault it injects (by name, on an inventory line or device: :data:`edge.bench.street.FAULTS`)
and when, the alarm the control centre must get, and what the pins must show after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from street import Street, document, street, sun_event

from domain.schedule.model import SunEvent
from edge.bench.inventory import Inventory
from edge.bench.report import Record
from protos.ondijon.v1 import link_pb2, schedule_pb2

PARIS = ZoneInfo("Europe/Paris")
SUNSET = sun_event(datetime(2026, 6, 21, 12, 0, tzinfo=UTC), SunEvent.SUNSET)
CLOSING = datetime(2026, 6, 21, 22, 0, tzinfo=PARIS)
NOON = datetime(2026, 6, 21, 12, 0, tzinfo=PARIS)

SCHEDULE = document(
    link_pb2.DOCUMENT_KIND_SCHEDULE,
    schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="night",
                points=[
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_SUNSET, lamp_level=100
                    ),
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_SUNRISE, lamp_level=0
                    ),
                    schedule_pb2.SwitchPoint(
                        local_time="07:00",
                        bollard=schedule_pb2.BollardSetting(
                            position=schedule_pb2.BOLLARD_POSITION_DOWN,
                            access=schedule_pb2.ACCESS_POLICY_OPEN,
                        ),
                    ),
                    schedule_pb2.SwitchPoint(
                        local_time="22:00",
                        bollard=schedule_pb2.BollardSetting(
                            position=schedule_pb2.BOLLARD_POSITION_UP,
                            access=schedule_pb2.ACCESS_POLICY_CLOSED,
                        ),
                    ),
                ],
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="night", priority=1)],
    ),
)


def lamp_lit(lamp: int) -> Callable[[Street], None]:
    """Safe state of a lamp at night (or a lamp that cannot be switched off): lit."""

    def check(bench: Street) -> None:
        lamp_id = bench.inventory.lamps[lamp].id
        assert bench.lanterns[lamp_id].relay_closed, f"{lamp_id} dark"

    return check


def post_down(bench: Street) -> None:
    """Safe state of a bollard with a fault: down, the up motor never started."""
    post = bench.bollard()
    device = bench.inventory.bollards[0].id
    assert post.position <= 0.01
    up = bench.inventory.pin(f"bollards.{device}.motor_up")
    assert [c for c in bench.pins.history if c.pin == up and c.state] == []


def nothing_moved(bench: Street) -> None:
    """A cabinet's alarm changes nothing on the street: every lamp lit as at night."""
    del bench


@dataclass(frozen=True)
class Scenario:
    name: str
    kinds: tuple[str, ...]
    start: datetime
    fault: str
    target: Callable[[Inventory], str]
    after_s: float
    run_s: float
    alarm: str
    safe: Callable[[Street], None]
    detail: str = ""


SCENARIOS = [
    Scenario(
        "cut sense wire at night",
        ("lamps",),
        SUNSET + timedelta(minutes=1),
        "cut_wire",
        lambda inv: f"lamps.{inv.lamps[0].id}.sense",
        5,
        120,
        "lamp_failure",
        lamp_lit(0),
    ),
    Scenario(
        "stuck relay by day",
        ("lamps",),
        NOON,
        "stuck_relay",
        lambda inv: inv.lamps[1].id,
        5,
        120,
        "relay_failure",
        lamp_lit(1),
    ),
    Scenario(
        "loop detector fault before closing",
        ("bollards",),
        CLOSING - timedelta(seconds=30),
        "loop_detector_fault",
        lambda inv: inv.bollards[0].id,
        5,
        60,
        "fault",
        post_down,
    ),
    Scenario(
        "loop detector fault wire cut before closing",
        ("bollards",),
        CLOSING - timedelta(seconds=30),
        "cut_wire",
        lambda inv: f"bollards.{inv.bollards[0].id}.loop_fault",
        5,
        60,
        "fault",
        post_down,
    ),
    Scenario(
        "mains lost at night",
        ("lamps", "cabinet"),
        SUNSET + timedelta(minutes=1),
        "mains_lost",
        lambda inv: "cabinet",
        5,
        90,
        "mains_lost",
        lamp_lit(0),
    ),
    Scenario(
        "cabinet door opened",
        ("lamps", "cabinet"),
        SUNSET + timedelta(minutes=1),
        "door_open",
        lambda inv: "cabinet",
        5,
        90,
        "door_open",
        lamp_lit(1),
    ),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name.replace(" ", "-"))
async def test_a_fault_ends_in_the_safe_state_with_an_alarm(
    scenario: Scenario, tmp_path: Path, sim_bench: Inventory, record: Record
) -> None:
    """One declared fault: the alarm reaches the outbox, the pins show the safe state."""
    record.description = f"{scenario.name}: {scenario.fault}, then {scenario.alarm} and safe"
    async with street(
        tmp_path,
        sim_bench,
        start=scenario.start,
        kinds=list(scenario.kinds),
        documents=[SCHEDULE],
        record=record,
    ) as bench:
        await bench.run_for(scenario.after_s, step_s=0.5)
        assert bench.alarms() == [], "an alarm before the fault"
        at = bench.inject(scenario.fault, scenario.target(sim_bench), scenario.detail)
        await bench.run_for(scenario.run_s, step_s=0.5)

        raised = [e for e in bench.alarms() if e.type == scenario.alarm]
        assert raised, f"no {scenario.alarm} alarm: {[e.type for e in bench.alarms()]}"
        first = raised[0].at.ToDatetime(tzinfo=UTC)
        bench.measure(
            f"{scenario.alarm}_alarm_after_s",
            (first - at).total_seconds(),
            unit="s",
            low=0.0,
            high=scenario.run_s,
            description="from the fault to the alarm in the outbox",
        )
        scenario.safe(bench)


async def test_a_clock_step_after_boot_is_recorded_and_the_lamps_follow_the_new_time(
    tmp_path: Path, sim_bench: Inventory, record: Record
) -> None:
    """The wall clock steps back 3 h after dusk: a clock.step event, the schedule re-run."""
    start = SUNSET + timedelta(minutes=10)
    async with street(
        tmp_path, sim_bench, start=start, kinds=["lamps"], documents=[SCHEDULE], record=record
    ) as bench:
        await bench.run_for(5)
        relay = bench.inventory.pin(f"lamps.{sim_bench.lamps[0].id}.relay")
        assert not bench.pins.pin(relay).state  # lit: the coil at rest
        stepped = bench.inject("clock_step", "agent", "-10800")
        stepped_mono = bench.clock.monotonic()
        await bench.run_for(60)
        steps = bench.events("clock.step")
        assert [float(e.attributes["step_s"]) for e in steps] == pytest.approx([-10800], abs=2)
        # 3 h before sunset on the stepped clock: the schedule is evaluated again at once
        # (the agent takes a step as news, SAFETY.md), not at the next switch time it had.
        moved = [c for c in bench.pins.history if c.pin == relay and c.mono >= stepped_mono]
        assert moved and moved[0].state  # the coil energised: dark, as by day
        bench.measure("step_to_reevaluation_s", moved[0].mono - stepped_mono, unit="s",
                      low=0.0, high=60.0)  # fmt: skip
        del stepped
        # A clock step is an event for the control centre, not an alarm.
        assert bench.alarms() == []
