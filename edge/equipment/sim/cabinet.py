"""A simulated street cabinet: the real gpio driver on mock pins, the cabinet behind them.

:class:`SimulatedCabinet` runs :class:`~edge.equipment.cabinet.monitor.GpioCabinet` on a
:class:`~edge.equipment.sim.bollard.ClockedMockFactory` and plays the cabinet: opening the
door drives the door switch's pin high, a mains cut drives the mains sense low, and the
temperature and light sensors are the gpio driver's callables reading what the bench set.
So the door's opening edge is latched, and a failed sensor reads "unknown", exactly as in a
cabinet (a ``None`` or non-finite value here is such a failed sensor).
"""

from __future__ import annotations

from edge.equipment.cabinet.monitor import CabinetReading, GpioCabinet
from edge.equipment.sim.bollard import ClockedMockFactory, ClockedMockPin
from foundation.clock import Clock, SystemClock

DOOR_PIN = 20
MAINS_PIN = 21


class SimulatedCabinet:
    """A cabinet whose door, mains, temperature and light the bench or a test sets.

    Attributes:
        temperature_c: inside temperature, None for a failed or missing sensor.
        lux: ambient light, None for no light sensor.
        factory: the mock pin factory the gpio driver runs on.
    """

    def __init__(
        self,
        *,
        temperature_c: float | None = 25.0,
        lux: float | None = None,
        clock: Clock | None = None,
        door_pin: int | str = DOOR_PIN,
        mains_pin: int | str = MAINS_PIN,
    ) -> None:
        self.temperature_c = temperature_c
        self.lux = lux
        self.factory = ClockedMockFactory(clock or SystemClock())
        self._gpio = GpioCabinet(
            door_pin=door_pin,
            mains_pin=mains_pin,
            temperature=self._temperature,
            light=self._light,
            pin_factory=self.factory,
        )
        self.door_pin: ClockedMockPin = self.factory.pin(door_pin)
        self.mains_pin: ClockedMockPin = self.factory.pin(mains_pin)
        self.mains_pin.drive_high()  # mains present

    @property
    def door_open(self) -> bool:
        """The door switch reads open."""
        return bool(self.door_pin.state)

    @door_open.setter
    def door_open(self, value: bool) -> None:
        if value:
            self.door_pin.drive_high()
        else:
            self.door_pin.drive_low()

    @property
    def on_battery(self) -> bool:
        """Mains is lost (its sense input reads low)."""
        return not self.mains_pin.state

    @on_battery.setter
    def on_battery(self, value: bool) -> None:
        if value:
            self.mains_pin.drive_low()
        else:
            self.mains_pin.drive_high()

    def read(self) -> CabinetReading:
        """Every sensor, read by the gpio driver."""
        return self._gpio.read()

    def close(self) -> None:
        """Release the pins."""
        self._gpio.close()

    def _temperature(self) -> float:
        if self.temperature_c is None:
            raise OSError("no temperature sensor")
        return self.temperature_c

    def _light(self) -> float:
        if self.lux is None:
            raise OSError("no light sensor")
        return self.lux
