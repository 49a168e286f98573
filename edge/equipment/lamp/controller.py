"""Street lamps: the TALQ lamp actuator (relay and dimming) and lamp monitor (faults, metering).

A lamp is a relay that powers its LED driver, a PWM line that sets the dimming level and a
current-sense input that tells whether the lamp actually draws current; some cabinets also
have an energy-meter chip that gives the active power in watts (an optional callable).

The relay is wired normally closed by default (``relay_wiring``): its coil de-energised, the
lamp is lit, and the agent energises the coil to switch the lamp *off*. A dead agent, a
released pin, a rebooting or unpowered board then leave the street lit (SAFETY.md, "When the
agent is not there"). ``relay_wiring = "normally_open"`` is kept for cabinets wired the
other way: there the same failures leave the lamp dark unless the luminaire lights itself.

- :class:`LampConfig` is one ``lamps[i]`` entry of the agent configuration, validated.
- :class:`LampDriver` is what a backend implements: :class:`GpioLamp` (gpiozero) here,
  ``SimulatedLamp`` in :mod:`edge.equipment.sim.lantern` (this driver on mock pins, the
  lantern behind them), ``FieldbusLamp`` in :mod:`edge.equipment.lamp.fieldbus` (a node on
  the cabinet's MQTT bus); :mod:`edge.equipment.registry` picks one from the configuration.
- :class:`LampController` applies the schedule engine's level, keeps the counters (switch
  count, operating hours, energy) and diagnoses faults on :meth:`LampController.check`.

Faults (names as in ``LampState.faults``), each confirmed only after it held for
``fault_delay_s`` since the output last changed, so a warm-up or a relay bounce is not an
alarm; each raises one ALARM when it appears and one EVENT when it clears:

- ``lamp_failure``: relay on, no current. With a single current-sense input a dead lamp and a
  relay stuck open look the same; the message says so and the crew tells them apart.
- ``relay_failure``: relay commanded off, current flows (contacts welded or stuck closed).
- ``day_burner``: current flows while the lamp should be dark: commanded off, or daylight
  (the agent passes ``daylight=True`` when the sun is up and no override wants light). A
  welded relay therefore raises both ``relay_failure`` (the cause) and ``day_burner`` (the
  waste the control centre counts).
- ``dimming_failure``: measured power differs from what the level asks for by more than
  ``dimming_tolerance`` of the nominal power (needs a power reading).
- ``driver_failure``: the backend raised :class:`LampDriverError` (a pin or meter error).

A backend that cannot know yet (a field node before its first report) raises
:class:`LampNotReported`: the lamp reads not lit, draws nothing, shows no ``observed_at``
and no fault is judged until a reading comes; the backend itself turns a silence that
lasts into a :class:`LampDriverError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from edge.equipment.lamp.config import (
    NORMALLY_CLOSED,
    RELAY_WIRINGS,
    LampConfig,
)
from edge.events import (
    EquipmentConfigError,
    EquipmentError,
    EquipmentEvent,
    EventSink,
    PinSpec,
    Priority,
    config_number,
)
from foundation.clock import Clock
from protos.ondijon.v1 import schedule_pb2, state_pb2

LED_MIN_DIM_FRACTION = 0.1
"""LED drivers do not dim below about 10 %: a powered driver at duty 0 still draws this."""

# A longer gap between two samples means the clock jumped (a Pi without RTC setting its
# time) or the agent stalled: metering it would invent energy, so it is skipped.
MAX_METERED_GAP_S = 900.0

# A lamp's state is reported again when its power moved by more than this share of the
# nominal power (or 0.5 W) since the last report: a map shows the power a lamp draws now,
# not what it drew in the first milliseconds of its warm-up.
REPORTED_POWER_STEP = 0.02
REPORTED_POWER_MIN_W = 0.5

_FAULT_MESSAGES = {
    "lamp_failure": "no current with the relay on (dead lamp or driver, or relay stuck open)",
    "relay_failure": "current flows with the relay commanded off (relay stuck closed)",
    "day_burner": "lamp lit while it should be dark",
    "dimming_failure": "power does not follow the dimming level",
    "driver_failure": "lamp backend error",
}


class LampError(EquipmentError):
    """Base of lamp errors."""


class LampDriverError(LampError):
    """A lamp backend could not drive its outputs or read its inputs."""


class LampNotReported(LampError):
    """A lamp backend has no reading yet (not a fault: nothing can be judged)."""


@dataclass(frozen=True)
class LampReading:
    """What the lamp monitor sees.

    Attributes:
        current: current flows through the lamp.
        power_w: measured active power in watts, or None when the backend only senses
            the presence of current (power is then estimated from the level).
    """

    current: bool
    power_w: float | None = None


class LampDriver(Protocol):
    """A lamp backend. Methods raise :class:`LampDriverError` and nothing else."""

    def drive(self, relay_on: bool, duty: float) -> None:
        """Power the lamp or not (``relay_on``: the contacts feeding its driver closed,
        whichever way the coil must go for it) and set the dimming duty cycle (0.0 to 1.0)."""
        ...

    def read(self) -> LampReading:
        """Read the current-sense input (and the power, where measured); raise
        :class:`LampNotReported` while there is nothing to read yet."""
        ...

    def close(self) -> None:
        """Release the pins."""
        ...


class GpioLamp:
    """A lamp wired to the gateway's GPIO header, through gpiozero.

    The relay's coil is a ``DigitalOutputDevice``, dimming a ``PWMOutputDevice`` and the
    current sense a ``DigitalInputDevice`` reading high while current flows (pulled down, so
    an unplugged sensor reads "no current"). ``power_reader``, when given, returns the active
    power in watts from whatever meter the cabinet has (an ADC, a metering chip).

    With the default normally-closed wiring the coil is energised to switch the lamp off;
    it is opened at rest, so the lamp stays as the pins left it before the agent started
    (lit, at full dimming) until the agent applies its level right after.
    """

    def __init__(
        self,
        *,
        relay_pin: PinSpec,
        pwm_pin: PinSpec,
        sense_pin: PinSpec,
        relay_wiring: str = NORMALLY_CLOSED,
        relay_active_high: bool = True,
        pwm_active_high: bool = True,
        pwm_frequency_hz: float = 200.0,
        power_reader: Callable[[], float] | None = None,
        pin_factory: Any = None,
    ) -> None:
        from gpiozero import (
            DigitalInputDevice,
            DigitalOutputDevice,
            GPIOZeroError,
            PWMOutputDevice,
        )

        if relay_wiring not in RELAY_WIRINGS:
            raise ValueError(f"relay_wiring: must be one of {', '.join(RELAY_WIRINGS)}")
        self._errors: type[Exception] = GPIOZeroError
        self._power_reader = power_reader
        self._normally_closed = relay_wiring == NORMALLY_CLOSED
        opened: list[Any] = []
        try:
            # The coil at rest at start, as it was before the agent: the agent applies the
            # schedule's level right after opening.
            self._coil = DigitalOutputDevice(
                relay_pin,
                active_high=relay_active_high,
                initial_value=False,
                pin_factory=pin_factory,
            )
            opened.append(self._coil)
            self._pwm = PWMOutputDevice(
                pwm_pin,
                active_high=pwm_active_high,
                initial_value=1.0 if self._normally_closed else 0.0,
                frequency=pwm_frequency_hz,
                pin_factory=pin_factory,
            )
            opened.append(self._pwm)
            self._sense = DigitalInputDevice(sense_pin, pull_up=False, pin_factory=pin_factory)
        except GPIOZeroError as exc:
            for device in opened:
                device.close()
            raise LampDriverError(f"cannot open lamp pins: {exc}") from exc

    def drive(self, relay_on: bool, duty: float) -> None:
        """Set the outputs; the order avoids a flash at the previous level."""
        try:
            if relay_on:
                self._pwm.value = min(1.0, max(0.0, duty))
                self._power(on=True)
            else:
                self._power(on=False)
                self._pwm.value = 0.0
        except self._errors as exc:
            raise LampDriverError(f"cannot drive lamp: {exc}") from exc

    def _power(self, *, on: bool) -> None:
        # Normally closed: the coil is energised to open the contacts, i.e. to darken.
        if on != self._normally_closed:
            self._coil.on()
        else:
            self._coil.off()

    def read(self) -> LampReading:
        """Read the current-sense input and, if a meter is fitted, the power."""
        try:
            current = bool(self._sense.value)
        except self._errors as exc:
            raise LampDriverError(f"cannot read current sense: {exc}") from exc
        if self._power_reader is None:
            return LampReading(current=current)
        try:
            power = float(self._power_reader())
        except Exception as exc:  # whatever the meter's library raises is a backend error
            raise LampDriverError(f"cannot read power: {exc}") from exc
        if not math.isfinite(power) or power < 0:
            raise LampDriverError(f"meter returned an impossible power: {power!r}")
        return LampReading(current=current, power_w=power)

    def close(self) -> None:
        """Release the pins."""
        for device in (self._coil, self._pwm, self._sense):
            device.close()


@dataclass(frozen=True)
class LampCounters:
    """The lamp monitor's counters, persisted by the agent across restarts."""

    energy_wh: float = 0.0
    operating_hours: float = 0.0
    switch_count: int = 0

    def as_mapping(self) -> dict[str, float | int]:
        """A JSON-ready form, read back by :meth:`from_mapping`."""
        return {
            "energy_wh": self.energy_wh,
            "operating_hours": self.operating_hours,
            "switch_count": self.switch_count,
        }

    @classmethod
    def from_mapping(cls, mapping: object, field_prefix: str) -> LampCounters:
        """Read persisted counters back.

        Raises:
            EquipmentConfigError: a counter is missing, negative or not a number.
        """
        if not isinstance(mapping, Mapping):
            raise EquipmentConfigError(field_prefix, "must be a table")
        energy = config_number(mapping.get("energy_wh"), f"{field_prefix}.energy_wh", 0.0)
        hours = config_number(
            mapping.get("operating_hours"), f"{field_prefix}.operating_hours", 0.0
        )
        switches = mapping.get("switch_count")
        if isinstance(switches, bool) or not isinstance(switches, int) or switches < 0:
            raise EquipmentConfigError(f"{field_prefix}.switch_count", "must be a count")
        return cls(energy_wh=energy, operating_hours=hours, switch_count=switches)


