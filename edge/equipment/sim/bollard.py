"""A simulated bollard on gpiozero mock pins: a first-class backend for the demo and integrators.

:class:`SimulatedBollard` runs the real :class:`~edge.equipment.bollard.controller.GpioBollard` on a
:class:`ClockedMockFactory` and plays the physics behind the pins (:class:`BollardPost`,
which a bench attaches to its own shared mock pins as well): the post travels up in
``rise_s`` and down in ``lower_s`` while its motor pin is high, the limit switches close in
the last 1 % of travel at each end, a car can drive onto the vehicle loop, and an obstacle
placed above the post presses the pressure edge when the crown reaches it. Faults can be
injected: a jammed post, a stuck limit switch, a cut input wire, a loop detector in fault,
a sensor read that raises. The input pins follow the configured wiring (pull-up or
pull-down, normally-closed safety contacts), so a cut wire reads on the pins exactly as it
would in a cabinet. Everything runs on the injected clock, so a test or a demo at 60x never
sleeps for real.

gpiozero's mock pins timestamp their ``states`` with the machine's monotonic time;
:class:`ClockedMockPin` uses the injected clock's monotonic reading instead, so
``pin.states`` and ``pin.assert_states_and_times`` speak simulated seconds (and a wall-clock
step does not bend them), and :attr:`ClockedMockFactory.history` keeps every pin change of
the factory in order.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from gpiozero.pins.mock import MockFactory, MockPin, PinState
from gpiozero.pins.pi import PiBoardInfo

from edge.equipment.bollard.config import (
    INPUT_PINS,
    OPTIONAL_INPUT_PINS,
    OUTPUT_PINS,
    BollardConfig,
)
from edge.equipment.bollard.controller import BollardReadings, GpioBollard
from edge.equipment.bollard.rules import BollardError, BollardOutputs
from foundation.clock import Clock

#: Fraction of the travel over which each limit switch is closed.
SWITCH_TRAVEL = 0.01


class PinChange(NamedTuple):
    """One change of one mock pin, on the injected clock (wall and monotonic readings)."""

    at: datetime
    pin: str
    state: bool
    mono: float = 0.0


class ClockedMockPin(MockPin):  # type: ignore[misc]
    """A gpiozero mock pin whose state history is timed by the factory's clock."""

    _state: bool
    _last_change: float

    def __init__(self, factory: ClockedMockFactory, info: Any) -> None:
        #: Called with the new state after every change (the simulator listens to motors).
        self.watchers: list[Callable[[bool], None]] = []
        super().__init__(factory, info)

    def clear_states(self) -> None:
        self._last_change = self._factory.ticks()
        self.states = [PinState(0.0, self._state)]

    def _change_state(self, value: bool) -> bool:
        if self._state == value:
            return False
        now = self._factory.ticks()
        self._state = value
        self.states.append(PinState(now - self._last_change, value))
        self._last_change = now
        clock = self._factory.clock
        self._factory.history.append(
            PinChange(clock.now(), self.info.name, value, clock.monotonic())
        )
        for watcher in list(self.watchers):
            watcher(value)
        return True


class ClockedMockFactory(MockFactory):  # type: ignore[misc]
    """A gpiozero mock pin factory whose ticks are seconds of an injected clock."""

    _info: PiBoardInfo | None
    _revision: int

    def __init__(self, clock: Clock, revision: str | None = None) -> None:
        super().__init__(revision=revision, pin_class=ClockedMockPin)
        self.clock = clock
        self._epoch = clock.monotonic()
        #: Every pin change of this factory, in order.
        self.history: list[PinChange] = []

    def ticks(self) -> float:
        return self.clock.monotonic() - self._epoch

    def _get_board_info(self) -> PiBoardInfo:
        # Each simulated device has a factory of its own (its pins are its own), and gpiozero
        # builds the description of the board, every header and pin, once per factory: ~40 KB,
        # most of a simulated lamp. The description is immutable: one per revision is shared.
        if self._info is None:
            self._info = _board_info(self._revision)
        return self._info


@functools.cache
def _board_info(revision: int) -> PiBoardInfo:
    return PiBoardInfo.from_revision(revision)


