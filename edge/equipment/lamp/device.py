"""A lamp as the agent holds it: its controller, and what the agent remembers of it."""

from __future__ import annotations

import contextlib

from edge.equipment.device import LAMP, DeviceKindValue
from edge.equipment.lamp.controller import LampController, LampCounters
from protos.ondijon.v1 import state_pb2


class LampDevice:
    """One lamp (:class:`edge.equipment.device.Device`), whatever its backend.

    Attributes:
        controller: the lamp's controller (level, counters, faults).
        decided: the (level, source) last applied from the schedule; None: apply again.
        persisted: the counters as last made durable (the agent adds what grew since).
        default_level: the level its safe state lights it at (the schedule's default).
    """

    def __init__(self, controller: LampController, persisted: LampCounters) -> None:
        self.controller = controller
        self.decided: tuple[int, str] | None = None
        self.persisted = persisted
        self.default_level = 100

    @property
    def device_id(self) -> str:
        return self.controller.device_id

    @property
    def kind(self) -> DeviceKindValue:
        return LAMP

    async def run(self) -> None:
        """Nothing of its own: the schedule loop sets its level, the monitor pass checks it.

        It returns at once, which ends its task (a one-shot child of the supervisor): a task
        waiting for ever would cost ~2 KB a lamp for nothing."""

    async def fail_safe(self) -> None:
        """Lit at its default level (never dark); a backend that no longer answers is
        alarmed by the controller, not here."""
        self.decided = None
        with contextlib.suppress(Exception):
            self.controller.apply(self.default_level, "default", default_level=self.default_level)

    def state(self) -> state_pb2.DeviceState:
        return self.controller.state()

    def close(self) -> None:
        self.controller.close()
