"""Time is a sensor: is the wall clock trusted yet, and did it just step?

A cabinet's board often has no real-time clock: after a power cut it boots in 1970 (or at
the last saved time) and NTP sets the right time minutes later, in one step of hours or
days. The schedule reads the wall clock, so the agent must know two things:

- **Trust.** Until the clock is synchronised (or the board has a battery-backed RTC, a
  configuration setting) the time is unknown, and the agent does not let a guess of the
  time switch the street: lamps follow the light sensor where there is one, otherwise
  their default level; bollards and signals stay as they are (see the agent). A
  :class:`ClockSync` port answers; the Linux ones read systemd-timesyncd's flag file
  ``/run/systemd/timesync/synchronized`` and the kernel's own state through ``adjtimex``
  (``TIME_ERROR`` while unsynchronised), both without privileges. Trust, once given, is
  kept: a later step is NTP correcting the clock, not a reason to go back to guessing.
- **Steps.** :class:`StepWatch` compares how far the wall clock moved with how far the
  monotonic clock moved since the last look; a difference beyond its tolerance is a step.
  The agent looks at every wake and at least every :data:`CHECK_INTERVAL_S`, records a
  ``clock.step`` event and re-evaluates the schedule at once: a sleep computed before the
  step (until sunset, say) is not waited out.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

#: Longest the agent goes without comparing its two clocks (monotonic seconds).
CHECK_INTERVAL_S = 10.0
#: A disagreement larger than this between the two clocks is a step.
STEP_TOLERANCE_S = 2.0
#: What systemd-timesyncd creates once it has synchronised the clock.
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
SYNC_SOURCES = ("auto", "systemd-timesyncd", "adjtimex")

_TIME_ERROR = 5  # adjtimex's return value while the clock is not synchronised


class ClockSync(Protocol):
    """Whether the wall clock is synchronised to a reference now."""

    def synchronized(self) -> bool: ...


class RealTimeClock:
    """A board with a battery-backed RTC: its time is trusted from boot."""

    def synchronized(self) -> bool:
        return True


class TimesyncFlag:
    """systemd-timesyncd's flag file (absent until the first synchronisation)."""

    def __init__(self, path: Path = TIMESYNC_FLAG) -> None:
        self._path = path

    def synchronized(self) -> bool:
        return self._path.exists()


class Adjtimex:
    """The kernel's clock state (``adjtimex(2)`` with no changes: read only)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(name, use_errno=True) if name else None

    def synchronized(self) -> bool:
        if self._libc is None or not hasattr(self._libc, "adjtimex"):
            return False
        # struct timex is 208 bytes on 64-bit Linux; modes (its first field) = 0: read only.
        buffer = ctypes.create_string_buffer(512)
        state = self._libc.adjtimex(buffer)
        return bool(state >= 0 and state != _TIME_ERROR)


class AnyOf:
    """Synchronised if any of the sources says so."""

    def __init__(self, *sources: ClockSync) -> None:
        self._sources = sources

    def synchronized(self) -> bool:
        return any(source.synchronized() for source in self._sources)


def clock_sync(source: str, *, rtc: bool) -> ClockSync:
    """The port a configuration names (``[clock] rtc``, ``[clock] sync``)."""
    if rtc:
        return RealTimeClock()
    if source == "systemd-timesyncd":
        return TimesyncFlag()
    if source == "adjtimex":
        return Adjtimex()
    return AnyOf(TimesyncFlag(), Adjtimex())


@dataclass(frozen=True)
class Step:
    """The wall clock moved ``seconds`` more (or less, if negative) than time passed."""

    seconds: float
    before: datetime
    after: datetime


class StepWatch:
    """Detects wall-clock steps by comparing it with the monotonic clock (pure)."""

    def __init__(self, tolerance_s: float = STEP_TOLERANCE_S) -> None:
        self._tolerance = tolerance_s
        self._last: tuple[float, datetime] | None = None

    def observe(self, monotonic: float, wall: datetime) -> Step | None:
        """Look at both clocks now; the step since the last look, if any."""
        last, self._last = self._last, (monotonic, wall)
        if last is None:
            return None
        elapsed = monotonic - last[0]
        moved = (wall - last[1]).total_seconds()
        drift = moved - elapsed
        if abs(drift) <= self._tolerance:
            return None
        return Step(drift, last[1], wall)


class Timekeeper:
    """The agent's view of its wall clock: trusted yet, and steps as they happen."""

    def __init__(self, sync: ClockSync, *, tolerance_s: float = STEP_TOLERANCE_S) -> None:
        self._sync = sync
        self._trusted = False
        self._watch = StepWatch(tolerance_s)

    @property
    def trusted(self) -> bool:
        """Whether the wall clock has been synchronised since start (sticky)."""
        if not self._trusted:
            try:
                self._trusted = self._sync.synchronized()
            except OSError:
                self._trusted = False
        return self._trusted

    def look(self, monotonic: float, wall: datetime) -> Step | None:
        """Compare the clocks now (see :class:`StepWatch`)."""
        return self._watch.observe(monotonic, wall)
