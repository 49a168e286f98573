"""The street cabinet that houses the gateway: door, mains supply and temperature.

- :class:`CabinetConfig` is the ``cabinet`` entry of the agent configuration, validated.
- :class:`CabinetDriver` is what a backend implements: :class:`GpioCabinet` (door and mains
  inputs on GPIO pins, temperature and light from callables) here, and
  :class:`edge.equipment.sim.cabinet.SimulatedCabinet` (the same driver on mock pins);
  :mod:`edge.equipment.registry` picks one from the configuration.
- :class:`CabinetMonitor` turns readings into alarms, each raised once when it appears (an
  ALARM event) and cleared once (an EVENT): ``door_open``, ``mains_lost`` (the gateway runs
  on its battery) and ``over_temperature``, which clears only once the temperature has
  fallen ``temperature_hysteresis_c`` below the limit, so a cabinet hovering at the limit
  in the afternoon sun raises one alarm, not one per check.

Wiring of the gpio backend: the door input reads high while the door is open (a switch that
closes when the door opens, pulled down), the mains input reads high while mains is present
(an opto-isolated mains sense, pulled down, so a cut wire reads "mains lost").
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from edge.equipment.cabinet.config import CabinetConfig
from edge.equipment.device import CABINET, DeviceKindValue
from edge.events import EquipmentError, EquipmentEvent, EventSink, PinSpec, Priority
from protos.ondijon.v1 import schedule_pb2, state_pb2

_ALARM_MESSAGES = {
    "door_open": "cabinet door open",
    "mains_lost": "mains supply lost, gateway on battery",
    "over_temperature": "cabinet temperature above its limit",
}


class CabinetError(EquipmentError):
    """Base of cabinet errors."""


class CabinetDriverError(CabinetError):
    """A cabinet backend could not read its inputs."""


@dataclass(frozen=True)
class CabinetReading:
    """What the cabinet's sensors say.

    Attributes:
        door_open: the door is open, or was opened since the previous reading.
        on_battery: mains is absent and the gateway runs on its battery.
        temperature_c: inside temperature, None when unknown (no sensor, or it failed).
        lux: ambient illuminance from the cabinet's light sensor, None without one; the
            schedule's light-sensor rule uses it.
    """

    door_open: bool
    on_battery: bool
    temperature_c: float | None
    lux: float | None = None


class CabinetDriver(Protocol):
    """A cabinet backend. ``read`` raises :class:`CabinetDriverError` and nothing else."""

    def read(self) -> CabinetReading:
        """Read every sensor."""
        ...

    def close(self) -> None:
        """Release the pins."""
        ...


class GpioCabinet:
    """Door and mains inputs on GPIO pins through gpiozero; temperature from a callable.

    A door opened and shut between two readings still reads open once: the opening edge is
    latched, because a brief opening is exactly what a break-in looks like.
    """

    def __init__(
        self,
        *,
        door_pin: PinSpec,
        mains_pin: PinSpec,
        temperature: Callable[[], float] | None = None,
        light: Callable[[], float] | None = None,
        pin_factory: Any = None,
    ) -> None:
        from gpiozero import DigitalInputDevice, GPIOZeroError

        self._errors: type[Exception] = GPIOZeroError
        self._temperature = temperature
        self._light = light
        self._door_opened = False
        try:
            self._door = DigitalInputDevice(door_pin, pull_up=False, pin_factory=pin_factory)
        except GPIOZeroError as exc:
            raise CabinetDriverError(f"cannot open door pin: {exc}") from exc
        try:
            self._mains = DigitalInputDevice(mains_pin, pull_up=False, pin_factory=pin_factory)
        except GPIOZeroError as exc:
            self._door.close()
            raise CabinetDriverError(f"cannot open mains pin: {exc}") from exc
        self._door.when_activated = self._latch_door

    def read(self) -> CabinetReading:
        """Read the inputs and the temperature (None if the sensor fails)."""
        try:
            door_open = bool(self._door.value) or self._door_opened
            on_battery = not self._mains.value
        except self._errors as exc:
            raise CabinetDriverError(f"cannot read cabinet inputs: {exc}") from exc
        self._door_opened = False
        return CabinetReading(
            door_open, on_battery, _sample(self._temperature), _sample(self._light)
        )

    def close(self) -> None:
        """Release the pins."""
        self._door.close()
        self._mains.close()

    def _latch_door(self) -> None:
        self._door_opened = True


def _sample(sensor: Callable[[], float] | None) -> float | None:
    """One reading of an analogue sensor; a failed or absent sensor is "unknown"."""
    if sensor is None:
        return None
    try:
        value = float(sensor())
    except Exception:  # a failed sensor (1-wire CRC, I2C timeout) means "unknown"
        return None
    return value if math.isfinite(value) else None


class CabinetMonitor:
    """Watches the cabinet; the agent calls :meth:`check` on its timer."""

    def __init__(self, config: CabinetConfig, driver: CabinetDriver, sink: EventSink) -> None:
        self._config = config
        self._driver = driver
        self._sink = sink
        self._reading = CabinetReading(False, False, None)
        self._observed_at: datetime | None = None
        self._alarms: set[str] = set()

    @property
    def device_id(self) -> str:
        """The cabinet's id."""
        return self._config.device_id

    @property
    def kind(self) -> DeviceKindValue:
        """A cabinet (:class:`edge.equipment.device.Device`)."""
        return CABINET

    @property
    def alarms(self) -> frozenset[str]:
        """The alarms currently raised."""
        return frozenset(self._alarms)

    async def run(self) -> None:
        """Nothing of its own: the agent's monitor pass calls :meth:`check`."""
        await asyncio.Event().wait()

    async def fail_safe(self) -> None:
        """Sensors only: nothing to put in a safe state."""

    def close(self) -> None:
        """Release the sensors."""
        self._driver.close()

    @property
    def driver(self) -> CabinetDriver:
        """The backend (the bench sets a simulated cabinet's sensors through it)."""
        return self._driver

    @property
    def lux(self) -> float | None:
        """Ambient light at the last check, None without a light sensor."""
        return self._reading.lux

    def check(self, now: datetime) -> None:
        """Read the sensors and raise or clear alarms.

        Raises:
            CabinetDriverError: the inputs could not be read (nothing changes).
        """
        reading = self._driver.read()
        self._reading = reading
        self._observed_at = now
        self._settle("door_open", reading.door_open, now)
        self._settle("mains_lost", reading.on_battery, now)
        temperature = reading.temperature_c
        if temperature is not None:
            limit = self._config.max_temperature_c
            if "over_temperature" in self._alarms:
                hot = temperature > limit - self._config.temperature_hysteresis_c
            else:
                hot = temperature >= limit
            self._settle("over_temperature", hot, now, f"{temperature:.1f} °C")

    def state(self) -> state_pb2.DeviceState:
        """The cabinet's state as last observed (temperature NaN when unknown)."""
        temperature = self._reading.temperature_c
        message = state_pb2.DeviceState(
            device_id=self._config.device_id,
            kind=schedule_pb2.DEVICE_KIND_CABINET,
            cabinet=state_pb2.CabinetState(
                door_open=self._reading.door_open,
                on_battery=self._reading.on_battery,
                temperature_c=math.nan if temperature is None else temperature,
            ),
        )
        if self._observed_at is not None:
            message.observed_at.FromDatetime(self._observed_at)
        return message

    def _settle(self, alarm: str, present: bool, now: datetime, detail: str = "") -> None:
        if present == (alarm in self._alarms):
            return
        message = _ALARM_MESSAGES[alarm] + (f" ({detail})" if detail else "")
        if present:
            self._alarms.add(alarm)
            priority, state = Priority.ALARM, "raised"
        else:
            self._alarms.discard(alarm)
            priority, state = Priority.EVENT, "cleared"
        self._sink(
            EquipmentEvent(
                device_id=self._config.device_id,
                type=alarm,
                priority=priority,
                at=now,
                message=message,
                attributes={"state": state},
            )
        )
