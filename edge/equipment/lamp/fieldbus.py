"""A lamp whose luminaire has its own MicroPython node on the cabinet's field bus.

:class:`FieldbusLamp` is a :class:`~edge.equipment.lamp.controller.LampDriver` over
:class:`edge.fieldbus.gateway.FieldBus`: driving it sends the node a command, reading it
reads the node's last valid state. The lamp controller above it is the wired lamps' one,
so schedules, overrides, faults, alarms and metering work the same:

- ``drive(relay_on, duty)`` commands the level ``round(duty * 100)`` (at least 1 when on);
- ``read()`` gives current when the node drives a level above 0 without its ``lamp``
  fault, and the power it measures; a ``driver`` fault (over-current) or a node whose
  will said it is gone reads as a backend error (``driver_failure``);
- before the node's first state, for at most ``first_report_s``, it reads as not
  reported (:class:`~edge.equipment.lamp.controller.LampNotReported`: not lit, no power,
  no fault judged); after that, silence is a backend error too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.equipment.lamp.controller import LampDriverError, LampNotReported, LampReading
from edge.node import bus
from foundation.clock import Clock

if TYPE_CHECKING:
    from edge.fieldbus.gateway import FieldBus

FIRST_REPORT_S = 600.0


class FieldbusLamp:
    """Node ``node`` of ``fieldbus``, as a lamp backend."""

    def __init__(
        self, fieldbus: FieldBus, node: str, *, clock: Clock, first_report_s: float = FIRST_REPORT_S
    ) -> None:
        self._bus = fieldbus
        self._node = node
        self._clock = clock
        self._first_report_s = first_report_s
        self._since = clock.monotonic()  # a wall-clock step must not shorten the wait

    def drive(self, relay_on: bool, duty: float) -> None:
        level = max(1, min(100, round(duty * 100))) if relay_on else 0
        self._bus.command(self._node, level)

    def read(self) -> LampReading:
        entry = self._bus.node(self._node)
        if entry.up is False:
            raise LampDriverError(f"node {self._node} is gone (its last will)")
        state = entry.state
        if state is None:
            waited = self._clock.monotonic() - self._since
            if waited > self._first_report_s:
                raise LampDriverError(f"node {self._node} has not reported in {waited:.0f} s")
            raise LampNotReported(f"node {self._node} has not reported yet")
        if bus.FAULT_DRIVER in state.faults:
            raise LampDriverError(f"node {self._node} reports a driver fault (over-current)")
        lit = state.level > 0 and bus.FAULT_LAMP not in state.faults
        return LampReading(current=lit, power_w=state.power_w)

    def close(self) -> None:
        """The bus is the agent's, closed with it."""
