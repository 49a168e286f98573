"""Clocks: the one place the program learns what time it is.

Everything that depends on time takes a :class:`Clock`, so tests and the demo can run a
whole night in seconds and cross midnight, DST changes and leap days without sleeping.

- :class:`SystemClock` is the default: wall time in UTC and the event loop's sleep.
- :class:`SimulatedClock` starts at a given instant and runs ``speed`` times faster than
  real time (configured in the agent's TOML for demos and the bench).
- :class:`ManualClock` only moves when a test calls :meth:`ManualClock.advance`; sleepers
  wake in time order as it passes their deadline.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What time it is, and a way to wait until a given time."""

    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Wait until this clock reads ``when`` (returns at once if already past)."""
        ...


class SystemClock:
    """Real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, when: datetime) -> None:
        await self.sleep((when - self.now()).total_seconds())


class SimulatedClock:
    """Time that starts at ``start`` and runs ``speed`` times faster than real time."""

    def __init__(self, *, start: datetime, speed: float = 1.0) -> None:
        if start.tzinfo is None:
            raise ValueError("start: must be timezone-aware")
        if speed <= 0:
            raise ValueError("speed: must be positive")
        self._start = start.astimezone(UTC)
        self._speed = speed
        self._t0 = time.monotonic()

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> datetime:
        elapsed = (time.monotonic() - self._t0) * self._speed
        return self._start + timedelta(seconds=elapsed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._speed)

    async def sleep_until(self, when: datetime) -> None:
        await self.sleep((when - self.now()).total_seconds())


class ManualClock:
    """A clock that tests move by hand; sleepers wake when it passes their deadline."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start: must be timezone-aware")
        self._now = start.astimezone(UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (forward only) and wake whoever was due."""
        if when < self._now:
            raise ValueError("when: a clock does not go backwards")
        self._now = when.astimezone(UTC)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        self.set(self._now + timedelta(seconds=seconds))

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + timedelta(seconds=max(0.0, seconds)))

    async def sleep_until(self, when: datetime) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._counter), fut))
        await fut
