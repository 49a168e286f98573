"""Metering and lamp faults from the power the node measures, with no I/O.

The board measures power (current sense times mains voltage); this integrates it into
energy and judges it against what the lamp should draw at its level:

- ``lamp``: on (level > 0) but drawing under :data:`OUT_FRACTION` of the expected power
  plus standby: the lamp or its wiring is out;
- ``driver``: drawing over :data:`OVER_FRACTION` of the lamp's nominal power: a driver
  fault that can burn out the luminaire.

A fault is reported once it has held for :data:`CONFIRM_MS` (a driver ramps up after a
level change, and one noisy reading is not a failure), and cleared at the first reading
without it.
"""

from edge.node.bus import FAULT_DRIVER, FAULT_LAMP

OUT_FRACTION = 0.25
OVER_FRACTION = 1.5
STANDBY_W = 1.0
CONFIRM_MS = 2000


class Meter:
    """Energy since boot and the confirmed power faults of one lamp of ``nominal_w``."""

    def __init__(self, nominal_w: float) -> None:
        self.nominal_w = nominal_w
        self.power_w = 0.0
        self.faults: tuple[str, ...] = ()
        self._energy_mw_ms = 0  # integers: a float sum of a year of readings drifts
        self._seen_ms: dict[str, int] = {}

    @property
    def energy_wh(self) -> int:
        return self._energy_mw_ms // 3600000000

    def measure(self, power_w: float, elapsed_ms: int, level: int) -> None:
        """A new reading ``power_w`` at ``level``, ``elapsed_ms`` after the previous one."""
        # Rectangle rule on the previous reading: readings come at every poll.
        self._energy_mw_ms += int(self.power_w * 1000) * elapsed_ms
        self.power_w = power_w
        present = []
        if level > 0 and power_w < STANDBY_W + OUT_FRACTION * self.nominal_w * level / 100:
            present.append(FAULT_LAMP)
        if power_w > OVER_FRACTION * self.nominal_w:
            present.append(FAULT_DRIVER)
        seen = {}
        for code in present:
            seen[code] = self._seen_ms.get(code, -elapsed_ms) + elapsed_ms
        self._seen_ms = seen
        self.faults = tuple(code for code in present if seen[code] >= CONFIRM_MS)
