"""The whole chain: an orchestrator over mutual TLS, a link the bench cuts, the agent's own
process, and the street checked on its pins.

Each scenario starts a real orchestrator, enrolls the bench's gateway, and runs the rig
(:mod:`edge.bench.cabinet`) behind a proxy the bench controls. Documents and commands go
through the admin API as an operator's would; the bench reads the pin journal, not the
agent's reports, and the orchestrator's store for what the control centre got.

Quick forms run in ``make test``; ``ONDIJON_LONG=1`` (``make hil``) runs the long ones
(a whole simulated day without link).
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from street import sun_event
from whole_chain import city_bench

from domain.schedule.model import SunEvent
from edge.bench.inventory import Inventory
from edge.bench.report import Record
from protos.ondijon.v1 import link_pb2, schedule_pb2

pytestmark = pytest.mark.integration

LONG = os.environ.get("ONDIJON_LONG", "") not in ("", "0")
DAY = datetime(2026, 10, 12, 12, 0, tzinfo=UTC)
SUNSET = sun_event(DAY, SunEvent.SUNSET)
SCHEDULE = link_pb2.DOCUMENT_KIND_SCHEDULE


def night(level: int) -> bytes:
    """Lamps at ``level`` from sunset to sunrise."""
    return schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="night",
                points=[
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_SUNSET, lamp_level=level
                    ),
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_SUNRISE, lamp_level=0
                    ),
                ],
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="night", priority=1)],
    ).SerializeToString()


@pytest.mark.timeout(300 if LONG else 120)
async def test_the_link_lost_leaves_the_street_lit_and_every_event_arrives_after(
    tmp_path: Path, sim_bench: Inventory, inventory_file: Path, record: Record
) -> None:
    """A byte corrupted on the link, then the link held a second, then cut before dusk for
    20 simulated minutes (a day with ONDIJON_LONG=1): the lamps
    switch on at sunset on the pins all the same, a lamp that dies meanwhile is alarmed,
    and once the link is back the orchestrator holds every event, in sequence, none lost."""
    offline = timedelta(days=1) if LONG else timedelta(minutes=20)
    start = SUNSET - timedelta(minutes=10)
    async with city_bench(
        tmp_path, sim_bench, inventory_file, kinds=["lamps"], start=start, record=record,
        speed=60,  # while the gateway connects and syncs (real seconds)
    ) as bench:  # fmt: skip
        await bench.connected()
        version = await bench.put(SCHEDULE, night(80))
        await bench.holds(SCHEDULE, version)

        # A corrupted byte towards the orchestrator: TLS tears the stream down, the agent
        # connects again. Then the link holds every byte for a while (a delay), and lets go.
        bench.corrupt_link()
        await bench.rig.wait_for(lambda: bench.proxy.flips == 1, timeout=30)
        await bench.rig.wait_for(lambda: bench.proxy.connections >= 2, timeout=30)
        await bench.connected()
        bench.hold_link()
        await asyncio.sleep(1.0)  # a real second held: the network is real
        bench.release_link()

        bench.cut_link()
        connections = bench.proxy.connections
        cut_at = bench.rig.now
        assert cut_at is not None and cut_at < SUNSET - timedelta(minutes=2), "synced too late"
        dead = sim_bench.lamps[1].id
        await bench.inject("dead_lamp", dead)
        await bench.rig.pace(600, 0.5)
        await bench.rig.until(SUNSET + timedelta(minutes=10))
        for lamp in sim_bench.lamps:
            # The relay's coil rests (normally closed: lit) and the dimming line at 80 %.
            line = f"lamps.{lamp.id}.relay"
            assert bench.rig.level(line, SUNSET - timedelta(minutes=1)) == 1.0  # dark by day
            relay = bench.rig.changes(line, since=SUNSET - timedelta(minutes=1))
            assert [c.state for c in relay] == [0.0], relay
            record.measure(
                f"{lamp.id}.lit_after_sunset_s",
                (relay[0].at - SUNSET).total_seconds(),
                unit="s",
                low=0.0,
                high=1.0,
                description="relay at rest (lit) after Dijon's sunset, the link down",
            )
            assert bench.rig.level(f"lamps.{lamp.id}.pwm", SUNSET + timedelta(minutes=5)) == 0.8
        if LONG:  # the rest of the day: the lamps' program, coarser steps
            await bench.rig.pace(7200, 10.0)
        await bench.rig.until(cut_at + offline, timeout=240)
        assert bench.proxy.connections == connections, "it reached the orchestrator while cut"
        recorded = bench.rig.last_sequence

        bench.restore_link()
        await bench.delivered()
        stored = await bench.stored()
        sequences = [e.event.sequence for e in stored]
        record.measure(
            "events_recorded_while_cut", recorded - min(sequences), low=1,
            description="events the agent recorded with the link down",
        )  # fmt: skip
        missing = set(range(1, max(bench.rig.last_sequence, sequences[-1]) + 1)) - set(sequences)
        record.measure(
            "events_missing_after_reconnection", len(missing), high=0,
            description="sequences the agent recorded that the orchestrator does not hold",
        )  # fmt: skip
        assert sequences == sorted(set(sequences))
        failures = [e.event for e in stored if e.event.type == "lamp_failure"]
        # Raised at dusk for the dead lamp alone (over a day: cleared when it is switched
        # off at dawn, raised again the next dusk).
        assert {e.device_id for e in failures} == {dead}
        assert failures[0].priority == link_pb2.EVENT_PRIORITY_ALARM


async def test_a_power_cut_during_a_schedule_update_leaves_the_street_lit(
    tmp_path: Path, sim_bench: Inventory, inventory_file: Path, record: Record
) -> None:
    """Power cut (SIGKILL) the moment a new schedule reaches the cabinet: on power-up the
    agent holds a whole schedule (the old or the new, never a torn one), the lamps are lit
    from the first instant (the relay's coil never energised at night), and the new
    schedule is in force once the link is back."""
    evening = datetime(2026, 10, 12, 20, 0, tzinfo=UTC)  # 22:00 in Dijon: night
    async with city_bench(
        tmp_path, sim_bench, inventory_file, kinds=["lamps"], start=evening, record=record,
        speed=60,
    ) as bench:  # fmt: skip
        rig = bench.rig
        await bench.connected()
        old = await bench.put(SCHEDULE, night(40))
        await bench.holds(SCHEDULE, old)
        lamp = sim_bench.lamps[0].id
        await rig.wait_for(lambda: bool(rig.changes(f"lamps.{lamp}.pwm")) and rig.changes(
            f"lamps.{lamp}.pwm")[-1].state == 0.4)  # fmt: skip

        new = await bench.put(SCHEDULE, night(90))
        await rig.wait_for(lambda: ("DOCUMENT_KIND_SCHEDULE", new) in rig.documents)
        await rig.kill()  # the update has started: stored, half stored, or not yet
        record.faults.append(
            {
                "at": rig.now.isoformat() if rig.now else "",
                "fault": "power_cut",
                "target": "cabinet",
                "detail": "SIGKILL",
            }
        )
        boot = await rig.restart()
        await bench.holds(SCHEDULE, new)
        await rig.wait_for(
            lambda: rig.level(f"lamps.{lamp}.pwm", datetime.max.replace(tzinfo=UTC)) == 0.9
        )
        after = datetime.max.replace(tzinfo=UTC)
        for wired in sim_bench.lamps:
            relay = rig.changes(f"lamps.{wired.id}.relay", since=boot)
            dark = [c for c in relay if c.state]
            record.measure(
                f"{wired.id}.coil_energised_after_power_up", len(dark), high=0,
                description="times the relay's coil was energised (lamp dark) after power-up",
            )  # fmt: skip
            levels = [c.state for c in rig.changes(f"lamps.{wired.id}.pwm", since=boot)]
            # Opened lit at full (as without an agent), then the held schedule's level.
            assert set(levels) <= {1.0, 0.4, 0.9}, levels
            assert rig.level(f"lamps.{wired.id}.pwm", after) == 0.9
        converged = rig.changes(f"lamps.{lamp}.pwm", since=boot)[-1].at
        record.measure("power_up_to_new_schedule_s", (converged - boot).total_seconds(),
                       unit="s", low=0.0, high=600.0)  # fmt: skip
        # What the agent recorded before the cut and after it reached the control centre.
        sequences = await bench.delivered()
        assert sequences == list(range(1, sequences[-1] + 1))


async def test_an_operators_crisis_override_expires_on_the_cabinet_with_the_link_down(
    tmp_path: Path, sim_bench: Inventory, inventory_file: Path, record: Record
) -> None:
    """An operator's crisis override (every lamp at full for 20 minutes) sent through the
    admin API: on the pins at once; the link is then cut, and the override ends on the
    cabinet's own clock at its expiry, the lamps back to the night's 40 %."""
    evening = datetime(2026, 10, 12, 20, 0, tzinfo=UTC)
    async with city_bench(
        tmp_path, sim_bench, inventory_file, kinds=["lamps"], start=evening, record=record,
        speed=60,
    ) as bench:  # fmt: skip
        rig = bench.rig
        await bench.connected()
        await bench.holds(SCHEDULE, await bench.put(SCHEDULE, night(40)))
        lamp = f"lamps.{sim_bench.lamps[0].id}.pwm"
        now = datetime.max.replace(tzinfo=UTC)
        await rig.wait_for(lambda: rig.level(lamp, now) == 0.4)
        assert rig.now is not None
        begins = rig.now - timedelta(minutes=1)  # the rig's clock as last told, minus margin
        expiry = begins + timedelta(minutes=20)
        command = link_pb2.Command(
            command_id="cmd-crisis",
            override=schedule_pb2.Override(
                id="crisis", priority=5, kind=schedule_pb2.DEVICE_KIND_LAMP, lamp_level=100
            ),
        )
        # The command's own expiry is on the control centre's clock; the override's start
        # and expiry on the cabinet's (simulated) one.
        command.expires_at.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
        command.override.start.FromDatetime(begins)
        command.override.expiry.FromDatetime(expiry)
        await bench.command(command)
        await rig.wait_for(lambda: rig.level(lamp, now) == 1.0)
        bench.cut_link()
        await rig.pace(600, 0.5)
        await rig.until(expiry + timedelta(minutes=2))
        for wired in sim_bench.lamps:
            line = f"lamps.{wired.id}.pwm"
            assert rig.level(line, expiry - timedelta(seconds=1)) == 1.0
            back = [c for c in rig.changes(line, since=expiry - timedelta(seconds=1))]
            assert [c.state for c in back] == [0.4], back
            record.measure(f"{wired.id}.override_end_delay_s",
                           (back[0].at - expiry).total_seconds(), unit="s", low=0.0, high=1.0,
                           description="back to the schedule after the override's expiry, "
                           "the link down")  # fmt: skip
            assert (
                rig.changes(f"lamps.{wired.id}.relay", since=evening + timedelta(minutes=1)) == []
            )
