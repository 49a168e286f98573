"""A signal controller's table of the agent configuration (``[[signals]]``), as a schema.

Keys: ``id``, ``backend`` ("simulated" or "gpio"), ``poll_interval_s``, the crossing's
``safety_card`` table (required, see :mod:`domain.signals.safety_card`), a ``bus_priority``
table (``max_requests``, ``window_s``, ``expiry_s``) and a table named after the backend:
``simulated`` (``watchdog_s``, ``conflicts`` as ``[["a", "b"], ...]``, ``heads.<group>``
with ``red``, ``amber``, ``green``) or ``gpio`` (the fields of :class:`GpioBackendConfig`,
``plans`` for its plan numbers). The simulator's conflict monitor uses the safety card's
conflicts unless ``simulated.conflicts`` lists its own.

Every key is known (a misspelt ``poll_intervall_s`` is refused, never a silent default),
every value typed; errors name the field, e.g. ``signals[0].gpio.flash_pin``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from domain.signals.plans import MIN_ALL_RED_S, MIN_VEHICLE_AMBER_S, Intergreen, SignalPlanError
from domain.signals.safety_card import SafetyCard
from edge.equipment.signal.bus_priority import BusPriorityLimits
from edge.events import EquipmentConfigError
from foundation.settings import ConfigError, Settings, convert

Pin = int | str
_PIN_REASON = "must be a GPIO number or a pin name like 'GPIO17'"


def _check_pin(value: Pin | None, at: str) -> None:
    if value is None:
        return
    if (isinstance(value, int) and value < 0) or (isinstance(value, str) and not value):
        raise ConfigError(at, _PIN_REASON)


def _no_shared_pins(pins: Mapping[str, Pin | None]) -> None:
    seen: dict[str, str] = {}
    for at, pin in pins.items():
        if pin is None:
            continue
        key = f"GPIO{pin}" if isinstance(pin, int) else pin.upper()
        if key in seen:
            raise ConfigError(at, f"pin {pin} is already used by {seen[key]}")
        seen[key] = at


def _check_conflicts(
    conflicts: tuple[tuple[str, str], ...], heads: Mapping[str, object], at: str
) -> None:
    for i, pair in enumerate(conflicts):
        if pair[0] == pair[1]:
            raise ConfigError(f"{at}[{i}]", "must be two different group ids")
        for group in pair:
            if group not in heads:
                raise ConfigError(f"{at}[{i}]", f"unknown group {group!r}: no heads configured")


class HeadPins(Settings, frozen=True):
    """Lamp outputs of one group's heads; pedestrian heads have no amber lamp."""

    red: Pin
    green: Pin
    amber: Pin | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("red", "amber", "green"):
            _check_pin(getattr(self, name), name)


class SimulatedBackendConfig(Settings, frozen=True):
    """The simulator: lamp pins per group and the conflict monitor's own conflict list.

    ``conflicts`` left out of the table: the safety card's (set by :class:`SignalConfig`).
    """

    heads: dict[str, HeadPins] = {}
    conflicts: tuple[tuple[str, str], ...] | None = None
    watchdog_s: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.heads:
            raise ConfigError("heads", "needs at least one group")
        used: dict[str, Pin | None] = {}
        for group, head in self.heads.items():
            used.update({f"heads.{group}.{k}": getattr(head, k) for k in ("red", "amber", "green")})
        _no_shared_pins(used)
        _check_conflicts(self.conflicts or (), self.heads, "conflicts")
        if self.watchdog_s <= 0:
            raise ConfigError("watchdog_s", "must be positive")


class GpioBackendConfig(Settings, frozen=True):
    """A controller driven by contacts.

    Attributes:
        plan_pins: plan-select outputs, least significant bit first.
        plan_numbers: plan id -> number put on ``plan_pins`` (1 .. 2**len - 1); ``plans``
            in the file.
        flash_pin: output forcing flashing amber.
        dark_pin: output forcing the lamps off.
        fault_pin: input, high when the conflict monitor tripped.
        door_pin: input, high when the cabinet door is open.
        alive_pin: input, high while the controller runs (no pin: assumed alive).
        heartbeat_pin: output toggled on every heartbeat (the controller's watchdog).
        priority_pins: approach -> output held high while a bus request lives.
    """

    plan_pins: tuple[Pin, ...]
    plan_numbers: dict[str, int] = msgspec.field(name="plans")
    flash_pin: Pin
    dark_pin: Pin | None = None
    fault_pin: Pin | None = None
    door_pin: Pin | None = None
    alive_pin: Pin | None = None
    heartbeat_pin: Pin | None = None
    priority_pins: dict[str, Pin] = {}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.plan_pins:
            raise ConfigError("plan_pins", "must be a non-empty list of pins")
        for i, pin in enumerate(self.plan_pins):
            _check_pin(pin, f"plan_pins[{i}]")
        if not self.plan_numbers:
            raise ConfigError("plans", "must map at least one plan id to a number")
        top = 2 ** len(self.plan_pins) - 1
        for plan_id, number in self.plan_numbers.items():
            if not 1 <= number <= top:
                raise ConfigError(f"plans.{plan_id}", f"must be a whole number in 1..{top}")
        used: dict[str, Pin | None] = {}
        used.update({f"plan_pins[{i}]": p for i, p in enumerate(self.plan_pins)})
        for name in ("flash_pin", "dark_pin", "fault_pin", "door_pin", "alive_pin"):
            used[name] = getattr(self, name)
        used["heartbeat_pin"] = self.heartbeat_pin
        used.update({f"priority_pins.{a}": p for a, p in self.priority_pins.items()})
        for at, wired in used.items():
            _check_pin(wired, at)
        _no_shared_pins(used)


