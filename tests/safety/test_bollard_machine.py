"""Random interleavings against a real bollard controller on gpiozero mock pins.

The controller runs on the simulated bollard (the real gpiozero backend on clocked mock
pins, a post that moves while its motor pin is high) under a manual clock. Hypothesis
interleaves schedule targets, operator modes and resets, badges, cars on the loop (also
flapping), obstacles, the emergency key, stuck limit switches, a jammed post, cut safety
wires, a faulty loop detector, inputs whose reads raise, time passing, wall-clock steps
both ways and agent restarts. After every step, and every 50 ms while time passes, the
invariants are checked on the pins:

- the two motor outputs are never high together;
- the up motor is never high while the loop, the pressure edge, the emergency key or the
  loop detector's fault reads active (a cut wire reads active);
- the up motor is never high longer than the travel timeout (monotonic seconds);
- the warning light was on for the whole warning time before every start of the up motor;
- once a lockout or a fault is latched, the up motor does not start until a reset, across
  any number of restarts;
- the controller never says DOWN while the post is above its down switch (unless that
  switch is stuck closed, which the rules cannot see at rest).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from domain.access import Grant, LocalAccessList, credential_digest
from edge.equipment.bollard.controller import BollardConfig, BollardController
from edge.equipment.bollard.latches import LatchFile
from edge.equipment.bollard.rules import Access, BollardTarget, Mode, Phase, Position
from edge.equipment.sim.bollard import SWITCH_TRAVEL, SimulatedBollard
from foundation.clock import ManualClock
from tests.safety.conftest import TIMEOUT_S, explore, tally
from tests.safety.machines import START, drain

TICK = 0.05
BADGE = "livreur-7"
TARGETS = [BollardTarget(p, a) for p in Position for a in Access]
SAFETY_WIRES = ("loop_pin", "edge_pin", "emergency_pin", "loop_fault_pin")


class BollardMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.TemporaryDirectory()
        self.clock = ManualClock(START)
        # One reversal locks it out: latched states come up often in a short search.
        self.config = BollardConfig(
            device_id="b", backend="simulated", loop_fault_pin=20, reset_pin=21, max_reversals=1
        )
        self.sim = SimulatedBollard(self.config, self.clock)
        self.latch_path = Path(self.dir.name) / "latches.json"
        self.access = LocalAccessList([Grant(credential_digest(BADGE), "livraisons")])
        self.stuck: dict[str, bool | None] = {"up": None, "down": None}
        self.latched_from: int | None = None  # history index since which a latch holds
        self.checked = 0  # history entries already checked
        self.warning_on_at: float | None = None
        self.up_on_at: float | None = None
        self.task: asyncio.Task[None] | None = None
        self.controller = self._start()

    # -- harness ---------------------------------------------------------------------------

    def _start(self) -> BollardController:
        controller = BollardController(
            config=self.config,
            driver=self.sim,
            clock=self.clock,
            sink=lambda event: None,
            access_list=self.access,
            latches=LatchFile(self.latch_path),
        )
        self.task = self.loop.create_task(controller.run())
        return controller

    def settle(self) -> None:
        drain(self.loop)
        if self.task is not None and self.task.done():
            # What the agent's supervisor does: the controller (motors already off) is
            # started again; here at once, which is harsher than its backoff.
            self.task.exception() if not self.task.cancelled() else None
            self.controller = self._start()
            drain(self.loop)
        self.check()

    def teardown(self) -> None:
        if self.task is not None:
            self.task.cancel()
            drain(self.loop)
        self.sim.close()
        self.loop.close()
        self.dir.cleanup()

    # -- the pins --------------------------------------------------------------------------

    def check(self) -> None:
        pins = self.sim.pins
        up, down = pins["motor_up_pin"].state, pins["motor_down_pin"].state
        assert not (up and down), "both motors on"
        assert not self.sim.both_motors_seen
        if up:
            seen = self.sim._gpio.read()  # what the inputs say, read errors aside
            assert not seen.loop_occupied, "up motor with the loop occupied (or its wire cut)"
            assert not seen.obstruction, "up motor with the pressure edge pressed"
            assert not seen.emergency, "up motor with the emergency key turned"
            assert not seen.loop_fault, "up motor with the loop detector in fault"
        history = self.sim.factory.history
        names = {pins[n].info.name: n for n in ("motor_up_pin", "warning_light_pin")}
        for change in history[self.checked :]:
            which = names.get(change.pin)
            if which == "warning_light_pin":
                self.warning_on_at = change.mono if change.state else None
            elif which == "motor_up_pin" and change.state:
                assert self.warning_on_at is not None, "up motor without the warning light"
                warned = change.mono - self.warning_on_at
                assert warned >= self.config.warning_s - 1e-6, f"warning of {warned:.3f} s"
                assert self.latched_from is None, "rose while latched, with no reset"
                self.up_on_at = change.mono
            elif which == "motor_up_pin":
                self.up_on_at = None
        self.checked = len(history)
        if self.up_on_at is not None:
            running = self.clock.monotonic() - self.up_on_at
            assert running <= self.config.travel_timeout_s + TICK + 1e-6, f"up motor {running} s"
        if self.controller.latches.latched and self.latched_from is None:
            self.latched_from = len(history)
        if self.controller.phase is Phase.DOWN and self.stuck["down"] is not True:
            assert self.sim.position <= SWITCH_TRAVEL + 1e-6, (
                f"reports DOWN with the post at {self.sim.position:.0%}"
            )

    @invariant()
    def count(self) -> None:
        tally("bollard").steps += 1

    # -- commands ---------------------------------------------------------------------------

    @rule(wanted=st.sampled_from(TARGETS))
    def schedule(self, wanted: BollardTarget) -> None:
        self.controller.apply(wanted, "program:random")
        self.settle()

    @rule(mode=st.sampled_from(Mode))
    def operator_mode(self, mode: Mode) -> None:
        self.controller.set_mode(mode)
        self.settle()

    @rule()
    def operator_reset(self) -> None:
        self.controller.reset()
        self.latched_from = None
        self.settle()

    @rule(badge=st.sampled_from([BADGE, "stranger"]))
    def badge(self, badge: str) -> None:
        self.controller.present(badge)
        self.settle()

    # -- the street and its faults ---------------------------------------------------------

    @rule(present=st.booleans())
    def car(self, present: bool) -> None:
        (self.sim.car_arrives if present else self.sim.car_leaves)()
        self.settle()

    @rule(times=st.integers(2, 8))
    def flapping_loop(self, times: int) -> None:
        for i in range(times):
            (self.sim.car_arrives if i % 2 == 0 else self.sim.car_leaves)()
            self.settle()
            self.clock.advance(TICK)
            self.settle()

    @rule(height=st.none() | st.floats(0.05, 0.95))
    def obstacle(self, height: float | None) -> None:
        if height is None:
            self.sim.remove_obstacle()
        else:
            self.sim.place_obstacle(height)
        self.settle()

    @rule(on=st.booleans())
    def emergency_key(self, on: bool) -> None:
        self.sim.turn_emergency_key(on)
        self.settle()

    @rule(which=st.sampled_from(["up", "down"]), state=st.sampled_from([True, False, None]))
    def stuck_switch(self, which: str, state: bool | None) -> None:
        self.stuck[which] = state
        self.sim.stick_limit_switch(which, state)
        self.settle()

    @rule(jammed=st.booleans())
    def jam(self, jammed: bool) -> None:
        self.sim.jam(jammed)
        self.settle()

    @rule(wire=st.sampled_from(SAFETY_WIRES), cut=st.booleans())
    def cut_wire(self, wire: str, cut: bool) -> None:
        self.sim.cut_wire(wire, cut)
        self.settle()

    @rule(faulty=st.booleans())
    def loop_detector(self, faulty: bool) -> None:
        self.sim.detector_fault(faulty)
        self.settle()

    @rule(failing=st.booleans())
    def raising_reads(self, failing: bool) -> None:
        self.sim.fail_reads(OSError("remote I/O error") if failing else None)
        self.settle()

    # -- time and restarts -------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.0, 3.5, 9.0]))
    def wait(self, seconds: float) -> None:
        for _ in range(round(seconds / TICK)):
            self.clock.advance(TICK)
            self.settle()

    @rule(seconds=st.sampled_from([0.3, 1.0, 5.0, 20.0]), obstacle=st.booleans())
    def insist_up(self, seconds: float, obstacle: bool) -> None:
        """An operator holds it up (with an obstacle on the post, or not) and waits: the
        shortest way to reversals, lockouts, travel timeouts."""
        if obstacle:
            self.sim.place_obstacle(0.4)
        self.controller.set_mode(Mode.HELD_UP)
        self.settle()
        self.wait(seconds)

    @rule(seconds=st.floats(-3 * 86400, 3 * 86400))
    def wall_step(self, seconds: float) -> None:
        self.clock.step_wall(seconds)
        self.settle()

    @rule(
        seconds=st.sampled_from([-86400.0, -3600.0, -30.0, 0.5, 30.0, 3600.0, 86400.0]),
        poke=st.sampled_from(["badge", "flap", "target", "mode"]),
    )
    def wall_step_then_input(self, seconds: float, poke: str) -> None:
        """A wall-clock step, and something happens before the next timer: the case where
        a controller reading the wall clock would skip or stretch a duration."""
        self.clock.step_wall(seconds)
        self.settle()
        if poke == "badge":
            self.controller.present("stranger")
        elif poke == "flap":
            self.sim.car_arrives()
            self.sim.car_leaves()
        elif poke == "target":
            self.controller.apply(BollardTarget(Position.UP, Access.CLOSED))
        else:
            self.controller.set_mode(Mode.HELD_UP)
        self.settle()

    @precondition(lambda self: self.task is not None)
    @rule()
    def restart(self) -> None:
        assert self.task is not None
        self.task.cancel()
        drain(self.loop)
        self.controller = self._start()
        self.settle()


@pytest.mark.timeout(TIMEOUT_S)
def test_bollard_safety_under_random_interleavings() -> None:
    explore("bollard", lambda: BollardMachine, examples=120, steps=40)
