"""What the agent holds of every piece of equipment: one device protocol.

Whatever its kind (lamp, bollard, signal, cabinet) and its backend (gpio, simulated, the
field bus), a device is something the agent can name, run under its supervisor, ask for a
state snapshot, put in its safe state and release. The agent keeps one list of them
(built by :mod:`edge.equipment.registry`) and never a loop or a cache per kind for what
they have in common; what only one kind does (a lamp's level, a bollard's access list, a
signal's plans) stays on that kind's controller.
"""

from __future__ import annotations

from typing import Protocol, TypeAlias

from protos.ondijon.v1 import schedule_pb2, state_pb2

DeviceKindValue: TypeAlias = schedule_pb2.DeviceKind.ValueType

LAMP = schedule_pb2.DEVICE_KIND_LAMP
BOLLARD = schedule_pb2.DEVICE_KIND_BOLLARD
SIGNAL = schedule_pb2.DEVICE_KIND_SIGNAL
CABINET = schedule_pb2.DEVICE_KIND_CABINET


class Device(Protocol):
    """One piece of equipment, as the agent and its supervisor see it."""

    @property
    def device_id(self) -> str:
        """Its id on the gateway (what events, states and alarms name)."""
        ...

    @property
    def kind(self) -> DeviceKindValue:
        """Lamp, bollard, signal or cabinet (``schedule_pb2.DeviceKind``)."""
        ...

    async def run(self) -> None:
        """Its own work (pin watching, timers, polling) until cancelled; run by the
        agent's supervisor, which calls :meth:`fail_safe` and restarts it if it raises."""
        ...

    async def fail_safe(self) -> None:
        """Put the outputs in their safe state (motors off, flashing amber, lamp at its
        default level); must not raise for a backend that no longer answers."""
        ...

    def state(self) -> state_pb2.DeviceState:
        """Its state as last observed, for the orchestrator."""
        ...

    def close(self) -> None:
        """Release the backend (pins, links)."""
        ...


class Bus(Protocol):
    """A connection several devices share (a field bus): run and closed once, by name."""

    @property
    def name(self) -> str:
        """What an alarm about it names (``fieldbus``)."""
        ...

    async def run(self) -> None:
        """Keep the connection until cancelled (reconnecting on its own)."""
        ...

    def schedule_changed(self) -> None:
        """The schedule in force changed (what its devices carry may follow it)."""
        ...

    def clock_stepped(self) -> None:
        """The wall clock stepped (what its devices carry from it may need recomputing)."""
        ...

    def close(self) -> None:
        """Release it."""
        ...


__all__ = ["BOLLARD", "CABINET", "LAMP", "SIGNAL", "Bus", "Device", "DeviceKindValue"]
