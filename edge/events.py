"""What every kind of equipment shares: how it reports events and state to the agent.

Each kind (``lamp``, ``bollard``, ``signal``, ``cabinet``) has its own module with a small
driver protocol, a gpiozero backend and a simulated backend, and a controller that applies
the schedule engine's decisions. Controllers report through an :class:`EventSink` and expose
their current state as a ``DeviceState`` protobuf message; the agent records the events in
its outbox and batches the states to the orchestrator.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from foundation.settings import ConfigError


class Priority(enum.IntEnum):
    """Outbox priority: alarms go before events, events before metering."""

    ALARM = 1
    EVENT = 2
    METERING = 3


@dataclass(frozen=True)
class EquipmentEvent:
    """Something a device did or suffered, worth recording for the control centre."""

    device_id: str
    type: str
    priority: Priority
    at: datetime
    message: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


class EventSink(Protocol):
    """Where controllers send events (the agent's outbox in production, a list in tests)."""

    def __call__(self, event: EquipmentEvent, /) -> None: ...


class EquipmentError(Exception):
    """Base of equipment errors."""


class EquipmentConfigError(EquipmentError, ConfigError):
    """An equipment entry of the agent configuration is invalid.

    Attributes:
        field: path of the offending field, e.g. ``equipment.lamps[3].pwm_pin``.
        reason: why it is refused.
    """


PinSpec = int | str
"""A gpiozero pin name: a BCM number (17) or a name such as ``"GPIO17"`` or ``"BOARD11"``."""


def config_number(raw: object, field: str, low: float, high: float = math.inf) -> float:
    """A finite number from a table (persisted counters), within ``[low, high]``, else the error."""
    # bool is an int to Python but never a number in a configuration file
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise EquipmentConfigError(field, "must be a number")
    within(raw, field, low, high)
    return float(raw)


def within(value: float, field: str, low: float, high: float = math.inf) -> None:
    """Refuse an equipment setting outside ``[low, high]``, naming it."""
    if not low <= value <= high:
        bounds = f"at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
        raise EquipmentConfigError(field, f"must be {bounds}, got {value:g}")


def check_pin(value: PinSpec | None, field: str) -> None:
    """Refuse a pin number or name no gpiozero pin has, naming it."""
    if isinstance(value, int) and value < 0:
        raise EquipmentConfigError(field, "must not be negative")
    if isinstance(value, str) and not value.strip():
        raise EquipmentConfigError(field, "must not be empty")
