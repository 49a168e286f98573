"""The bench inventory: what is wired to which pin, as a TOML file checked before anything runs.

One file (``examples/bench.toml``) says, for a bench or a cabinet under qualification,
which GPIO carries each line of each piece of equipment: a lamp's relay, dimming and
current-sense lines; a bollard's motors, warning light, limit switches, vehicle loop and
its detector's fault output, pressure edge and emergency input; a crossing's signal heads
and its controller's alive line; the cabinet's door switch and mains sense; and the bench's
own probes (``[[loopback]]``: a bench input wired to an equipment line, read back as a
multimeter would). The same file drives the simulated street on gpiozero's mock pins
(:mod:`edge.bench.street`, with the physics of each device under ``sim`` keys) and the
agent's configuration on real pins (:func:`agent_equipment`).

It is read with the schema library of every other configuration file
(:mod:`foundation.settings`): unknown keys refused, every value typed, and each error names
the key path and the reason (``bollards[0].loop: pin GPIO19 is already used by
lamps[1].sense``). A pin is written as a BCM number (``17``), a name (``"GPIO17"``,
``"BCM17"``) or a header position (``"BOARD11"``); all three are brought to the BCM name
before the check, so one GPIO named two ways is still refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from edge.equipment.signal.config import SafetyCardConfig
from foundation.settings import ConfigError, Settings, load

Pin = int | str

#: The GPIOs of the Raspberry Pi's 40-pin header, by header position (BOARD numbering).
BOARD_TO_BCM = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10,
    21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19,
    36: 16, 37: 26, 38: 20, 40: 21,
}  # fmt: skip
HEADER_GPIOS = range(28)
_NAME = re.compile(r"(GPIO|BCM|BOARD)0*(\d+)")
_PIN_REASON = "must be a GPIO of the 40-pin header: 0..27, 'GPIO17', 'BCM17' or 'BOARD11'"


def canonical_pin(value: object) -> str:
    """The BCM name (``"GPIO17"``) of a pin written any way the inventory allows.

    Raises:
        ValueError: (the reason) a value that names no GPIO of the header.
    """
    if isinstance(value, bool):
        raise ValueError(_PIN_REASON)
    if isinstance(value, int):
        if value not in HEADER_GPIOS:
            raise ValueError(_PIN_REASON)
        return f"GPIO{value}"
    if not isinstance(value, str):
        raise ValueError(_PIN_REASON)
    match = _NAME.fullmatch(value.strip().upper())
    if match is None:
        raise ValueError(_PIN_REASON)
    number = int(match.group(2))
    if match.group(1) == "BOARD":
        if number not in BOARD_TO_BCM:
            raise ValueError(f"header position {number} is not a GPIO (power, ground or ID EEPROM)")
        number = BOARD_TO_BCM[number]
    if number not in HEADER_GPIOS:
        raise ValueError(_PIN_REASON)
    return f"GPIO{number}"


def _positive(value: float, at: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(at, "must be a positive number")


class BenchInfo(Settings, frozen=True):
    """``[bench]``: the rig's name and the lock file that keeps it to one run at a time."""

    name: str
    lock_file: str = "/tmp/ondijon_hil_lock"  # noqa: S108 (gpiozero's own tests do the same)
    lock_wait_s: float = 300.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.name.strip():
            raise ConfigError("name", "must be a non-empty name")
        if not self.lock_file.strip():
            raise ConfigError("lock_file", "must be a path")
        if self.lock_wait_s < 0:
            raise ConfigError("lock_wait_s", "must not be negative")


class LanternSim(Settings, frozen=True):
    """The simulated lantern's physics: full power after ``warm_up_s`` from the relay closing."""

    warm_up_s: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.warm_up_s < 0:
            raise ConfigError("warm_up_s", "must not be negative")


class LampWiring(Settings, frozen=True):
    """A lamp: relay coil output, dimming (PWM) output, current-sense input."""

    id: str
    relay: Pin
    pwm: Pin
    sense: Pin
    relay_wiring: Literal["normally_closed", "normally_open"] = "normally_closed"
    relay_active_high: bool = True
    nominal_power_w: float = 60.0
    sim: LanternSim = LanternSim()

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self.nominal_power_w, "nominal_power_w")


