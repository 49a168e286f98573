"""A bollard's table of the agent configuration (``[[bollards]]``): pins, wiring, limits.

Read by :meth:`BollardConfig.from_mapping` (every key known, every value checked, errors
naming the field); the limits are checked by building the rules they configure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from edge.equipment.bollard.rules import MIN_WARNING_S, BollardError, BollardRules
from edge.events import EquipmentConfigError

PinName = int | str

BACKENDS = ("gpio", "simulated")
OUTPUT_PINS = ("motor_up_pin", "motor_down_pin", "warning_light_pin")
INPUT_PINS = ("up_limit_pin", "down_limit_pin", "loop_pin", "edge_pin", "emergency_pin")
#: Inputs a cabinet may not have: the loop detector's fault output, the technician's key.
OPTIONAL_INPUT_PINS = ("loop_fault_pin", "reset_pin")
#: Inputs whose open circuit must read as the unsafe condition.
SAFETY_INPUTS = ("loop_pin", "edge_pin", "emergency_pin", "loop_fault_pin")
CONTACTS = ("normally_closed", "normally_open")


@dataclass(frozen=True)
class BollardConfig:
    """One bollard of the agent configuration.

    The default pins are the reference cabinet wiring (BCM numbers); the gpio backend still
    requires every pin to be written out, so a misspelt key never drives a default pin.

    Attributes:
        device_id: the bollard's id in the fleet.
        backend: ``"gpio"`` (gpiozero, any pin factory) or ``"simulated"``.
        inputs_pull_up: inputs are switches to ground (a closed contact reads low) when
            true, switches to the supply when false.
        safety_contacts: ``"normally_closed"`` (fail-safe: an open circuit reads occupied,
            obstructed, emergency) or ``"normally_open"`` (needs ``supervised_wiring``).
        supervised_wiring: the installer's statement that the safety circuits are
            supervised otherwise, which alone allows normally-open safety contacts.
        loop_fault_pin: the loop detector's fault output (closed while healthy), if wired.
        reset_pin: the technician's reset key switch on site (normally open), if wired.
        warning_s: light-on time before a rise (at least 1 s).
        travel_timeout_s: longest travel between limit switches before a fault.
        max_reversals: reversals in a row that lock the bollard down.
        retry_pause_s: pause down after a reversal before the next rise.
        rise_s: nominal time of a full rise (the height estimate, see the rules).
        lower_s: nominal time of a full lowering.
        passage_s: how long a granted identifier keeps the bollard down.
        field_prefix: where the entry sits in the configuration, for error messages.
    """

    device_id: str
    backend: str = "gpio"
    motor_up_pin: PinName = 17
    motor_down_pin: PinName = 27
    warning_light_pin: PinName = 22
    up_limit_pin: PinName = 5
    down_limit_pin: PinName = 6
    loop_pin: PinName = 13
    edge_pin: PinName = 19
    emergency_pin: PinName = 26
    loop_fault_pin: PinName | None = None
    reset_pin: PinName | None = None
    inputs_pull_up: bool = True
    safety_contacts: str = "normally_closed"
    supervised_wiring: bool = False
    warning_s: float = MIN_WARNING_S
    travel_timeout_s: float = 8.0
    max_reversals: int = 3
    retry_pause_s: float = 3.0
    rise_s: float = 3.0
    lower_s: float = 2.0
    passage_s: float = 20.0
    field_prefix: str = ""

    def __post_init__(self) -> None:
        if self.safety_contacts not in CONTACTS:
            raise EquipmentConfigError(
                self.field("safety_contacts"), f"must be one of {', '.join(CONTACTS)}"
            )
        if self.safety_contacts == "normally_open" and not self.supervised_wiring:
            raise EquipmentConfigError(
                self.field("safety_contacts"),
                "normally_open makes a cut loop, edge or emergency wire read clear;"
                " wire normally-closed contacts, or set supervised_wiring = true if those"
                " circuits are supervised otherwise (see SAFETY.md)",
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], field_prefix: str) -> BollardConfig:
        """Read and validate a configuration entry (e.g. a TOML table).

        Args:
            mapping: the entry's keys and values.
            field_prefix: its path, e.g. ``equipment.bollards[0]``.

        Raises:
            EquipmentConfigError: naming the first offending field and why.
        """
        # ``id`` like every other equipment table; the rest are the dataclass's fields.
        known = {f.name for f in fields(cls)} - {"field_prefix", "device_id"} | {"id"}

        def path(name: str) -> str:
            return f"{field_prefix}.{name}" if field_prefix else name

        for key in mapping:
            if key not in known:
                raise EquipmentConfigError(path(str(key)), "unknown key")
        values: dict[str, Any] = {}
        device_id = mapping.get("id")
        if not isinstance(device_id, str) or not device_id.strip():
            raise EquipmentConfigError(path("id"), "must be a non-empty string")
        values["device_id"] = device_id
        backend = mapping.get("backend", "gpio")
        if backend not in BACKENDS:
            raise EquipmentConfigError(path("backend"), f"must be one of {', '.join(BACKENDS)}")
        values["backend"] = backend
        seen: dict[str, str] = {}
        for name in OUTPUT_PINS + INPUT_PINS + OPTIONAL_INPUT_PINS:
            if name not in mapping:
                if backend == "gpio" and name not in OPTIONAL_INPUT_PINS:
                    raise EquipmentConfigError(path(name), "required for the gpio backend")
                continue
            pin = mapping[name]
            if isinstance(pin, bool) or not isinstance(pin, int | str):
                raise EquipmentConfigError(path(name), "must be a pin number or name")
            if isinstance(pin, int) and pin < 0:
                raise EquipmentConfigError(path(name), "must not be negative")
            if isinstance(pin, str) and not pin.strip():
                raise EquipmentConfigError(path(name), "must not be empty")
            if str(pin) in seen:
                raise EquipmentConfigError(
                    path(name), f"pin {pin} already used by {seen[str(pin)]}"
                )
            seen[str(pin)] = name
            values[name] = pin
        for name in ("inputs_pull_up", "supervised_wiring"):
            if name in mapping:
                if not isinstance(mapping[name], bool):
                    raise EquipmentConfigError(path(name), "must be true or false")
                values[name] = mapping[name]
        if "safety_contacts" in mapping:
            values["safety_contacts"] = mapping["safety_contacts"]
        limits = (
            ("warning_s", MIN_WARNING_S, "must be at least 1 s"),
            ("travel_timeout_s", 0.0, "must be positive"),
            ("retry_pause_s", 0.0, "must not be negative"),
            ("rise_s", 0.0, "must be positive"),
            ("lower_s", 0.0, "must be positive"),
            ("passage_s", 0.0, "must be positive"),
        )
        for name, low, reason in limits:
            if name not in mapping:
                continue
            value = mapping[name]
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise EquipmentConfigError(path(name), "must be a number of seconds")
            strict = name in ("travel_timeout_s", "passage_s", "rise_s", "lower_s")
            if value < low or (strict and value <= low):
                raise EquipmentConfigError(path(name), reason)
            values[name] = float(value)
        if "max_reversals" in mapping:
            count = mapping["max_reversals"]
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise EquipmentConfigError(path("max_reversals"), "must be an integer >= 1")
            values["max_reversals"] = count
        config = cls(field_prefix=field_prefix, **values)
        try:
            config.rules()
        except BollardError as exc:
            name, _, reason = str(exc).partition(": ")
            raise EquipmentConfigError(path(name.split(",")[0]), reason) from exc
        return config

    def rules(self) -> BollardRules:
        """The safety rules with this bollard's limits."""
        return BollardRules(
            device_id=self.device_id,
            warning_s=self.warning_s,
            travel_timeout_s=self.travel_timeout_s,
            max_reversals=self.max_reversals,
            retry_pause_s=self.retry_pause_s,
            rise_s=self.rise_s,
            lower_s=self.lower_s,
        )

    def normally_closed(self, name: str) -> bool:
        """Whether input ``name`` reads active on an open circuit."""
        return name in SAFETY_INPUTS and self.safety_contacts == "normally_closed"

    def field(self, name: str) -> str:
        """The configuration path of one of this entry's fields."""
        return f"{self.field_prefix}.{name}" if self.field_prefix else name
