"""Tick counters as a 32-bit MicroPython port has them, for hosts and tests.

On a board the node uses ``time.ticks_ms`` and ``time.ticks_diff``. On ESP32 and RP2040
the counter wraps at 2**30 ms (about 12.4 days) and ``ticks_diff`` is only right for
differences under half of that. The simulator and the tests use the same arithmetic here
so that wrapping is exercised off the board too.
"""

TICKS_PERIOD = 1 << 30
_HALF = TICKS_PERIOD // 2


def ticks_diff(new: int, old: int) -> int:
    """Signed milliseconds from ``old`` to ``new``, as MicroPython's ``time.ticks_diff``."""
    return ((new - old + _HALF) & (TICKS_PERIOD - 1)) - _HALF


def ticks_add(ticks: int, delta: int) -> int:
    """``ticks`` moved by ``delta`` milliseconds, wrapped like the board's counter."""
    return (ticks + delta) & (TICKS_PERIOD - 1)


class ManualTicks:
    """A tick counter that moves only when told to: :meth:`advance` milliseconds."""

    def __init__(self, start: int = 0) -> None:
        self.now = start & (TICKS_PERIOD - 1)

    def ms(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now = ticks_add(self.now, ms)
