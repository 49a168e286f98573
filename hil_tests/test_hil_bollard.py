"""A retractable bollard on the bench: warning before rising, never onto a car.

The agent runs its bollard from a schedule (a pedestrian street closed from 22:00) on the
simulated backend: the real gpiozero backend on clocked mock pins, with the post's motors,
limit switches and vehicle loop played behind them. The bench drives cars onto the loop
and checks the motor and warning-light *pins*, timed in the agent's seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from street import Street, document, street

from edge.equipment.sim.bollard import PinChange, SimulatedBollard
from protos.ondijon.v1 import link_pb2, schedule_pb2, state_pb2

PARIS = ZoneInfo("Europe/Paris")
CLOSING = datetime(2026, 6, 21, 22, 0, tzinfo=PARIS)
# The reference cabinet wiring (BollardConfig's defaults): switches to ground with pull-ups,
# the loop a normally-closed contact, so the loop pin reads high when occupied (or cut).
MOTOR_UP, MOTOR_DOWN, WARNING_LIGHT, LOOP = "GPIO17", "GPIO27", "GPIO22", "GPIO13"

BOLLARD = """
[[bollards]]
id = "rue-des-forges"
backend = "simulated"
"""

SCHEDULE = document(
    link_pb2.DOCUMENT_KIND_SCHEDULE,
    schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="pedestrian-street",
                points=[
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
        rules=[schedule_pb2.CalendarRule(program_id="pedestrian-street", priority=1)],
    ),
)


def rising_edges(history: list[PinChange], pin: str) -> list[datetime]:
    """When ``pin`` went high, in order."""
    return [c.at for c in history if c.pin == pin and c.state]


def assert_never_rises_onto_the_loop(history: list[PinChange]) -> None:
    """Replay every pin change: the up motor never starts with a car on the loop, and a
    car arriving while it runs stops it at the same instant."""
    levels: dict[str, bool] = {MOTOR_UP: False, LOOP: False}
    for i, change in enumerate(history):
        levels[change.pin] = bool(change.state)
        occupied = levels[LOOP]
        if change.pin == MOTOR_UP and change.state:
            assert not occupied, f"up motor started with the loop occupied at {change.at}"
        if change.pin == LOOP and occupied and levels[MOTOR_UP]:
            stop = next(c for c in history[i:] if c.pin == MOTOR_UP)
            assert (stop.state, stop.at) == (False, change.at), "rise not reversed at once"


async def wait_for_the_post(bench: Street, sim: SimulatedBollard, height: float) -> None:
    """Run in 0.1 s steps until the post is at least ``height`` up."""
    for _ in range(200):
        if sim.position >= height:
            return
        await bench.run_for(0.1, step_s=0.1)
    raise AssertionError(f"the post never reached {height}")


async def test_warning_light_precedes_the_rise_which_waits_for_the_loop(tmp_path: Path) -> None:
    start = CLOSING - timedelta(minutes=1)
    async with street(tmp_path, start=start, equipment=BOLLARD, documents=[SCHEDULE]) as bench:
        sim = bench.bollard()
        await bench.run_for(30)
        sim.car_arrives()  # a late delivery van parks on the loop before closing time
        await bench.run_until(CLOSING + timedelta(seconds=20), step_s=0.1)
        # Wanted up since 22:00, yet nothing moved and the light stayed off meanwhile.
        assert sim.position == 0.0
        assert rising_edges(sim.factory.history, MOTOR_UP) == []
        assert rising_edges(sim.factory.history, WARNING_LIGHT) == []

        light, motor = sim.pins["warning_light_pin"], sim.pins["motor_up_pin"]
        light.clear_states()
        motor.clear_states()
        sim.car_leaves()
        await bench.run_for(6, step_s=0.1)

        # Light on as the van leaves; the motor 1 s later (the configured warning_s); the
        # post is up 3 s after that and the motor stops; the light goes off with it.
        assert sim.read().up_limit
        light.assert_states_and_times([(0, False), (0, True), (4.0, False)])
        motor.assert_states_and_times([(0, False), (1.0, True), (3.0, False)])
        lit_at = rising_edges(sim.factory.history, WARNING_LIGHT)[0]
        started_at = rising_edges(sim.factory.history, MOTOR_UP)[0]
        assert started_at - lit_at >= timedelta(seconds=1)
        assert_never_rises_onto_the_loop(sim.factory.history)
        assert bench.agent.bollards[0].state().bollard.motion == state_pb2.BOLLARD_MOTION_UP


async def test_a_car_on_the_loop_during_the_rise_reverses_it(tmp_path: Path) -> None:
    start = CLOSING - timedelta(seconds=5)
    async with street(tmp_path, start=start, equipment=BOLLARD, documents=[SCHEDULE]) as bench:
        sim = bench.bollard()
        await bench.run_until(CLOSING, step_s=0.1)
        await wait_for_the_post(bench, sim, 0.3)
        arrived = bench.clock.now()
        sim.car_arrives()  # a scooter cuts in as the post rises
        await bench.run_for(10, step_s=0.1)

        # Reversed the instant the loop saw it, and it stays down while the scooter stands.
        assert_never_rises_onto_the_loop(sim.factory.history)
        assert rising_edges(sim.factory.history, MOTOR_DOWN) == [arrived]
        assert sim.read().down_limit
        assert len(rising_edges(sim.factory.history, MOTOR_UP)) == 1
        reversals = bench.events("reversed")
        assert [(e.device_id, e.attributes["cause"]) for e in reversals] == [
            ("rue-des-forges", "loop_occupied")
        ]