class BollardSim(Settings, frozen=True):
    """The simulated post's physics: travel times (the configured ones unless given)."""

    rise_s: float | None = None
    lower_s: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("rise_s", "lower_s"):
            value = getattr(self, name)
            if value is not None:
                _positive(value, name)


class BollardWiring(Settings, frozen=True):
    """A retractable bollard: motors and warning light out; switches, loop, edge, key in."""

    id: str
    motor_up: Pin
    motor_down: Pin
    warning_light: Pin
    up_limit: Pin
    down_limit: Pin
    loop: Pin
    edge: Pin
    emergency: Pin
    loop_fault: Pin | None = None
    reset: Pin | None = None
    inputs_pull_up: bool = True
    warning_s: float = 1.0
    rise_s: float = 3.0
    lower_s: float = 3.0
    sim: BollardSim = BollardSim()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.warning_s < 1.0:
            raise ConfigError("warning_s", "must be at least 1 s (the warning before a rise)")
        _positive(self.rise_s, "rise_s")
        _positive(self.lower_s, "lower_s")


class HeadWiring(Settings, frozen=True):
    """A signal group's lamps; a pedestrian head has no amber."""

    red: Pin
    green: Pin
    amber: Pin | None = None


class CrossingWiring(Settings, frozen=True):
    """A signalised crossing: the heads, the controller's alive line, its monitor's card.

    ``conflicts`` is the conflict monitor's own list (the controller's compatibility card);
    ``safety_card`` the agent's, fixed at commissioning.
    """

    id: str
    heads: dict[str, HeadWiring]
    conflicts: list[tuple[str, str]]
    safety_card: SafetyCardConfig
    alive: Pin | None = None
    watchdog_s: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.heads:
            raise ConfigError("heads", "needs at least one signal group")
        for i, (a, b) in enumerate(self.conflicts):
            if a == b:
                raise ConfigError(f"conflicts[{i}]", "must be two different groups")
            for group in (a, b):
                if group not in self.heads:
                    raise ConfigError(f"conflicts[{i}]", f"names {group!r}, which has no head")
        if set(self.safety_card.groups) != set(self.heads):
            raise ConfigError("safety_card.groups", "must list exactly the groups with heads")
        _positive(self.watchdog_s, "watchdog_s")


class CabinetWiring(Settings, frozen=True):
    """The cabinet: door switch (high while open) and mains sense (high while present)."""

    door: Pin
    mains: Pin
    id: str = "cabinet"


class Loopback(Settings, frozen=True):
    """A bench input wired to an equipment line (``to = "lamps.lamp-1.relay"``): a probe."""

    pin: Pin
    to: str


