"""Clocks: the one place the program learns what time it is.

Everything that depends on time takes a :class:`Clock`, so tests and the demo can run a
whole night in seconds and cross midnight, DST changes, leap days and clock steps without
sleeping. A clock has two readings, because they answer different questions:

- :meth:`Clock.now` is the *wall* time (UTC): what the schedule, the calendar and the
  astronomy need. It can step, both ways: NTP correcting a board without a real-time clock
  after a power cut moves it by hours at once.
- :meth:`Clock.monotonic` is seconds on a clock that never steps: what every *duration*
  needs (a bollard's warning, a travel timeout, a watchdog). :meth:`Clock.sleep` waits that
  many monotonic seconds; :meth:`Clock.sleep_until` converts the wall deadline to a
  duration once, when called, as the event loop does: a wall-clock step while it waits
  does not move its end, so whoever waits on the wall must look again at a bounded
  interval (the agent does, see :mod:`edge.timekeeping`).

Clocks:

- :class:`SystemClock` is the default: wall time in UTC, ``time.monotonic`` and the event
  loop's sleep.
- :class:`SimulatedClock` starts at a given instant and runs ``speed`` times faster than
  real time (configured in the agent's TOML for demos and the bench). Given an ``origin``
  (the real instant at which it read ``start``), separate processes read the same time:
  the demo's agents and the CLI's commands agree on it.
- :class:`ManualClock` only moves when a test calls :meth:`ManualClock.advance` (both
  readings) or :meth:`ManualClock.step_wall` (the wall reading alone, either way); sleepers
  wake in deadline order as the monotonic reading passes their deadline.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What time it is, how much time passed, and ways to wait."""

    def now(self) -> datetime:
        """The current wall-clock instant, timezone-aware, in UTC (it may step)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never steps (its origin means nothing)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of monotonic time."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Wait until the wall clock should read ``when``, as a duration computed now
        (returns at once if already past)."""
        ...


class SystemClock:
    """Real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, when: datetime) -> None:
        await self.sleep((when - self.now()).total_seconds())


class SimulatedClock:
    """Time that starts at ``start`` and runs ``speed`` times faster than real time."""

    def __init__(
        self, *, start: datetime, speed: float = 1.0, origin: datetime | None = None
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start: must be timezone-aware")
        if speed <= 0:
            raise ValueError("speed: must be positive")
        if origin is not None and origin.tzinfo is None:
            raise ValueError("origin: must be timezone-aware")
        self._start = start.astimezone(UTC)
        self._speed = speed
        self._t0 = time.monotonic()
        if origin is not None:
            # Read the real clock once, then run on the monotonic one: a step of the real
            # clock later does not move this clock.
            self._t0 -= time.time() - origin.timestamp()

    @property
    def speed(self) -> float:
        return self._speed

    def monotonic(self) -> float:
        return (time.monotonic() - self._t0) * self._speed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.monotonic())

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._speed)

    async def sleep_until(self, when: datetime) -> None:
        await self.sleep((when - self.now()).total_seconds())


class ManualClock:
    """A clock that tests move by hand; sleepers wake when it passes their deadline.

    Its wall reading is the monotonic reading plus an offset that :meth:`step_wall`
    changes, so a test can step the wall clock forward or back while durations run on.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start: must be timezone-aware")
        # Kept as a timedelta: exact microseconds, so set(when) then now() == when.
        self._mono = timedelta(0)
        self._wall_origin = start.astimezone(UTC)
        self._sleepers: list[tuple[timedelta, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def now(self) -> datetime:
        return self._wall_origin + self._mono

    def monotonic(self) -> float:
        return self._mono.total_seconds()

    def set(self, when: datetime) -> None:
        """Let time run until the wall clock reads ``when`` (forward only); wake whoever
        was due."""
        if when < self.now():
            raise ValueError("when: a clock does not go backwards")
        self._pass(when - self.now())

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass (both readings move) and wake whoever was due."""
        if seconds < 0:
            raise ValueError("seconds: time does not run backwards (use step_wall)")
        self._pass(timedelta(seconds=seconds))

    def _pass(self, elapsed: timedelta) -> None:
        self._mono += elapsed
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock by ``seconds`` (negative: back) without time passing, as
        NTP or an operator setting the date does; sleepers are not woken."""
        self._wall_origin += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        wait = timedelta(seconds=max(0.0, seconds))
        if not wait:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deadline = self._mono + wait
        heapq.heappush(self._sleepers, (deadline, next(self._counter), fut))
        await fut

    async def sleep_until(self, when: datetime) -> None:
        await self.sleep((when - self.now()).total_seconds())