class BollardPost:
    """The street behind a bollard's pins: the post, its switches, loop, edge and key.

    It attaches to the pins of ``factory`` that ``config`` names, whoever drives them: the
    simulated backend's own gpio driver (:class:`SimulatedBollard`), or the agent's gpio
    driver on a bench's shared mock pins (:mod:`edge.bench.street`). It watches the motor
    outputs and drives the inputs as the wired contacts would. Position runs from 0 (flush
    with the road) to 1 (fully up).
    """

    def __init__(
        self,
        config: BollardConfig,
        clock: Clock,
        factory: ClockedMockFactory,
        *,
        rise_s: float | None = None,
        lower_s: float | None = None,
        start_up: bool = False,
        start_at: float | None = None,
    ) -> None:
        """Play the bollard of ``config`` on ``factory`` (its nominal travel times unless given)."""
        rise_s = config.rise_s if rise_s is None else rise_s
        lower_s = config.lower_s if lower_s is None else lower_s
        if rise_s <= 0 or lower_s <= 0:
            raise BollardError("rise_s, lower_s: must be positive")
        self._clock = clock
        self._config = config
        self._rise_s = rise_s
        self._lower_s = lower_s
        self.factory = factory
        names = OUTPUT_PINS + INPUT_PINS + OPTIONAL_INPUT_PINS
        self.pins: dict[str, ClockedMockPin] = {
            name: self.factory.pin(getattr(config, name))
            for name in names
            if getattr(config, name) is not None
        }
        self._pull_up = config.inputs_pull_up
        if start_at is not None:
            self._position = min(1.0, max(0.0, start_at))
        else:
            self._position = 1.0 if start_up else 0.0
        self._at = clock.now()
        self._car = False
        self._obstacle: float | None = None
        self._emergency = False
        self._jammed = False
        self._stuck: dict[str, bool] = {}
        self._cut: set[str] = set()
        self._detector_fault = False
        self._reset_key = False
        self._speed = 0.0
        self._changed = asyncio.Event()
        #: Set if the two motor pins were ever high together (the rules forbid it).
        self.both_motors_seen = False
        for name in ("motor_up_pin", "motor_down_pin"):
            self.pins[name].watchers.append(self._motor_changed)
        self._sync()

    def sync(self) -> None:
        """Drive every input again as the street has it (after a driver opened the pins:
        setting a pull resistor moves a mock input to its rail)."""
        self._set(lambda: None)

    async def run(self) -> None:
        """Move the post and flip the switches as time passes; runs until cancelled."""
        while True:
            self._changed.clear()
            self._sync()
            due = self._next_change()
            if due is None:
                await self._changed.wait()
                continue
            sleeper = asyncio.ensure_future(self._clock.sleep_until(due))
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                changed.cancel()

    # -- the street ------------------------------------------------------------------------------

    @property
    def position(self) -> float:
        """Height of the post now, 0 (down) to 1 (up)."""
        self._integrate()
        return self._position

    def car_arrives(self) -> None:
        """A vehicle drives onto the loop."""
        self._set(lambda: setattr(self, "_car", True))

    def car_leaves(self) -> None:
        """The vehicle drives off the loop."""
        self._set(lambda: setattr(self, "_car", False))

    def place_obstacle(self, height: float = 0.5) -> None:
        """Something above the post: the pressure edge closes when the crown reaches ``height``."""
        if not 0.05 <= height <= 0.95:
            raise BollardError("height: must be between 0.05 and 0.95 of the travel")
        self._set(lambda: setattr(self, "_obstacle", height))

    def remove_obstacle(self) -> None:
        """The obstacle is gone."""
        self._set(lambda: setattr(self, "_obstacle", None))

    def turn_emergency_key(self, active: bool) -> None:
        """The fire brigade's key switch."""
        self._set(lambda: setattr(self, "_emergency", active))

    def jam(self, jammed: bool = True) -> None:
        """The post stops moving although its motor runs (a travel-timeout fault)."""
        self._set(lambda: setattr(self, "_jammed", jammed))

    def stick_limit_switch(self, which: str, active: bool | None) -> None:
        """Force the ``"up"`` or ``"down"`` switch to ``active``; None releases it."""
        if which not in ("up", "down"):
            raise BollardError("which: must be 'up' or 'down'")

        def stick() -> None:
            if active is None:
                self._stuck.pop(which, None)
            else:
                self._stuck[which] = active

        self._set(stick)

    def cut_wire(self, name: str, cut: bool = True) -> None:
        """Cut (or mend) the wire of input ``name`` (e.g. ``"loop_pin"``): an open circuit."""
        if name not in self.pins or name in OUTPUT_PINS:
            raise BollardError(f"name: no input {name!r} on this bollard")

        def change() -> None:
            if cut:
                self._cut.add(name)
            else:
                self._cut.discard(name)

        self._set(change)

    def detector_fault(self, faulty: bool = True) -> None:
        """The loop detector reports a fault on its fault output (if wired)."""
        self._set(lambda: setattr(self, "_detector_fault", faulty))

    def turn_reset_key(self, on: bool) -> None:
        """The technician's reset key switch on site (if wired)."""
        self._set(lambda: setattr(self, "_reset_key", on))

    # -- physics ---------------------------------------------------------------------------------

    def _motor_speed(self) -> float:
        up = self.pins["motor_up_pin"].state
        down = self.pins["motor_down_pin"].state
        if self._jammed or up == down:
            return 0.0
        return 1.0 / self._rise_s if up else -1.0 / self._lower_s

    def _integrate(self) -> None:
        # With the speed held since the last change: call before anything that changes it.
        now = self._clock.now()
        moved = self._position + self._speed * (now - self._at).total_seconds()
        self._position = min(1.0, max(0.0, moved))
        self._at = now

    def _motor_changed(self, _state: bool) -> None:
        if self.pins["motor_up_pin"].state and self.pins["motor_down_pin"].state:
            self.both_motors_seen = True
        self._set(lambda: None)

    def _signature(self, position: float) -> tuple[bool, bool, bool]:
        edge = self._obstacle is not None and position >= self._obstacle
        return (position >= 1.0 - SWITCH_TRAVEL, position <= SWITCH_TRAVEL, edge)

    def _next_change(self) -> datetime | None:
        velocity = self._speed
        if velocity == 0.0:
            return None
        now_signature = self._signature(self._position)
        thresholds = [SWITCH_TRAVEL, 1.0 - SWITCH_TRAVEL]
        if self._obstacle is not None:
            thresholds.append(self._obstacle)
        waits = []
        for threshold in thresholds:
            if (threshold - self._position) * velocity < 0:
                continue
            beyond = min(1.0, max(0.0, threshold + math.copysign(1e-9, velocity)))
            if self._signature(beyond) != now_signature:
                waits.append((threshold - self._position) / velocity)
        if not waits:
            return None
        # One microsecond past the crossing, so the switch has flipped when we look.
        return self._at + timedelta(microseconds=math.ceil(min(waits) * 1e6) + 1)

    def _set(self, change: Callable[[], None]) -> None:
        self._integrate()
        change()
        self._speed = self._motor_speed()
        self._sync()
        self._changed.set()

    def _sync(self) -> None:
        self._integrate()
        up, down, edge = self._signature(self._position)
        inputs = {
            "up_limit_pin": self._stuck.get("up", up),
            "down_limit_pin": self._stuck.get("down", down),
            "loop_pin": self._car,
            "edge_pin": edge,
            "emergency_pin": self._emergency,
            "loop_fault_pin": self._detector_fault,
            "reset_pin": self._reset_key,
        }
        for name, active in inputs.items():
            pin = self.pins.get(name)
            if pin is None:
                continue
            closed = not active if self._config.normally_closed(name) else active
            if name in self._cut:
                closed = False
            # A closed contact pulls the pin to the other rail than its resistor does.
            if closed != self._pull_up:
                pin.drive_high()
            else:
                pin.drive_low()