class SafetyCardConfig(Settings, frozen=True):
    """The ``safety_card`` table: the crossing's conflicts and minimum times."""

    groups: list[str]
    min_green_s: int | dict[str, int]
    intergreens: list[tuple[str, str, int]] = []
    min_amber_s: int = MIN_VEHICLE_AMBER_S
    min_all_red_s: int = MIN_ALL_RED_S

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.groups:
            raise ConfigError("groups", "must list the crossing's groups")
        if not all(self.groups):
            raise ConfigError("groups", "must be non-empty group ids")
        whole = "must be a whole number of seconds"
        greens = self.min_green_s if isinstance(self.min_green_s, dict) else {}
        for group, seconds in greens.items():
            if seconds < 0:
                raise ConfigError(f"min_green_s.{group}", whole)
        if isinstance(self.min_green_s, int) and self.min_green_s < 0:
            raise ConfigError("min_green_s", whole)
        for i, (_, _, seconds) in enumerate(self.intergreens):
            if seconds < 0:
                raise ConfigError(f"intergreens[{i}]", whole)
        for name in ("min_amber_s", "min_all_red_s"):
            if getattr(self, name) < 0:
                raise ConfigError(name, whole)
        self.card()  # the card's own checks, naming the field

    def card(self) -> SafetyCard:
        """The card this table describes."""
        if isinstance(self.min_green_s, dict):
            min_green = dict(self.min_green_s)
        else:
            min_green = {g: self.min_green_s for g in self.groups}
        try:
            return SafetyCard(
                groups=tuple(self.groups),
                intergreens=tuple(Intergreen(a, b, s) for a, b, s in self.intergreens),
                min_green_s=min_green,
                min_amber_s=self.min_amber_s,
                min_all_red_s=self.min_all_red_s,
            )
        except SignalPlanError as exc:
            raise ConfigError(exc.field.removeprefix("safety_card."), exc.reason) from None

    @classmethod
    def from_mapping(cls, mapping: object, field_prefix: str) -> SafetyCardConfig:
        """Validate a ``safety_card`` table; EquipmentConfigError naming the field."""
        return convert(mapping, cls, at=field_prefix, error=EquipmentConfigError)


class BusPriorityConfig(Settings, frozen=True):
    """The ``bus_priority`` table (see :class:`BusPriorityLimits`)."""

    max_requests: int = 3
    window_s: float = 120.0
    expiry_s: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.limits()

    def limits(self) -> BusPriorityLimits:
        try:
            return BusPriorityLimits(self.max_requests, self.window_s, self.expiry_s)
        except ConfigError as exc:
            raise ConfigError(exc.field.removeprefix("bus_priority."), exc.reason) from None


class SignalConfig(Settings, frozen=True):
    """One signal controller entry of the agent configuration."""

    device_id: str = msgspec.field(name="id")
    backend: Literal["simulated", "gpio"]
    card_table: SafetyCardConfig | None = msgspec.field(name="safety_card", default=None)
    simulated: SimulatedBackendConfig | None = None
    gpio: GpioBackendConfig | None = None
    priority_table: BusPriorityConfig = msgspec.field(
        name="bus_priority", default_factory=BusPriorityConfig
    )
    poll_interval_s: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.device_id:
            raise ConfigError("id", "must be a non-empty string")
        if self.card_table is None:
            raise ConfigError(
                "safety_card",
                "required: the crossing's conflicts and minimum times from commissioning",
            )
        if self.poll_interval_s <= 0:
            raise ConfigError("poll_interval_s", "must be positive")
        if self.backend == "simulated":
            if self.simulated is None:
                raise ConfigError("simulated.heads", "needs at least one group")
            if self.simulated.conflicts is None:
                conflicts = self.card_table.card().conflicts
                _check_conflicts(conflicts, self.simulated.heads, "simulated.conflicts")
                msgspec.structs.force_setattr(self.simulated, "conflicts", conflicts)
            if self.simulated.watchdog_s <= 2 * self.poll_interval_s:
                raise ConfigError(
                    "simulated.watchdog_s",
                    f"must exceed twice poll_interval_s ({self.poll_interval_s} s)"
                    " or the crossing flashes",
                )
        elif self.gpio is None:
            raise ConfigError("gpio.plan_pins", "must be a non-empty list of pins")

    @property
    def safety_card(self) -> SafetyCard:
        """The crossing's safety card, fixed at commissioning."""
        assert self.card_table is not None  # checked when the table was read
        return self.card_table.card()

    @property
    def bus_priority(self) -> BusPriorityLimits:
        return self.priority_table.limits()

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], field_prefix: str) -> SignalConfig:
        """Validate a ``[[signals]]`` entry; EquipmentConfigError naming the field."""
        return convert(mapping, cls, at=field_prefix, error=EquipmentConfigError)
