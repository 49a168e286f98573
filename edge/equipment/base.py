"""What every kind of equipment shares: how it reports events and state to the agent.

Each kind (``lamp``, ``bollard``, ``signal``, ``cabinet``) has its own module with a small
driver protocol, a gpiozero backend and a simulated backend, and a controller that applies
the schedule engine's decisions. Controllers report through an :class:`EventSink` and expose
their current state as a ``DeviceState`` protobuf message; the agent records the events in
its outbox and batches the states to the orchestrator.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


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


class EquipmentConfigError(EquipmentError):
    """An equipment entry of the agent configuration is invalid.

    Attributes:
        field: path of the offending field, e.g. ``equipment.lamps[3].pwm_pin``.
        reason: why it is refused.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