class LampController:
    """Drives one lamp and watches it. The agent calls :meth:`check` for every lamp on one
    timer; nothing here owns a task or a thread, so hundreds of lamps stay cheap."""

    def __init__(
        self, config: LampConfig, driver: LampDriver, sink: EventSink, clock: Clock
    ) -> None:
        self._config = config
        self._driver = driver
        self._sink = sink
        self._clock = clock
        self._level = 0
        self._source = ""
        self._commanded = False
        self._driven_ok = False
        self._refused: str | None = None
        self._reading = LampReading(current=False, power_w=0.0)
        self._power_w = 0.0
        self._observed_at: datetime | None = None
        self._sampled_at: datetime | None = None
        self._energy_wh = 0.0
        self._operating_hours = 0.0
        self._switch_count = 0
        self._faults: set[str] = set()
        self._pending: dict[str, datetime] = {}
        # What the last state() showed: (lit, power, faults); None before any.
        self._reported: tuple[bool, float, frozenset[str]] | None = None

    @property
    def device_id(self) -> str:
        """The lamp's id."""
        return self._config.device_id

    @property
    def level(self) -> int:
        """The level last applied, 0 (off) to 100."""
        return self._level

    @property
    def faults(self) -> frozenset[str]:
        """The faults currently raised."""
        return frozenset(self._faults)

    @property
    def report_due(self) -> bool:
        """Whether :meth:`state` would show something the last one did not: the lamp lit or
        went dark, its faults changed, or its power moved (a warm-up ended, a driver
        drifted). The agent reports the lamp again when this holds after a check."""
        if self._reported is None:
            return True
        lit, power, faults = self._reported
        step = max(REPORTED_POWER_MIN_W, REPORTED_POWER_STEP * self._config.nominal_power_w)
        return (
            lit != self._reading.current
            or faults != frozenset(self._faults)
            or abs(power - self._power_w) > step
        )

    def apply(self, level: int, source: str, *, default_level: int = 100) -> int:
        """Set the lamp to ``level`` percent.

        An invalid level (not an integer from 0 to 100) is refused and ``default_level``
        applied instead, with ``source`` "default", so a broken program never leaves the
        street dark; the refusal is reported once, not on every call.

        Args:
            level: 0 (off) to 100.
            source: what decided it: "program:<id>", "override:<id>", "default", "sensor".
            default_level: the site's night level; itself invalid or 0 means 100.

        Returns:
            The level actually applied.
        """
        now = self._clock.now()
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 100:
            if repr(level) != self._refused:
                self._refused = repr(level)
                self._emit(
                    "invalid_level",
                    Priority.EVENT,
                    now,
                    f"level {level!r} from {source} refused, default level applied",
                    {"requested": repr(level), "source": source},
                )
            valid_default = (
                isinstance(default_level, int)
                and not isinstance(default_level, bool)
                and 1 <= default_level <= 100
            )
            level, source = (default_level if valid_default else 100), "default"
        else:
            self._refused = None
        # The output was steady since the last sample: what was seen then held until now.
        self._integrate(now, self._power_w, self._reading.current)
        self._source = source
        if level == self._level and self._driven_ok:
            return level
        if level > 0 and self._level == 0:
            self._switch_count += 1
        changed = level != self._level
        self._level = level
        self._commanded = True
        if changed:
            # What follows a switch is transient: every confirmation starts again.
            for fault in self._pending:
                self._pending[fault] = now
        if self._drive(now):
            self._observe(now)
        return level

    def check(self, now: datetime, *, daylight: bool = False) -> None:
        """Read the lamp, advance the counters and raise or clear faults.

        Args:
            now: the agent's timer tick (one clock read for all lamps).
            daylight: the sun is up and nothing asks for light (see ``day_burner``).
        """
        if self._commanded and not self._driven_ok:
            self._drive(now)
        reading = self._observe(now)
        if reading is None:
            # Without a reading the other faults cannot be judged: they keep their state,
            # and the lamp is taken to go on doing what it was last seen doing.
            self._integrate(now, self._power_w, self._reading.current)
            return
        # What a check sees has held since the last sample: the last one was usually taken
        # right after a switch, in the relay's bounce or the driver's warm-up.
        self._integrate(now, self._power_w, reading.current)
        relay_on = self._level > 0
        lit = reading.current
        self._settle("lamp_failure", relay_on and not lit, now)
        self._settle("relay_failure", not relay_on and lit, now)
        self._settle("day_burner", lit and (not relay_on or daylight), now)
        dimming_wrong = False
        if relay_on and lit and reading.power_w is not None:
            error = abs(reading.power_w - self._expected_power(self._level))
            dimming_wrong = error > self._config.dimming_tolerance * self._config.nominal_power_w
        self._settle("dimming_failure", dimming_wrong, now)

    def counters(self) -> LampCounters:
        """The counters to persist."""
        return LampCounters(
            energy_wh=self._energy_wh,
            operating_hours=self._operating_hours,
            switch_count=self._switch_count,
        )

    def restore(self, counters: LampCounters) -> None:
        """Take back persisted counters; call at start-up, before the first :meth:`check`."""
        self._energy_wh = counters.energy_wh
        self._operating_hours = counters.operating_hours
        self._switch_count = counters.switch_count

    def state(self) -> state_pb2.DeviceState:
        """The lamp's state as last observed, for the orchestrator."""
        self._reported = (self._reading.current, self._power_w, frozenset(self._faults))
        message = state_pb2.DeviceState(
            device_id=self._config.device_id,
            kind=schedule_pb2.DEVICE_KIND_LAMP,
            source=self._source,
            lamp=state_pb2.LampState(
                level=self._level,
                lit=self._reading.current,
                active_power_w=self._power_w,
                energy_wh=self._energy_wh,
                operating_hours=self._operating_hours,
                switch_count=self._switch_count,
                faults=sorted(self._faults),
            ),
        )
        if self._observed_at is not None:
            message.observed_at.FromDatetime(self._observed_at)
        return message

    def close(self) -> None:
        """Release the backend."""
        self._driver.close()

    def _expected_power(self, level: int) -> float:
        return self._config.nominal_power_w * max(level / 100.0, LED_MIN_DIM_FRACTION)

    def _power(self, reading: LampReading) -> float:
        if reading.power_w is not None:
            return reading.power_w
        return self._expected_power(self._level) if reading.current else 0.0

    def _integrate(self, now: datetime, power_w: float, lit: bool) -> None:
        if self._sampled_at is not None:
            elapsed = (now - self._sampled_at).total_seconds()
            if 0 < elapsed <= MAX_METERED_GAP_S:
                self._energy_wh += power_w * elapsed / 3600.0
                if lit:
                    self._operating_hours += elapsed / 3600.0
        self._sampled_at = now

    def _drive(self, now: datetime) -> bool:
        try:
            self._driver.drive(self._level > 0, self._level / 100.0)
        except LampDriverError as exc:
            self._driven_ok = False
            self._settle("driver_failure", True, now, str(exc), immediate=True)
            return False
        self._driven_ok = True
        return True

    def _observe(self, now: datetime) -> LampReading | None:
        try:
            reading = self._driver.read()
        except LampNotReported:
            # Unknown is not lit: no energy invented, no state claiming light.
            self._reading = LampReading(current=False, power_w=0.0)
            self._power_w = 0.0
            return None
        except LampDriverError as exc:
            self._settle("driver_failure", True, now, str(exc), immediate=True)
            return None
        self._observed_at = now
        self._reading = reading
        self._power_w = self._power(reading)
        if self._driven_ok or not self._commanded:
            self._settle("driver_failure", False, now, immediate=True)
        return reading

    def _settle(
        self, fault: str, present: bool, now: datetime, detail: str = "", *, immediate: bool = False
    ) -> None:
        active = fault in self._faults
        if present == active:
            self._pending.pop(fault, None)
            return
        since = self._pending.setdefault(fault, now)
        if not immediate and (now - since).total_seconds() < self._config.fault_delay_s:
            return
        del self._pending[fault]
        message = _FAULT_MESSAGES[fault] + (f": {detail}" if detail else "")
        if present:
            self._faults.add(fault)
            self._emit(fault, Priority.ALARM, now, message, {"state": "raised"})
        else:
            self._faults.discard(fault)
            self._emit(fault, Priority.EVENT, now, message, {"state": "cleared"})

    def _emit(
        self,
        kind: str,
        priority: Priority,
        now: datetime,
        message: str,
        attributes: Mapping[str, str],
    ) -> None:
        self._sink(
            EquipmentEvent(
                device_id=self._config.device_id,
                type=kind,
                priority=priority,
                at=now,
                message=message,
                attributes=dict(attributes),
            )
        )
