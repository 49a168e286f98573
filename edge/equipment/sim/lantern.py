"""A simulated street lamp: a first-class lamp backend for the bench, demos and tests.

Simulated the bollard's way: the real gpio driver on clocked mock pins, the lantern behind
the pins. It behaves like an LED lantern on a relay: power follows the dimming level (never
below the driver's minimum), ramps up over a short warm-up after the relay closes, and
reads zero when the relay is open. Failures are injected by the bench or a test while it
runs: a dead lamp, a relay stuck open or closed, a driver that ignores dimming. Time comes
from the injected clock, so a simulated night runs in milliseconds.

For the gpio backend on mock pins (the bench, integrators without a cabinet),
:class:`MockLantern` plays the lantern behind the pins: its current-sense input follows the
relay output like a real lamp's would, unless the lamp is dead; :func:`clocked_pwm_factory`
gives mock pins that take a dimming duty cycle and time their history on the injected clock.
"""

from __future__ import annotations

from datetime import datetime

from gpiozero.pins.mock import MockPWMPin

from edge.equipment.lamp.config import NORMALLY_CLOSED, NORMALLY_OPEN, RELAY_WIRINGS
from edge.equipment.lamp.controller import (
    LED_MIN_DIM_FRACTION,
    GpioLamp,
    LampDriverError,
    LampReading,
)
from edge.equipment.sim.bollard import ClockedMockFactory, ClockedMockPin
from foundation.clock import Clock