class SimulatedBollard(BollardPost):
    """A bollard simulated on its own mock pins: the real
    :class:`~edge.equipment.bollard.controller.GpioBollard` on a :class:`ClockedMockFactory`,
    with the :class:`BollardPost` played behind the pins (a backend of the registry)."""

    def __init__(
        self,
        config: BollardConfig,
        clock: Clock,
        *,
        rise_s: float | None = None,
        lower_s: float | None = None,
        start_up: bool = False,
        start_at: float | None = None,
    ) -> None:
        """Simulate the bollard of ``config`` (its nominal travel times unless given)."""
        factory = ClockedMockFactory(clock)
        self._gpio = GpioBollard(config, pin_factory=factory)
        self._read_error: Exception | None = None
        try:
            super().__init__(
                config,
                clock,
                factory,
                rise_s=rise_s,
                lower_s=lower_s,
                start_up=start_up,
                start_at=start_at,
            )
        except BaseException:
            self._gpio.close()
            raise

    # -- the driver protocol, served by the real gpiozero backend --------------------------------

    def read(self) -> BollardReadings:
        if self._read_error is not None:
            raise self._read_error
        return self._gpio.read()

    def drive(self, outputs: BollardOutputs) -> None:
        self._gpio.drive(outputs)

    def on_change(self, callback: Callable[[], None]) -> None:
        self._gpio.on_change(callback)

    def close(self) -> None:
        self._gpio.close()

    def fail_reads(self, error: Exception | None) -> None:
        """Make every read of the inputs raise ``error`` (None: reads work again), as a
        failing input expander or a driver bug would."""
        self._read_error = error
