"""The bollard's findings of the safety review (issue 9, items 3 to 7), each on the pins.

Every test runs the real controller on the simulated bollard's clocked mock pins, on a
manual clock whose wall reading a test can step both ways while durations run on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.equipment.bollard.controller import BollardConfig, BollardController, BollardFailure
from edge.equipment.bollard.latches import UNREADABLE, LatchFile
from edge.equipment.bollard.rules import Access, BollardTarget, Latches, Phase, Position
from edge.equipment.sim.bollard import SimulatedBollard
from edge.events import EquipmentConfigError, EquipmentEvent, Priority
from foundation.clock import ManualClock
from protos.ondijon.v1 import state_pb2

T0 = datetime(2026, 9, 14, 7, 0, tzinfo=UTC)
UP_CLOSED = BollardTarget(Position.UP, Access.CLOSED)
HOUR = 3600.0


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


class Cabinet:
    """One simulated bollard and its controller, restartable on the same latch file."""

    def __init__(self, config: BollardConfig, latch_path: Path, **sim: float) -> None:
        self.clock = ManualClock(T0)
        self.config = config
        self.latch_path = latch_path
        self.sim = SimulatedBollard(config, self.clock, **sim)  # type: ignore[arg-type]
        self.events: list[EquipmentEvent] = []
        self.task: asyncio.Task[None] | None = None
        self.controller = self._controller()

    def _controller(self) -> BollardController:
        return BollardController(
            config=self.config,
            driver=self.sim,
            clock=self.clock,
            sink=self.events.append,
            latches=LatchFile(self.latch_path),
        )

    async def start(self) -> None:
        self.task = asyncio.create_task(self.controller.run())
        await settle()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def restart(self) -> None:
        """The agent restarts: a new controller on the same pins and the same latch file."""
        await self.stop()
        self.controller = self._controller()
        await self.start()

    async def run_for(self, seconds: float, tick: float = 0.05) -> None:
        await settle()
        for _ in range(round(seconds / tick)):
            self.clock.advance(tick)
            await settle()

    def motor_up_on_spans(self) -> list[float]:
        """How long (monotonic seconds) each energising of the up motor lasted."""
        name = self.sim.pins["motor_up_pin"].info.name
        spans, since = [], None
        for change in self.sim.factory.history:
            if change.pin != name:
                continue
            if change.state:
                since = change.mono
            elif since is not None:
                spans.append(round(change.mono - since, 3))
                since = None
        if since is not None:
            spans.append(round(self.clock.monotonic() - since, 3))
        return spans

    def rises(self) -> int:
        name = self.sim.pins["motor_up_pin"].info.name
        return sum(1 for c in self.sim.factory.history if c.pin == name and c.state)

    def alarms(self) -> list[EquipmentEvent]:
        return [e for e in self.events if e.priority is Priority.ALARM]


@pytest.fixture
async def cabinet(tmp_path: Path) -> AsyncIterator[Cabinet]:
    site = Cabinet(BollardConfig(device_id="bollard-darcy-1", backend="simulated"), tmp_path / "l")
    await site.start()
    yield site
    await site.stop()
    site.sim.close()


# -- item 3: latches survive a restart -----------------------------------------------------------


async def test_a_lockout_survives_a_restart_and_only_a_reset_clears_it(cabinet: Cabinet) -> None:
    cabinet.sim.place_obstacle(height=0.3)
    cabinet.controller.apply(UP_CLOSED)
    await cabinet.run_for(30)
    assert cabinet.rises() == 3
    assert cabinet.controller.latches == Latches(reversals=3, locked_out=True)
    for _ in range(3):  # restart after restart, the obstacle still there
        await cabinet.restart()
        cabinet.controller.apply(UP_CLOSED)
        await cabinet.run_for(30)
    assert cabinet.rises() == 3, "a restart cleared the lockout: the post rose into the car"
    assert cabinet.controller.state().bollard.faults == ["reversal_lockout"]
    cabinet.sim.remove_obstacle()
    cabinet.controller.reset()
    await cabinet.run_for(10)
    assert cabinet.sim.read().up_limit
    assert json.loads(cabinet.latch_path.read_text())["bollard-darcy-1"]["locked_out"] is False


async def test_a_fault_survives_a_restart_the_post_stays_put(cabinet: Cabinet) -> None:
    cabinet.sim.jam()
    cabinet.controller.apply(UP_CLOSED)
    await cabinet.run_for(12)
    assert cabinet.controller.phase is Phase.FAULT
    cabinet.sim.jam(False)
    await cabinet.restart()
    cabinet.controller.apply(UP_CLOSED)
    await cabinet.run_for(12)
    assert cabinet.controller.phase is Phase.FAULT
    assert cabinet.rises() == 1
    assert cabinet.controller.state().bollard.motion == state_pb2.BOLLARD_MOTION_FAULT


async def test_unreadable_latches_start_every_bollard_latched(tmp_path: Path) -> None:
    path = tmp_path / "latches.json"
    path.write_bytes(b'{"bollard-darcy-1": {"reversals": 3, "locked_')  # torn by a bad card
    store = LatchFile(path)
    assert store.load("bollard-darcy-1").faults == (UNREADABLE,)
    assert store.load("another").faults == (UNREADABLE,)
    store.save("another", Latches())  # that one was reset on site
    again = LatchFile(path)  # and a restart keeps both verdicts
    assert again.load("bollard-darcy-1").faults == (UNREADABLE,)
    assert again.load("another") == Latches()
    assert (tmp_path / "latches.json.corrupt").exists()


# -- item 4: safety durations on the monotonic clock -------------------------------------------


async def test_a_wall_clock_step_back_does_not_keep_the_up_motor_on(cabinet: Cabinet) -> None:
    cabinet.sim.jam()
    cabinet.controller.apply(UP_CLOSED)
    await cabinet.run_for(2)  # warning, then the up motor runs into a jammed post
    cabinet.clock.step_wall(-HOUR)
    await cabinet.run_for(10)
    assert cabinet.motor_up_on_spans() == [pytest.approx(8.0, abs=0.06)]  # travel timeout
    assert cabinet.controller.phase is Phase.FAULT
    assert [a.attributes.get("fault") for a in cabinet.alarms()] == ["rise_timeout"]


async def test_a_wall_clock_step_forward_does_not_cut_the_warning(cabinet: Cabinet) -> None:
    cabinet.controller.apply(UP_CLOSED)
    await cabinet.run_for(0.2)
    cabinet.clock.step_wall(+HOUR)
    await cabinet.run_for(5)
    light = cabinet.sim.pins["warning_light_pin"]
    motor = cabinet.sim.pins["motor_up_pin"]
    light_on = next(c.mono for c in cabinet.sim.factory.history if c.pin == light.info.name)
    motor_on = next(
        c.mono for c in cabinet.sim.factory.history if c.pin == motor.info.name and c.state
    )
    assert motor_on - light_on >= cabinet.config.warning_s


# -- item 5: a failing read stops the motor and the controller, loudly --------------------------


async def test_a_read_that_raises_during_a_rise_switches_the_motor_off_at_once(
    cabinet: Cabinet,
) -> None:
    cabinet.controller.apply(UP_CLOSED)
    await cabinet.run_for(1.5)
    assert cabinet.sim.pins["motor_up_pin"].state
    cabinet.sim.fail_reads(OSError("i2c expander: remote I/O error"))
    cabinet.sim.car_arrives()  # the pin changes, the callback's read raises
    await settle()
    assert not cabinet.sim.pins["motor_up_pin"].state
    assert not cabinet.sim.pins["motor_down_pin"].state
    assert cabinet.task is not None
    with pytest.raises(BollardFailure, match="bollard-darcy-1: OSError: i2c expander"):
        await asyncio.wait_for(cabinet.task, 1)
    cabinet.task = None
    assert cabinet.controller.state().bollard.faults == ["controller_failed"]


# -- item 6: a cut wire reads as the unsafe condition --------------------------------------------


async def test_a_cut_loop_wire_reads_occupied_and_reverses_the_rise(cabinet: Cabinet) -> None:
    cabinet.controller.apply(UP_CLOSED)
    await cabinet.run_for(1.5)
    assert cabinet.sim.pins["motor_up_pin"].state
    cabinet.sim.cut_wire("loop_pin")
    await settle()
    assert not cabinet.sim.pins["motor_up_pin"].state
    assert cabinet.controller.state().bollard.loop_occupied
    await cabinet.run_for(30)
    assert cabinet.rises() == 1  # never again while the wire is cut


@pytest.mark.parametrize("wire", ["edge_pin", "emergency_pin"])
async def test_a_cut_edge_or_emergency_wire_keeps_the_bollard_down(
    cabinet: Cabinet, wire: str
) -> None:
    cabinet.sim.cut_wire(wire)
    cabinet.controller.apply(UP_CLOSED)
    await cabinet.run_for(10)
    assert cabinet.rises() == 0


async def test_a_loop_detector_fault_is_an_alarm_and_blocks_the_rise(tmp_path: Path) -> None:
    config = BollardConfig(device_id="b", backend="simulated", loop_fault_pin=20)
    site = Cabinet(config, tmp_path / "latches.json")
    await site.start()
    try:
        site.sim.detector_fault()
        site.controller.apply(UP_CLOSED)
        await site.run_for(10)
        assert site.rises() == 0
        assert [a.attributes["fault"] for a in site.alarms()] == ["loop_detector"]
        site.sim.detector_fault(False)
        await site.run_for(10)
        assert site.sim.read().up_limit
    finally:
        await site.stop()
        site.sim.close()


def test_fail_unsafe_safety_contacts_are_refused_unless_supervised() -> None:
    entry = {"id": "b", "backend": "simulated", "safety_contacts": "normally_open"}
    with pytest.raises(EquipmentConfigError) as refused:
        BollardConfig.from_mapping(entry, "bollards[0]")
    assert refused.value.field == "bollards[0].safety_contacts"
    assert "supervised_wiring" in refused.value.reason
    accepted = BollardConfig.from_mapping({**entry, "supervised_wiring": True}, "bollards[0]")
    assert accepted.safety_contacts == "normally_open"
    assert BollardConfig.from_mapping({"id": "b", "backend": "simulated"}, "x").safety_contacts == (
        "normally_closed"
    )


# -- item 7: a stuck limit switch is a contradiction, never DOWN ---------------------------------


async def test_a_down_switch_stuck_mid_travel_is_a_fault_not_down(tmp_path: Path) -> None:
    config = BollardConfig(device_id="b", backend="simulated")
    site = Cabinet(config, tmp_path / "latches.json", start_up=True)
    await site.start()
    try:
        # Found up at start; the default target (down, open) lowers it at once.
        assert site.controller.phase is Phase.LOWERING
        await site.run_for(0.5)  # a quarter of the way down: the post at 75 %
        site.sim.stick_limit_switch("down", True)
        await settle()
        assert site.controller.phase is Phase.FAULT
        assert site.sim.position == pytest.approx(0.75, abs=0.05)
        assert site.controller.state().bollard.motion == state_pb2.BOLLARD_MOTION_FAULT
        assert [a.attributes["fault"] for a in site.alarms()] == ["position_contradiction"]
        assert not site.sim.pins["motor_down_pin"].state
    finally:
        await site.stop()
        site.sim.close()


async def test_a_rest_switch_that_lets_go_is_a_fault(cabinet: Cabinet) -> None:
    assert cabinet.controller.phase is Phase.DOWN
    cabinet.sim.stick_limit_switch("down", False)  # the switch breaks open
    await settle()
    assert cabinet.controller.phase is Phase.FAULT
    assert [a.attributes["fault"] for a in cabinet.alarms()] == ["position_lost"]
