"""Lamps on the bench: the agent, on its own, lights the street across a simulated dusk.

The agent holds a lighting schedule from an earlier sync and cannot reach its orchestrator.
The bench checks the relay and dimming *pins* of the inventory's lamps (PWM duty cycles) at
the sun's times for Dijon, the lanterns' power draw, and the outbox for the alarms the
control centre would get.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from street import document, street, sun_event

from domain.schedule.model import SunEvent
from edge.bench.inventory import Inventory
from edge.bench.report import Record
from protos.ondijon.v1 import link_pb2, schedule_pb2

DAY = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)
SUNSET = sun_event(DAY, SunEvent.SUNSET)
CIVIL_DUSK = sun_event(DAY, SunEvent.CIVIL_DUSK)
ELEVEN_PM = datetime(2026, 6, 21, 23, 0, tzinfo=ZoneInfo("Europe/Paris"))

SCHEDULE = document(
    link_pb2.DOCUMENT_KIND_SCHEDULE,
    schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="night",
                points=[
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_SUNSET, lamp_level=60
                    ),
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_CIVIL_DUSK, lamp_level=100
                    ),
                    schedule_pb2.SwitchPoint(local_time="23:00", lamp_level=40),
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_SUNRISE, lamp_level=0
                    ),
                ],
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="night", priority=1)],
    ),
)


async def test_lamps_follow_the_schedule_across_dusk(
    tmp_path: Path, sim_bench: Inventory, record: Record
) -> None:
    """Lamps across an evening: 60 % at sunset, 100 % at civil dusk, 40 % at 23:00."""
    start = SUNSET - timedelta(minutes=20)
    lamps = sim_bench.lamps
    async with street(
        tmp_path, sim_bench, start=start, kinds=["lamps"], documents=[SCHEDULE], record=record
    ) as bench:
        for lamp in lamps:
            bench.pins.pin(lamp.pwm).clear_states()
            bench.pins.pin(lamp.relay).clear_states()
        await bench.run_until(SUNSET + timedelta(seconds=1))
        for lamp in lamps:
            # Warming up after the relay moved (the trace says when): the lantern's ramp.
            relay = bench.inventory.pin(f"lamps.{lamp.id}.relay")
            moved = [c.mono for c in bench.pins.history if c.pin == relay][-1]
            warmed = (bench.clock.monotonic() - moved) / lamp.sim.warm_up_s
            expected = lamp.nominal_power_w * 0.6 * min(1.0, warmed)
            bench.measure(
                f"{lamp.id}.power_warming_w",
                bench.lanterns[lamp.id].power_w(),
                unit="W",
                low=expected - 0.01,
                high=expected + 0.01,
                description="60 % of nominal, ramped over the warm-up from the relay's move",
            )
        await bench.run_until(ELEVEN_PM + timedelta(minutes=5))

        sunset_s = (SUNSET - start).total_seconds()
        dusk_s = (CIVIL_DUSK - SUNSET).total_seconds()
        late_s = (ELEVEN_PM - CIVIL_DUSK).total_seconds()
        for lamp in lamps:
            pwm = bench.pins.pin(lamp.pwm)
            assert [s.state for s in pwm.states] == [0.0, 0.6, 1.0, 0.4]
            pwm.assert_states_and_times([(0, 0.0), (sunset_s, 0.6), (dusk_s, 1.0), (late_s, 0.4)])
            # Dark until sunset, then lit all evening (dimming never opens the relay). The
            # relay is normally closed: its coil is energised to keep the lamp dark by day
            # and rests from sunset, so the lamp stays lit should the agent go.
            relay = bench.pins.pin(lamp.relay)
            assert [s.state for s in relay.states] == [True, False]
            relay.assert_states_and_times([(0, True), (sunset_s, False)])
            # assert_states_and_times allows 5 %; the history pins each switch down: the
            # clock moves in 1 s steps, so each lands within the second after its instant.
            # (The pins open lit at full, as the luminaire is without the agent, and are
            # dimmed to the day's 0 at the start: those switches are not the schedule's.)
            line = bench.inventory.pin(f"lamps.{lamp.id}.pwm")
            switched = [c.at for c in bench.pins.history if c.pin == line and c.at > start]
            for at, due, what in zip(
                switched, (SUNSET, CIVIL_DUSK, ELEVEN_PM), ("sunset", "dusk", "23h"), strict=True
            ):
                bench.measure(
                    f"{lamp.id}.{what}_switch_delay_s",
                    (at - due).total_seconds(),
                    unit="s",
                    low=0.0,
                    high=1.0,
                )
            # At 40 % from 23:00, warmed up long ago: 40 % of its nominal power.
            bench.measure(
                f"{lamp.id}.power_at_23h05_w",
                bench.lanterns[lamp.id].power_w(),
                unit="W",
                low=lamp.nominal_power_w * 0.4 * 0.99,
                high=lamp.nominal_power_w * 0.4 * 1.01,
            )

        # Healthy lanterns: current flowed from the first second, no alarm at all.
        assert all(bench.lanterns[lamp.id].lit for lamp in lamps)
        assert bench.alarms() == []
        assert {e.device_id for e in bench.events("energy_interval")} == {lamp.id for lamp in lamps}


async def test_a_lamp_with_a_dead_sense_input_raises_a_lamp_failure(
    tmp_path: Path, sim_bench: Inventory, record: Record
) -> None:
    """A dead lamp: one lamp_failure alarm for it alone, and it is still driven."""
    start = SUNSET - timedelta(minutes=5)
    second = sim_bench.lamps[1].id
    async with street(
        tmp_path, sim_bench, start=start, kinds=["lamps"], documents=[SCHEDULE], record=record
    ) as bench:
        bench.inject("dead_lamp", second)  # the sense input never sees current
        await bench.run_until(SUNSET + timedelta(minutes=2))

        failures = bench.events("lamp_failure")
        assert [(e.device_id, e.priority) for e in failures] == [
            (second, link_pb2.EVENT_PRIORITY_ALARM)
        ]
        at = failures[0].at.ToDatetime(tzinfo=UTC)
        # Seen at the first 30 s monitor pass after the switch, confirmed at the first pass
        # after fault_delay_s (10 s) more: within two passes of the relay closing.
        assert SUNSET + timedelta(seconds=10) <= at <= SUNSET + timedelta(seconds=61)
        assert bench.agent.lamps[1].controller.state().lamp.faults == ["lamp_failure"]
        assert bench.agent.lamps[0].controller.faults == frozenset()
        # The dead lamp is still driven: its relay and dimming pins follow the schedule.
        assert bench.lanterns[second].relay_closed
        assert not bench.pin(f"lamps.{second}.relay").state  # the coil at rest (normally closed)
        assert bench.pin(f"lamps.{second}.pwm").state == 0.6
