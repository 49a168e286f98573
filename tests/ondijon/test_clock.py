"""Clocks: a manual clock wakes sleepers in time order; a simulated one runs ``speed`` times
faster than real time (real time is faked here, nothing sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from foundation.clock import ManualClock, SimulatedClock, SystemClock

START = datetime(2026, 3, 29, 0, 59, tzinfo=UTC)  # one minute before Paris springs forward


async def test_sleepers_wake_in_deadline_order_as_the_clock_passes_them() -> None:
    clock = ManualClock(START)
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(f"{name}@{(clock.now() - START).total_seconds():g}")

    tasks = [
        asyncio.create_task(sleeper(name, seconds))
        for name, seconds in (("c", 30), ("a", 10), ("b", 20), ("b2", 20), ("d", 90))
    ]
    await asyncio.sleep(0)  # everyone is asleep now
    clock.advance(5)
    await asyncio.sleep(0)
    assert woke == []  # nobody before their deadline

    clock.advance(25)  # past a, b, b2 and c at once
    await asyncio.gather(*tasks[:4])
    assert woke == ["a@30", "b@30", "b2@30", "c@30"]  # deadline order, ties as they slept
    assert not tasks[4].done()

    clock.set(START + timedelta(seconds=90))
    await tasks[4]
    assert woke[-1] == "d@90"


async def test_due_or_past_deadlines_return_at_once() -> None:
    clock = ManualClock(START)
    await asyncio.wait_for(clock.sleep_until(START - timedelta(hours=1)), 1)
    await asyncio.wait_for(clock.sleep(-5), 1)
    await asyncio.wait_for(clock.sleep(0), 1)
    assert clock.now() == START


def test_a_manual_clock_never_goes_back_and_reads_utc() -> None:
    paris = timezone(timedelta(hours=1))
    clock = ManualClock(datetime(2026, 3, 29, 1, 59, tzinfo=paris))
    assert clock.now() == START and clock.now().tzinfo == UTC
    clock.advance(3600)
    assert clock.now() == START + timedelta(hours=1)
    with pytest.raises(ValueError, match="when: a clock does not go backwards"):
        clock.set(START)
    with pytest.raises(ValueError, match="start: must be timezone-aware"):
        ManualClock(datetime(2026, 3, 29))


def _finish(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that does not really wait, without an event loop."""
    with pytest.raises(StopIteration):
        coro.send(None)


def test_a_simulated_clock_runs_speed_times_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    real = [1000.0]
    monkeypatch.setattr("foundation.clock.time.monotonic", lambda: real[0])
    clock = SimulatedClock(start=START, speed=600)
    assert clock.now() == START and clock.speed == 600
    real[0] += 6  # six real seconds: an hour of simulated time
    assert clock.now() == START + timedelta(hours=1)

    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("foundation.clock.asyncio.sleep", fake_sleep)
    _finish(clock.sleep(1200))  # 20 simulated minutes
    _finish(clock.sleep(-3))
    _finish(clock.sleep_until(START + timedelta(hours=1, minutes=10)))
    assert slept == [2.0, 0.0, 1.0]


def test_a_simulated_clock_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="speed: must be positive"):
        SimulatedClock(start=START, speed=0)
    with pytest.raises(ValueError, match="start: must be timezone-aware"):
        SimulatedClock(start=datetime(2026, 1, 1))


def test_the_system_clock_reads_aware_utc() -> None:
    now = SystemClock().now()
    assert now.tzinfo == UTC
    assert abs(now - datetime.now(UTC)) < timedelta(minutes=1)