class Inventory(Settings, frozen=True):
    """A bench inventory file (see the module's docstring)."""

    bench: BenchInfo
    lamps: list[LampWiring] = []
    bollards: list[BollardWiring] = []
    crossings: list[CrossingWiring] = []
    cabinet: CabinetWiring | None = None
    loopback: list[Loopback] = []

    def __post_init__(self) -> None:
        super().__post_init__()
        seen_ids: dict[str, str] = {}
        ids = [(f"lamps[{i}]", e.id) for i, e in enumerate(self.lamps)]
        ids += [(f"bollards[{i}]", e.id) for i, e in enumerate(self.bollards)]
        ids += [(f"crossings[{i}]", e.id) for i, e in enumerate(self.crossings)]
        for at, device_id in ids:
            if not device_id.strip():
                raise ConfigError(f"{at}.id", "must be a non-empty id")
            if device_id in seen_ids:
                raise ConfigError(
                    f"{at}.id", f"{device_id!r} is already the id of {seen_ids[device_id]}"
                )
            seen_ids[device_id] = at
        used: dict[str, str] = {}
        for at, value in self._raw_pins():
            try:
                name = canonical_pin(value)
            except ValueError as exc:
                raise ConfigError(at, str(exc)) from None
            if name in used:
                raise ConfigError(at, f"pin {name} is already used by {used[name]}")
            used[name] = at
        lines = dict(self.lines())
        for i, probe in enumerate(self.loopback):
            if probe.to not in lines:
                raise ConfigError(
                    f"loopback[{i}].to",
                    f"names no line of the inventory ({probe.to!r}; e.g. 'lamps.<id>.relay')",
                )

    def _raw_pins(self) -> Iterator[tuple[str, object]]:
        for i, lamp in enumerate(self.lamps):
            for key in ("relay", "pwm", "sense"):
                yield f"lamps[{i}].{key}", getattr(lamp, key)
        for i, bollard in enumerate(self.bollards):
            for key in BOLLARD_LINES:
                value = getattr(bollard, key)
                if value is not None:
                    yield f"bollards[{i}].{key}", value
        for i, crossing in enumerate(self.crossings):
            for group, head in crossing.heads.items():
                for key in ("red", "amber", "green"):
                    value = getattr(head, key)
                    if value is not None:
                        yield f"crossings[{i}].heads.{group}.{key}", value
            if crossing.alive is not None:
                yield f"crossings[{i}].alive", crossing.alive
        if self.cabinet is not None:
            yield "cabinet.door", self.cabinet.door
            yield "cabinet.mains", self.cabinet.mains
        for i, probe in enumerate(self.loopback):
            yield f"loopback[{i}].pin", probe.pin

    def lines(self) -> Iterator[tuple[str, str]]:
        """Every equipment line by name (``lamps.lamp-1.relay``) with its BCM pin name.

        Names: ``lamps.<id>.{relay,pwm,sense}``, ``bollards.<id>.<line>``,
        ``crossings.<id>.<group>.{red,amber,green}``, ``crossings.<id>.alive``,
        ``cabinet.{door,mains}`` (the bench's probes are not lines).
        """
        for lamp in self.lamps:
            for key in ("relay", "pwm", "sense"):
                yield f"lamps.{lamp.id}.{key}", canonical_pin(getattr(lamp, key))
        for bollard in self.bollards:
            for key in BOLLARD_LINES:
                value = getattr(bollard, key)
                if value is not None:
                    yield f"bollards.{bollard.id}.{key}", canonical_pin(value)
        for crossing in self.crossings:
            for group, head in crossing.heads.items():
                for key in ("red", "amber", "green"):
                    value = getattr(head, key)
                    if value is not None:
                        yield f"crossings.{crossing.id}.{group}.{key}", canonical_pin(value)
            if crossing.alive is not None:
                yield f"crossings.{crossing.id}.alive", canonical_pin(crossing.alive)
        if self.cabinet is not None:
            yield "cabinet.door", canonical_pin(self.cabinet.door)
            yield "cabinet.mains", canonical_pin(self.cabinet.mains)

    def pin(self, line: str) -> str:
        """The BCM pin name of ``line`` (see :meth:`lines`); KeyError naming it if unknown."""
        for name, pin in self.lines():
            if name == line:
                return pin
        raise KeyError(f"no line {line!r} in the bench inventory")

    def line_of(self, pin: str) -> str:
        """The line (or ``loopback[i]``) wired to BCM pin ``pin``; the pin itself if none."""
        for name, wired in self.lines():
            if wired == pin:
                return name
        for i, probe in enumerate(self.loopback):
            if canonical_pin(probe.pin) == pin:
                return f"loopback[{i}]:{probe.to}"
        return pin

    def probe(self, line: str) -> str | None:
        """The bench input wired to ``line``, None when no loop-back reads it."""
        for probe in self.loopback:
            if probe.to == line:
                return canonical_pin(probe.pin)
        return None


BOLLARD_LINES = (
    "motor_up",
    "motor_down",
    "warning_light",
    "up_limit",
    "down_limit",
    "loop",
    "edge",
    "emergency",
    "loop_fault",
    "reset",
)


def load_inventory(path: Path) -> Inventory:
    """The inventory file at ``path``.

    Raises:
        ConfigError: naming the key path and the reason (nothing is opened before).
    """
    return load(path, Inventory)


