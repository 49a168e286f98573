"""The cabinet's table of the agent configuration (``[cabinet]``), as a schema."""

from __future__ import annotations

from typing import Literal

import msgspec

from edge.events import EquipmentConfigError, PinSpec, check_pin, within
from foundation.settings import Settings, convert

BACKENDS = ("gpio", "simulated")


class CabinetConfig(Settings, frozen=True):
    """The cabinet of the agent configuration.

    Attributes:
        device_id: the cabinet's id.
        backend: ``"gpio"`` or ``"simulated"``.
        door_pin: input reading high while the door is open (gpio backend).
        mains_pin: input reading high while mains is present (gpio backend).
        max_temperature_c: over-temperature limit.
        temperature_hysteresis_c: how far below the limit the alarm clears.
    """

    device_id: str = msgspec.field(name="id")
    backend: Literal["gpio", "simulated"] = "gpio"
    door_pin: PinSpec | None = None
    mains_pin: PinSpec | None = None
    max_temperature_c: float = 60.0
    temperature_hysteresis_c: float = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.device_id.strip():
            raise EquipmentConfigError("id", "must be a non-empty string")
        for name in ("door_pin", "mains_pin"):
            pin = getattr(self, name)
            if pin is None and self.backend == "gpio":
                raise EquipmentConfigError(name, "is required by the gpio backend")
            check_pin(pin, name)
        if self.door_pin is not None and self.door_pin == self.mains_pin:
            raise EquipmentConfigError("mains_pin", "same pin as door_pin")
        within(self.max_temperature_c, "max_temperature_c", -40, 125)
        within(self.temperature_hysteresis_c, "temperature_hysteresis_c", 0.1, 50)

    @classmethod
    def from_mapping(cls, mapping: object, field_prefix: str) -> CabinetConfig:
        """Validate the ``[cabinet]`` table; EquipmentConfigError naming the field."""
        return convert(mapping, cls, at=field_prefix, error=EquipmentConfigError)
