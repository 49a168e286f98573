"""A lamp's table of the agent configuration (``[[lamps]]``), as a schema."""

from __future__ import annotations

from typing import Literal

import msgspec

from edge.events import EquipmentConfigError, PinSpec, check_pin, within
from foundation.settings import Settings, convert

BACKENDS = ("gpio", "simulated", "fieldbus")

NORMALLY_CLOSED = "normally_closed"
NORMALLY_OPEN = "normally_open"
RELAY_WIRINGS = (NORMALLY_CLOSED, NORMALLY_OPEN)
"""How the relay's contacts feed the lamp: closed (lamp lit) with the coil at rest, or open."""

PINS = ("relay_pin", "pwm_pin", "sense_pin")


class LampConfig(Settings, frozen=True):
    """One lamp of the agent configuration (``lamps[i]``).

    Attributes:
        device_id: the lamp's id, unique on the gateway.
        nominal_power_w: active power at 100 %, in watts (60 for a typical LED lantern).
        backend: ``"gpio"``, ``"simulated"`` or ``"fieldbus"`` (a MicroPython node on the
            cabinet's MQTT bus, configured by the agent's ``[fieldbus]`` table).
        node: the node id on the field bus (fieldbus backend; default: the lamp's id).
        relay_pin: output that drives the coil of the relay feeding the driver (gpio backend).
        pwm_pin: PWM output that sets the dimming level (gpio backend).
        sense_pin: input that reads high while current flows (gpio backend).
        relay_wiring: ``"normally_closed"`` (default: the lamp is lit while the coil is at
            rest, so it stays lit without the agent) or ``"normally_open"`` (lit only while
            the agent energises the coil: dark when the agent, the board or its power fails).
        relay_active_high: False when the relay board energises its coil on a low output.
        pwm_active_high: False when the dimming line is inverted, e.g. a transistor that sinks
            the driver's 1-10 V line while the pin is high (a released pin then leaves the
            line open, which the driver reads as 100 %).
        pwm_frequency_hz: PWM frequency of the dimming line.
        dimming_tolerance: allowed power error, as a fraction of the nominal power.
        fault_delay_s: how long a fault condition must hold before it is raised or cleared.
    """

    device_id: str = msgspec.field(name="id")
    nominal_power_w: float
    backend: Literal["gpio", "simulated", "fieldbus"] = "gpio"
    node: str | None = None
    relay_pin: PinSpec | None = None
    pwm_pin: PinSpec | None = None
    sense_pin: PinSpec | None = None
    relay_wiring: Literal["normally_closed", "normally_open"] = "normally_closed"
    relay_active_high: bool = True
    pwm_active_high: bool = True
    pwm_frequency_hz: float = 200.0
    dimming_tolerance: float = 0.15
    fault_delay_s: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.device_id.strip():
            raise EquipmentConfigError("id", "must be a non-empty string")
        within(self.nominal_power_w, "nominal_power_w", 0.0, 2000.0)
        if self.nominal_power_w == 0.0:
            raise EquipmentConfigError("nominal_power_w", "must be positive")
        seen: list[PinSpec] = []
        for name in PINS:
            pin = getattr(self, name)
            if pin is None:
                if self.backend == "gpio":
                    raise EquipmentConfigError(name, "is required by the gpio backend")
                continue
            check_pin(pin, name)
            if pin in seen:
                raise EquipmentConfigError(name, "same pin used twice by this lamp")
            seen.append(pin)
        if self.node is not None and self.backend != "fieldbus":
            raise EquipmentConfigError("node", "is for the fieldbus backend")
        within(self.pwm_frequency_hz, "pwm_frequency_hz", 1.0)
        within(self.dimming_tolerance, "dimming_tolerance", 0.01, 1.0)
        within(self.fault_delay_s, "fault_delay_s", 0.0, 86400.0)

    @property
    def node_id(self) -> str:
        """The node on the field bus (fieldbus backend)."""
        return self.node or self.device_id

    @classmethod
    def from_mapping(cls, mapping: object, field_prefix: str) -> LampConfig:
        """Validate one ``[[lamps]]`` entry; EquipmentConfigError naming the field."""
        return convert(mapping, cls, at=field_prefix, error=EquipmentConfigError)


__all__ = ["BACKENDS", "NORMALLY_CLOSED", "NORMALLY_OPEN", "PINS", "RELAY_WIRINGS", "LampConfig"]
