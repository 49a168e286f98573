"""A simulated street lamp: a first-class lamp backend for the bench, demos and tests.

It behaves like an LED lantern on a relay: power follows the dimming level (never below the
driver's minimum), ramps up over a short warm-up after the relay closes, and reads zero when
the relay is open. Failures are injected by the bench or a test while it runs: a dead lamp,
a relay stuck open or closed, a driver that ignores dimming. Time comes from the injected
clock, so a simulated night runs in milliseconds.
"""

from __future__ import annotations

from datetime import datetime

from edge.equipment.lamp import LED_MIN_DIM_FRACTION, LampDriverError, LampReading
from ondijon.clock import Clock


class SimulatedLamp:
    """A simulated LED lamp implementing :class:`edge.equipment.lamp.LampDriver`.

    Attributes:
        dead: the lamp (or its driver) has failed: no current even when powered.
        ignores_dimming: the driver runs at full power whatever the duty cycle.
        broken: every call raises :class:`LampDriverError`, like a lost pin or meter.
    """

    def __init__(
        self, *, clock: Clock, nominal_power_w: float = 60.0, warm_up_s: float = 2.0
    ) -> None:
        if nominal_power_w <= 0:
            raise ValueError("nominal_power_w: must be positive")
        if warm_up_s < 0:
            raise ValueError("warm_up_s: must not be negative")
        self._clock = clock
        self._nominal_w = nominal_power_w
        self._warm_up_s = warm_up_s
        self._commanded_on = False
        self._duty = 0.0
        self._stuck: bool | None = None
        self._powered_since: datetime | None = None
        self.dead = False
        self.ignores_dimming = False
        self.broken = False

    @property
    def relay_closed(self) -> bool:
        """Whether the relay contacts are closed (what powers the driver)."""
        return self._commanded_on if self._stuck is None else self._stuck

    @property
    def duty(self) -> float:
        """The dimming duty cycle last driven."""
        return self._duty

    def stick_relay(self, closed: bool | None) -> None:
        """Weld the relay closed (True), jam it open (False) or repair it (None)."""
        was_closed = self.relay_closed
        self._stuck = closed
        self._contacts_moved(was_closed)

    def drive(self, relay_on: bool, duty: float) -> None:
        """Command the relay and the dimming duty cycle."""
        self._check_broken()
        was_closed = self.relay_closed
        self._commanded_on = relay_on
        self._duty = min(1.0, max(0.0, duty)) if relay_on else 0.0
        self._contacts_moved(was_closed)

    def read(self) -> LampReading:
        """Current and active power as a meter on the lamp's feeder would see them."""
        self._check_broken()
        if self._powered_since is None or self.dead:
            return LampReading(current=False, power_w=0.0)
        fraction = 1.0 if self.ignores_dimming else max(self._duty, LED_MIN_DIM_FRACTION)
        elapsed = (self._clock.now() - self._powered_since).total_seconds()
        ramp = 1.0 if self._warm_up_s == 0 else min(1.0, max(0.0, elapsed / self._warm_up_s))
        return LampReading(current=True, power_w=self._nominal_w * fraction * ramp)

    def close(self) -> None:
        """Nothing to release."""

    def _contacts_moved(self, was_closed: bool) -> None:
        closed = self.relay_closed
        if closed and not was_closed:
            self._powered_since = self._clock.now()
        elif not closed:
            self._powered_since = None

    def _check_broken(self) -> None:
        if self.broken:
            raise LampDriverError("simulated backend failure")