def agent_equipment(inventory: Inventory) -> dict[str, Any]:
    """The agent configuration's equipment tables for the wired equipment of ``inventory``.

    Lamps, bollards and the cabinet on the ``gpio`` backend with the inventory's pins; a
    crossing on the ``simulated`` backend (the controller with its own conflict monitor,
    its heads on the inventory's pins). Merge it into an agent configuration (``[gateway]``,
    ``[orchestrator]``, ``[site]``, ...).
    """
    tables: dict[str, Any] = {}
    tables["lamps"] = [
        {
            "id": lamp.id,
            "backend": "gpio",
            "nominal_power_w": lamp.nominal_power_w,
            "relay_pin": canonical_pin(lamp.relay),
            "pwm_pin": canonical_pin(lamp.pwm),
            "sense_pin": canonical_pin(lamp.sense),
            "relay_wiring": lamp.relay_wiring,
            "relay_active_high": lamp.relay_active_high,
        }
        for lamp in inventory.lamps
    ]
    bollards = []
    for bollard in inventory.bollards:
        table: dict[str, Any] = {
            "id": bollard.id,
            "backend": "gpio",
            "inputs_pull_up": bollard.inputs_pull_up,
            "warning_s": bollard.warning_s,
            "rise_s": bollard.rise_s,
            "lower_s": bollard.lower_s,
        }
        for key in BOLLARD_LINES:
            value = getattr(bollard, key)
            if value is not None:
                table[f"{key}_pin"] = canonical_pin(value)
        bollards.append(table)
    tables["bollards"] = bollards
    signals = []
    for crossing in inventory.crossings:
        card = crossing.safety_card
        heads = {
            group: {
                key: canonical_pin(getattr(head, key))
                for key in ("red", "amber", "green")
                if getattr(head, key) is not None
            }
            for group, head in crossing.heads.items()
        }
        signals.append(
            {
                "id": crossing.id,
                "backend": "simulated",
                "safety_card": {
                    "groups": list(card.groups),
                    "min_green_s": card.min_green_s,
                    "intergreens": [list(i) for i in card.intergreens],
                    "min_amber_s": card.min_amber_s,
                    "min_all_red_s": card.min_all_red_s,
                },
                "simulated": {
                    "heads": heads,
                    "conflicts": [list(pair) for pair in crossing.conflicts],
                    "watchdog_s": crossing.watchdog_s,
                },
            }
        )
    tables["signals"] = signals
    if inventory.cabinet is not None:
        tables["cabinet"] = {
            "id": inventory.cabinet.id,
            "backend": "gpio",
            "door_pin": canonical_pin(inventory.cabinet.door),
            "mains_pin": canonical_pin(inventory.cabinet.mains),
        }
    return {k: v for k, v in tables.items() if v}


def to_toml(data: Mapping[str, Any]) -> str:
    """``data`` (tables of strings, numbers, booleans, lists and tables) as TOML text.

    Enough for an agent configuration: the standard library reads TOML but does not write it.
    """
    lines: list[str] = []
    _table(data, [], lines)
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("TOML numbers here must be finite")
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped)
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _value(key)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _table(data: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    nested = []
    for key, value in data.items():
        if isinstance(value, Mapping) or _is_table_array(value):
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in nested:
        full = [*path, _key(key)]
        if isinstance(value, Mapping):
            lines.append(f"\n[{'.'.join(full)}]")
            _table(value, full, lines)
        else:
            for entry in value:
                lines.append(f"\n[[{'.'.join(full)}]]")
                _table(entry, full, lines)


def subset(inventory: Inventory, kinds: Sequence[str]) -> Inventory:
    """``inventory`` with only the equipment of ``kinds`` (``lamps``, ``bollards``,
    ``crossings``, ``cabinet``): a scenario opens what it exercises, nothing else."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"kinds: no {sorted(unknown)}; one of {', '.join(KINDS)}")
    kept: Inventory = msgspec.structs.replace(
        inventory,
        lamps=inventory.lamps if "lamps" in kinds else [],
        bollards=inventory.bollards if "bollards" in kinds else [],
        crossings=inventory.crossings if "crossings" in kinds else [],
        cabinet=inventory.cabinet if "cabinet" in kinds else None,
        loopback=[p for p in inventory.loopback if p.to.split(".")[0] in kinds],
    )
    return kept


KINDS = ("lamps", "bollards", "crossings", "cabinet")
