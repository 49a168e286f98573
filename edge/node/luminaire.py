"""What the lamp does now: the node's decision core, with no I/O.

Inputs: the gateway's heartbeats (each one says it is alive and what time it is), its
commands, the program, and the passing of time measured on the node's own tick counter.
Output: the level to drive and the mode it comes from (:func:`Luminaire.decide`).

First match wins:

1. the gateway was heard within ``fallback_ms`` and has commanded a level: that level
   (mode ``c``). So a node keeps its last commanded level through a short outage;
2. the node knows the time and its program covers it: the program's level (mode ``p``);
3. otherwise its own default level (mode ``d``), which is never 0: a node that knows
   neither its program nor the time lights rather than risks a dark street.

The time is a sensor (ARCHITECTURE.md, principle 6). The node learns it from the
heartbeats (epoch seconds, UTC) and carries it forward on its tick counter. Tick counters
wrap (every ~12.4 days on a 32-bit MicroPython port), so elapsed time is accumulated at
each call from small differences, never taken as one difference across days. A heartbeat
whose time disagrees with the carried one is a clock step: the new time wins at once.
After a reboot, before any heartbeat, the board's real-time clock is believed only if it
reads a time the stored program covers (a clock that lost power reads 2000 or 1970,
before any program), otherwise the node has no time and uses its default level.
"""

from edge.node.bus import MODE_COMMAND, MODE_DEFAULT, MODE_PROGRAM
from edge.node.program import Program

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated
    pass


class Luminaire:
    """The decision state of one lamp.

    Args:
        default_level: the node's own level when it has nothing better, 1..100.
        fallback_ms: how long the last command holds after the gateway's last heartbeat.
        ticks_diff: ``ticks_diff(new, old)`` of the tick counter in use (MicroPython's
            ``time.ticks_diff`` on a board), milliseconds.
        now_ticks: the tick counter's reading at creation.
        program: the program read back from flash, if any.
    """

    def __init__(
        self,
        default_level: int,
        fallback_ms: int,
        ticks_diff: Any,
        now_ticks: int,
        program: Program | None = None,
    ) -> None:
        if not 1 <= default_level <= 100:
            raise ValueError("default_level: must be 1..100, a fallback is never dark")
        self.default_level = default_level
        self.fallback_ms = fallback_ms
        self.program = program
        self.commanded: int | None = None
        self.command_seq = 0
        self.clock_steps = 0
        self._diff = ticks_diff
        self._last_ticks = now_ticks
        self._uptime_ms = 0
        self._silence_ms: int | None = None  # None: not heard since boot
        self._wall_ms: int | None = None  # None: no time from the gateway since boot

    def advance(self, now_ticks: int) -> int:
        """Account for the time since the previous call; returns the milliseconds elapsed."""
        elapsed: int = self._diff(now_ticks, self._last_ticks)
        if elapsed < 0:  # a tick counter does not go backwards; a bad reading adds nothing
            elapsed = 0
        self._last_ticks = now_ticks
        self._uptime_ms += elapsed
        if self._silence_ms is not None:
            self._silence_ms += elapsed
        if self._wall_ms is not None:
            self._wall_ms += elapsed
        return elapsed

    @property
    def uptime_s(self) -> int:
        return self._uptime_ms // 1000

    def heard_gateway(self, epoch_s: int, now_ticks: int, step_tolerance_s: int = 2) -> bool:
        """A heartbeat at gateway time ``epoch_s``. Returns whether the clock stepped."""
        self.advance(now_ticks)
        self._silence_ms = 0
        stepped = (
            self._wall_ms is not None
            and abs(self._wall_ms - epoch_s * 1000) > step_tolerance_s * 1000
        )
        if stepped:
            self.clock_steps += 1
        self._wall_ms = epoch_s * 1000
        return stepped

    def command(self, level: int, seq: int) -> None:
        """The gateway's command (a retained one arrives again on every reconnection)."""
        self.commanded = level
        self.command_seq = seq

    def gateway_alive(self) -> bool:
        return self._silence_ms is not None and self._silence_ms < self.fallback_ms

    def wall_s(self, rtc_epoch_s: int | None = None) -> int | None:
        """Epoch seconds now, as the node believes them, or None if it does not know."""
        if self._wall_ms is not None:
            return self._wall_ms // 1000
        if (
            rtc_epoch_s is not None
            and self.program is not None
            and self.program.covers(rtc_epoch_s)
        ):
            return rtc_epoch_s
        return None

    def decide(self, now_ticks: int, rtc_epoch_s: int | None = None) -> tuple[int, str]:
        """(level, mode) at ``now_ticks``; ``rtc_epoch_s`` is the board's clock, if any."""
        self.advance(now_ticks)
        if self.commanded is not None and self.gateway_alive():
            return self.commanded, MODE_COMMAND
        now = self.wall_s(rtc_epoch_s)
        if now is not None and self.program is not None:
            level = self.program.level_at(now)
            if level is not None:
                return level, MODE_PROGRAM
        return self.default_level, MODE_DEFAULT

    def next_change_ms(self, rtc_epoch_s: int | None = None) -> int | None:
        """Milliseconds until :meth:`decide` may answer differently without new input."""
        waits = []
        if self.commanded is not None and self.gateway_alive():
            assert self._silence_ms is not None
            waits.append(self.fallback_ms - self._silence_ms)
        now = self.wall_s(rtc_epoch_s)
        if now is not None and self.program is not None:
            switch = self.program.next_switch(now)
            if switch is not None:
                waits.append((switch - now) * 1000)
        return min(waits) if waits else None
