"""Boot counting, commit after health checks, and rollback by the agent itself."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from edge.firmware.boot import (
    Verdict,
    boot_step,
    confirm_trial,
    judge_trial,
    resolve_boot_slot,
)
from edge.firmware.simulator import make_wheel
from edge.firmware.slots import SlotState, SlotStore
from ondijon.clock import ManualClock

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
T = TypeVar("T")


def _store_with_trial(tmp_path: Path) -> SlotStore:
    """1.1.0 committed in slot a, 1.2.0 on trial in slot b."""
    store = SlotStore(tmp_path / "fw")
    for version, slot in (("1.1.0", "a"), ("1.2.0", "b")):
        name, data = make_wheel(version)
        (tmp_path / name).write_bytes(data)
        assert store.install(tmp_path / name, version) == slot
        store.switch_to_trial(slot, version, "camp-1")
        if slot == "a":
            store.commit(NOW)
    return store


def test_boot_step_counts_trial_boots_then_gives_up() -> None:
    state = SlotState(committed="a", active="b", trial="b", versions={"a": "1.1", "b": "1.2"})
    installed = {"a": "1.1", "b": "1.2"}
    for expected in (1, 2, 3):
        state = boot_step(state, installed, 3, NOW)
        assert (state.active, state.boot_count) == ("b", expected)
    state = boot_step(state, installed, 3, NOW)
    assert (state.active, state.trial, state.committed) == ("a", None, "a")
    assert state.last_outcome is not None
    assert state.last_outcome.version == "1.2"
    assert "3 boots without passing the health check" in state.last_outcome.reason


def test_boot_step_never_boots_an_incomplete_trial_slot() -> None:
    state = SlotState(committed="a", active="b", trial="b", versions={"a": "1.1", "b": "1.2"})
    after = boot_step(state, {"a": "1.1", "b": None}, 3, NOW)
    assert after.active == "a"
    assert after.last_outcome is not None
    assert "incomplete" in after.last_outcome.reason


def test_a_damaged_committed_slot_falls_back_to_the_base_install() -> None:
    state = SlotState(committed="a", active="a", versions={"a": "1.1"})
    after = boot_step(state, {"a": None, "b": None}, 3, NOW)
    assert (after.active, after.committed) == (None, None)
    assert after.last_outcome is not None and "damaged" in after.last_outcome.reason
    assert boot_step(SlotState(), {"a": None, "b": None}, 3, NOW) == SlotState()


def test_resolve_boot_slot_records_each_trial_boot(tmp_path: Path) -> None:
    assert resolve_boot_slot(tmp_path / "empty", now=NOW) is None
    store = _store_with_trial(tmp_path)
    assert resolve_boot_slot(store.state_dir, now=NOW) == store.slot_dir("b")
    assert store.read().boot_count == 1
    for _ in range(2):
        resolve_boot_slot(store.state_dir, now=NOW)
    assert resolve_boot_slot(store.state_dir, now=NOW) == store.slot_dir("a")
    assert store.read().trial is None


def test_judge_trial() -> None:
    deadline = timedelta(minutes=5)
    assert judge_trial(NOW, NOW, deadline, [])[0] is Verdict.COMMIT
    assert judge_trial(NOW, NOW + timedelta(minutes=4), deadline, ["drivers"]) == (
        Verdict.WAIT,
        "waiting for health check (drivers)",
    )
    verdict, reason = judge_trial(NOW, NOW + deadline, deadline, ["orchestrator", "drivers"])
    assert verdict is Verdict.ROLL_BACK
    assert reason == "health check (orchestrator, drivers) did not pass within 300 s"


async def _drive(coro: Coroutine[Any, Any, T], clock: ManualClock, step: float) -> T:
    task = asyncio.ensure_future(coro)
    while True:
        for _ in range(10):
            await asyncio.sleep(0)
        if task.done():
            return task.result()
        clock.advance(step)


async def test_a_trial_commits_once_every_check_passes(tmp_path: Path) -> None:
    store = _store_with_trial(tmp_path)
    clock = ManualClock(NOW)
    rounds = {"n": 0}

    async def orchestrator() -> bool:
        rounds["n"] += 1
        return rounds["n"] >= 3

    async def drivers() -> bool:
        return True

    restarts: list[str] = []
    result = await _drive(
        confirm_trial(
            store,
            {"orchestrator": orchestrator, "drivers": drivers},
            clock,
            request_restart=lambda: restarts.append("restart"),
        ),
        clock,
        10,
    )
    assert result.verdict is Verdict.COMMIT
    assert clock.now() == NOW + timedelta(seconds=20)
    state = store.read()
    assert (state.committed, state.trial) == ("b", None)
    assert restarts == []


async def test_a_trial_that_never_gets_healthy_rolls_back_and_restarts(tmp_path: Path) -> None:
    store = _store_with_trial(tmp_path)
    clock = ManualClock(NOW)

    async def schedule() -> bool:
        raise RuntimeError("calendar did not load")

    restarts: list[str] = []
    result = await _drive(
        confirm_trial(
            store,
            {"schedule": schedule},
            clock,
            deadline=timedelta(seconds=60),
            interval=timedelta(seconds=25),
            request_restart=lambda: restarts.append("restart"),
        ),
        clock,
        5,
    )
    assert result.verdict is Verdict.ROLL_BACK
    assert clock.now() == NOW + timedelta(seconds=60)
    assert restarts == ["restart"]
    state = store.read()
    assert (state.active, state.committed) == ("a", "a")
    assert state.last_outcome is not None
    assert state.last_outcome.reason == "health check (schedule) did not pass within 60 s"
    assert state.last_outcome.campaign_id == "camp-1"


async def test_without_a_trial_there_is_nothing_to_confirm(tmp_path: Path) -> None:
    result = await confirm_trial(SlotStore(tmp_path), {}, ManualClock(NOW))
    assert result.verdict is None
