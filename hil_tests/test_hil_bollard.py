"""A retractable bollard on the bench: warning before rising, never onto a car.

The agent runs the inventory's bollard from a schedule (a pedestrian street closed from
22:00) on its gpio backend, on the bench's mock pins, with the post's motors, limit
switches and vehicle loop played behind them (:class:`~edge.equipment.sim.bollard.
BollardPost`). The bench drives cars onto the loop and checks the motor and warning-light
*pins*, timed in the agent's seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from street import Street, document, street

from edge.bench.inventory import Inventory
from edge.bench.report import Record
from edge.equipment.sim.bollard import BollardPost, PinChange
from protos.ondijon.v1 import link_pb2, schedule_pb2, state_pb2

PARIS = ZoneInfo("Europe/Paris")
CLOSING = datetime(2026, 6, 21, 22, 0, tzinfo=PARIS)


@dataclass(frozen=True)
class Lines:
    """The bollard's pins, from the inventory (switches to ground with pull-ups, the loop a
    normally-closed contact: its pin reads high when occupied, or cut)."""

    motor_up: str
    motor_down: str
    warning_light: str
    loop: str

    @classmethod
    def of(cls, inventory: Inventory) -> Lines:
        bollard = f"bollards.{inventory.bollards[0].id}"
        keys = ("motor_up", "motor_down", "warning_light", "loop")
        return cls(*(inventory.pin(f"{bollard}.{k}") for k in keys))


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


def assert_never_rises_onto_the_loop(history: list[PinChange], lines: Lines) -> None:
    """Replay every pin change: the up motor never starts with a car on the loop, and a
    car arriving while it runs stops it at the same instant."""
    up, loop = lines.motor_up, lines.loop
    levels: dict[str, bool] = {up: False, loop: False}
    for i, change in enumerate(history):
        levels[change.pin] = bool(change.state)
        occupied = levels[loop]
        if change.pin == up and change.state:
            assert not occupied, f"up motor started with the loop occupied at {change.at}"
        if change.pin == loop and occupied and levels[up]:
            stop = next(c for c in history[i:] if c.pin == up)
            assert (stop.state, stop.at) == (False, change.at), "rise not reversed at once"


async def wait_for_the_post(bench: Street, sim: BollardPost, height: float) -> None:
    """Run in 0.1 s steps until the post is at least ``height`` up."""
    for _ in range(200):
        if sim.position >= height:
            return
        await bench.run_for(0.1, step_s=0.1)
    raise AssertionError(f"the post never reached {height}")


async def test_warning_light_precedes_the_rise_which_waits_for_the_loop(
    tmp_path: Path, sim_bench: Inventory, record: Record
) -> None:
    """A van on the loop holds the rise; the light comes on at least 1 s before the motor."""
    start = CLOSING - timedelta(minutes=1)
    lines = Lines.of(sim_bench)
    device = sim_bench.bollards[0].id
    async with street(
        tmp_path, sim_bench, start=start, kinds=["bollards"], documents=[SCHEDULE], record=record
    ) as bench:
        sim = bench.bollard()
        await bench.run_for(30)
        bench.inject("car_on_loop", device)  # a late delivery van parks on the loop
        await bench.run_until(CLOSING + timedelta(seconds=20), step_s=0.1)
        # Wanted up since 22:00, yet nothing moved and the light stayed off meanwhile.
        assert sim.position == 0.0
        assert rising_edges(sim.factory.history, lines.motor_up) == []
        assert rising_edges(sim.factory.history, lines.warning_light) == []

        light, motor = sim.pins["warning_light_pin"], sim.pins["motor_up_pin"]
        light.clear_states()
        motor.clear_states()
        sim.car_leaves()
        await bench.run_for(6, step_s=0.1)

        # Light on as the van leaves; the motor 1 s later (the configured warning_s); the
        # post is up 3 s after that and the motor stops; the light goes off with it.
        assert sim.position >= 0.99
        assert bench.pin(f"bollards.{device}.up_limit").state is False  # closed, to ground
        light.assert_states_and_times([(0, False), (0, True), (4.0, False)])
        motor.assert_states_and_times([(0, False), (1.0, True), (3.0, False)])
        lit_at = rising_edges(sim.factory.history, lines.warning_light)[0]
        started_at = rising_edges(sim.factory.history, lines.motor_up)[0]
        bench.measure(
            "warning_before_rise_s",
            (started_at - lit_at).total_seconds(),
            unit="s",
            low=1.0,
            description="warning light on before the up motor starts",
        )
        assert_never_rises_onto_the_loop(sim.factory.history, lines)
        assert bench.agent.bollards[0].state().bollard.motion == state_pb2.BOLLARD_MOTION_UP


async def test_a_car_on_the_loop_during_the_rise_reverses_it(
    tmp_path: Path, sim_bench: Inventory, record: Record
) -> None:
    """A scooter on the loop mid-rise: the post reverses at once and stays down."""
    start = CLOSING - timedelta(seconds=5)
    lines = Lines.of(sim_bench)
    device = sim_bench.bollards[0].id
    async with street(
        tmp_path, sim_bench, start=start, kinds=["bollards"], documents=[SCHEDULE], record=record
    ) as bench:
        sim = bench.bollard()
        await bench.run_until(CLOSING, step_s=0.1)
        await wait_for_the_post(bench, sim, 0.3)
        arrived = bench.inject("car_on_loop", device)  # a scooter cuts in as the post rises
        await bench.run_for(10, step_s=0.1)

        # Reversed the instant the loop saw it, and it stays down while the scooter stands.
        assert_never_rises_onto_the_loop(sim.factory.history, lines)
        reversed_at = rising_edges(sim.factory.history, lines.motor_down)
        assert reversed_at == [arrived]
        bench.measure("reversal_delay_s", (reversed_at[0] - arrived).total_seconds(), unit="s",
                      low=0.0, high=0.0)  # fmt: skip
        assert sim.position <= 0.01
        assert bench.pin(f"bollards.{device}.down_limit").state is False  # closed
        assert len(rising_edges(sim.factory.history, lines.motor_up)) == 1
        reversals = bench.events("reversed")
        assert [(e.device_id, e.attributes["cause"]) for e in reversals] == [
            (device, "loop_occupied")
        ]