class SimulatedLamp:
    """A simulated LED lamp: the real :class:`~edge.equipment.lamp.controller.GpioLamp` on
    clocked mock pins, with the lantern played behind them.

    It implements :class:`edge.equipment.lamp.controller.LampDriver` the way the bollard's
    simulator does: every call goes through the gpio driver the street runs (its relay,
    dimming and current-sense pins, its wiring and polarity), and this class only plays
    the street side: the current-sense input follows the relay's contacts unless the lamp
    is dead, and the meter (the gpio driver's ``power_reader``) reads what the lantern draws.

    Attributes:
        dead: the lamp (or its driver) has failed: no current even when powered.
        ignores_dimming: the driver runs at full power whatever the duty cycle.
        broken: every call raises :class:`LampDriverError`, like a lost pin or meter.
        factory: the clocked mock pin factory the gpio driver runs on.
        relay_pin, pwm_pin, sense_pin: its mock pins.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        nominal_power_w: float = 60.0,
        warm_up_s: float = 2.0,
        relay_wiring: str = NORMALLY_OPEN,
        relay_pin: int | str = 17,
        pwm_pin: int | str = 18,
        sense_pin: int | str = 27,
    ) -> None:
        """A lamp on its own mock pins. ``relay_wiring`` defaults to normally open: the
        lamp is dark until it is first driven (a normally-closed one is lit at rest)."""
        if nominal_power_w <= 0:
            raise ValueError("nominal_power_w: must be positive")
        if warm_up_s < 0:
            raise ValueError("warm_up_s: must not be negative")
        self._clock = clock
        self._nominal_w = nominal_power_w
        self._warm_up_s = warm_up_s
        self._stuck: bool | None = None
        self._powered_since: datetime | None = None
        self._dead = False
        self.ignores_dimming = False
        self.broken = False
        self.factory = clocked_pwm_factory(clock)
        self._gpio = GpioLamp(
            relay_pin=relay_pin,
            pwm_pin=pwm_pin,
            sense_pin=sense_pin,
            relay_wiring=relay_wiring,
            power_reader=self._meter,
            pin_factory=self.factory,
        )
        self.relay_pin: ClockedMockPin = self.factory.pin(relay_pin)
        self.pwm_pin: ClockedMockPin = self.factory.pin(pwm_pin)
        self.sense_pin: ClockedMockPin = self.factory.pin(sense_pin)
        self._normally_closed = relay_wiring == NORMALLY_CLOSED
        self._was_closed = False
        self.relay_pin.watchers.append(self._relay_moved)
        self._contacts_moved()

    @property
    def dead(self) -> bool:
        """The lamp or its driver has failed: no current."""
        return self._dead

    @dead.setter
    def dead(self, value: bool) -> None:
        self._dead = value
        self._contacts_moved()

    @property
    def relay_closed(self) -> bool:
        """Whether the relay contacts are closed (what powers the driver)."""
        if self._stuck is not None:
            return self._stuck
        # The coil energised (pin high: the gpio driver's polarity is active high) opens
        # normally-closed contacts and closes normally-open ones.
        return bool(self.relay_pin.state) != self._normally_closed

    @property
    def duty(self) -> float:
        """The dimming duty cycle on the PWM pin now."""
        return float(self.pwm_pin.state)

    def stick_relay(self, closed: bool | None) -> None:
        """Weld the relay closed (True), jam it open (False) or repair it (None)."""
        self._stuck = closed
        self._contacts_moved()

    # -- the driver protocol, served by the real gpio driver ----------------------------------

    def drive(self, relay_on: bool, duty: float) -> None:
        """Command the relay and the dimming duty cycle (through the gpio driver)."""
        self._check_broken()
        self._gpio.drive(relay_on, duty)

    def read(self) -> LampReading:
        """Current and active power, read by the gpio driver from the sense pin and meter."""
        self._check_broken()
        return self._gpio.read()

    def close(self) -> None:
        """Release the pins."""
        self._gpio.close()

    # -- the street side -------------------------------------------------------------------

    def _meter(self) -> float:
        if self._powered_since is None or self._dead:
            return 0.0
        fraction = 1.0 if self.ignores_dimming else max(self.duty, LED_MIN_DIM_FRACTION)
        elapsed = (self._clock.now() - self._powered_since).total_seconds()
        ramp = 1.0 if self._warm_up_s == 0 else min(1.0, max(0.0, elapsed / self._warm_up_s))
        return self._nominal_w * fraction * ramp

    def _relay_moved(self, _state: bool) -> None:
        self._contacts_moved()

    def _contacts_moved(self) -> None:
        closed = self.relay_closed
        if closed and not self._was_closed:
            self._powered_since = self._clock.now()
        elif not closed:
            self._powered_since = None
        self._was_closed = closed
        # A current transformer on the feeder: the sense input is high while current flows.
        if self.sense_pin.function != "input":
            return
        if closed and not self._dead:
            self.sense_pin.drive_high()
        else:
            self.sense_pin.drive_low()

    def _check_broken(self) -> None:
        if self.broken:
            raise LampDriverError("simulated backend failure")


class ClockedMockPWMPin(ClockedMockPin, MockPWMPin):  # type: ignore[misc]
    """A clocked mock pin that also takes a PWM duty cycle (a lamp's dimming line).

    gpiozero's ``PWMOutputDevice`` refuses a pin without PWM, and a mock factory hands out
    one pin class: a factory whose pins are all of this class serves lamps, signal heads and
    plain inputs alike, with ``pin.states`` timed by the injected clock.
    """


def clocked_pwm_factory(clock: Clock) -> ClockedMockFactory:
    """A :class:`ClockedMockFactory` whose pins support PWM, for lamps on mock pins."""
    factory = ClockedMockFactory(clock)
    factory.pin_class = ClockedMockPWMPin
    return factory


class MockLantern:
    """The lantern behind a gpio lamp's relay and current-sense pins, on clocked mock pins.

    A :class:`~edge.equipment.lamp.controller.GpioLamp` on mock pins reads its sense input low
    whatever it drives, so every lamp would look dead. This plays the street side: while the relay
    contacts are closed and the lantern is healthy, current flows and the sense input reads
    high, the moment the relay pin changes, as a current transformer on the feeder would.

    The relay is wired as the lamp's configuration says (``relay_wiring``, default normally
    closed: the contacts close, and the lamp lights, while the coil is at rest).

    Attributes:
        relay_pin: the relay output's mock pin.
        sense_pin: the current-sense input's mock pin.
    """

    def __init__(
        self,
        factory: ClockedMockFactory,
        *,
        relay_pin: int | str,
        sense_pin: int | str,
        relay_wiring: str = NORMALLY_CLOSED,
        relay_active_high: bool = True,
    ) -> None:
        if relay_wiring not in RELAY_WIRINGS:
            raise ValueError(f"relay_wiring: must be one of {', '.join(RELAY_WIRINGS)}")
        self.relay_pin: ClockedMockPin = factory.pin(relay_pin)
        self.sense_pin: ClockedMockPin = factory.pin(sense_pin)
        self._normally_closed = relay_wiring == NORMALLY_CLOSED
        self._active_high = relay_active_high
        self._dead = False
        self.relay_pin.watchers.append(self._relay_moved)
        self._sync()

    @property
    def dead(self) -> bool:
        """The lamp or its driver has failed (or the sense wire is cut): no current."""
        return self._dead

    @dead.setter
    def dead(self, value: bool) -> None:
        self._dead = value
        self._sync()

    @property
    def coil_energised(self) -> bool:
        """Whether the relay output energises the coil now (the board's polarity applied)."""
        return bool(self.relay_pin.state) == self._active_high

    @property
    def relay_closed(self) -> bool:
        """Whether the contacts feeding the lamp are closed now (the wiring applied)."""
        return self.coil_energised != self._normally_closed

    @property
    def lit(self) -> bool:
        """Whether current flows through the lamp."""
        return self.relay_closed and not self._dead

    def detach(self) -> None:
        """Stop following the relay (the sense input keeps its last level)."""
        if self._relay_moved in self.relay_pin.watchers:
            self.relay_pin.watchers.remove(self._relay_moved)

    def _relay_moved(self, _state: bool) -> None:
        self._sync()

    def _sync(self) -> None:
        # A sense input the agent has not opened yet is still an input: driving it is fine.
        if self.sense_pin.function != "input":
            return
        if self.lit:
            self.sense_pin.drive_high()
        else:
            self.sense_pin.drive_low()
