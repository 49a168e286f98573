"""Boot counting, commit after health checks, and rollback by the agent itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import replace
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
from foundation.clock import ManualClock

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
    assert after.last_outcome is not None
    assert after.last_outcome.reason == "slot a (1.1) is damaged; falling back to the base install"
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


def test_judge_trial_commits_only_after_the_stability_period() -> None:
    deadline, stability = timedelta(minutes=2), timedelta(minutes=10)

    def judge(after_s: float, failing: list[str], since_s: float | None = 0.0) -> Verdict:
        since = None if since_s is None else NOW + timedelta(seconds=since_s)
        verdict, _ = judge_trial(
            NOW,
            NOW + timedelta(seconds=after_s),
            deadline,
            failing,
            stability=stability,
            failing_since=since,
        )
        return verdict

    assert judge(1, []) is Verdict.WAIT  # healthy at once is not enough
    assert judge(599, []) is Verdict.WAIT
    assert judge(600, []) is Verdict.COMMIT
    assert judge(119, ["orchestrator"]) is Verdict.WAIT
    assert judge(120, ["orchestrator"]) is Verdict.ROLL_BACK
    # Failing again after having passed: the deadline runs from the new failure.
    assert judge(400, ["drivers"], since_s=300) is Verdict.WAIT
    verdict, reason = judge_trial(
        NOW,
        NOW + timedelta(seconds=420),
        deadline,
        ["drivers"],
        stability=stability,
        failing_since=NOW + timedelta(seconds=300),
    )
    assert verdict is Verdict.ROLL_BACK
    assert reason == "health check (drivers) failed for 120 s during the stability period"


async def test_a_trial_that_passes_at_once_commits_after_its_stability_period(
    tmp_path: Path,
) -> None:
    store = _store_with_trial(tmp_path)
    clock = ManualClock(NOW)
    blip = {"at": NOW + timedelta(seconds=200)}

    async def orchestrator() -> bool:
        # One short outage during the stability period (shorter than the deadline).
        return not blip["at"] <= clock.now() < blip["at"] + timedelta(seconds=30)

    result = await _drive(
        confirm_trial(
            store,
            {"orchestrator": orchestrator},
            clock,
            deadline=timedelta(seconds=120),
            interval=timedelta(seconds=10),
            stability=timedelta(seconds=600),
            request_restart=lambda: None,
        ),
        clock,
        5,
    )
    assert result.verdict is Verdict.COMMIT
    assert clock.now() == NOW + timedelta(seconds=600)
    state = store.read()
    assert (state.committed, state.previous) == ("b", "a")
    assert state.last_outcome is not None
    assert state.last_outcome.reason == "health check passed; ran 600 s stably"


async def test_a_release_that_crashes_12_s_after_each_start_is_rolled_back_never_committed(
    tmp_path: Path,
) -> None:
    store = _store_with_trial(tmp_path)
    clock = ManualClock(NOW)

    async def healthy() -> bool:
        return True

    for _ in range(3):
        assert resolve_boot_slot(store.state_dir, now=clock.now(), boot_id="x") == (
            store.slot_dir("b")
        )
        trial = asyncio.ensure_future(
            confirm_trial(
                store,
                {"orchestrator": healthy},
                clock,
                stability=timedelta(minutes=10),
                interval=timedelta(seconds=1),
            )
        )
        for _ in range(12):  # runs (healthy) for 12 s...
            await asyncio.sleep(0)
            clock.advance(1)
        trial.cancel()  # ...then crashes
        with contextlib.suppress(asyncio.CancelledError):
            await trial
        assert store.read().committed == "a"
    assert resolve_boot_slot(store.state_dir, now=clock.now(), boot_id="x") == store.slot_dir("a")
    state = store.read()
    assert (state.committed, state.trial) == ("a", None)
    assert state.last_outcome is not None and state.last_outcome.result == "rolled_back"
    assert "3 boots without passing the health check and stability period" in (
        state.last_outcome.reason
    )


def test_a_committed_release_that_crash_loops_falls_back_to_the_previous_slot() -> None:
    committed = SlotState(
        committed="b",
        active="b",
        previous="a",
        versions={"a": "1.1", "b": "1.2"},
        campaign_id="camp-2",
    )
    both = {"a": "1.1", "b": "1.2"}
    state = committed
    for expected in (1, 2, 3):
        state = boot_step(state, both, 3, NOW, "boot-1")
        assert (state.active, state.starts) == ("b", expected)
    state = boot_step(state, both, 3, NOW, "boot-1")
    assert (state.active, state.committed, state.previous) == ("a", "a", None)
    assert state.last_outcome is not None
    assert state.last_outcome.version == "1.2"
    assert state.last_outcome.campaign_id == "camp-2"
    assert state.last_outcome.reason == (
        "crash loop after commit: 3 starts in a row ended before the stability period;"
        " falling back to 1.1"
    )
    # The previous slot was overwritten since: the base install is what is left.
    overwritten = {"a": None, "b": "1.2"}
    state = boot_step(replace(committed, starts=3, boot_id="boot-1"), overwritten, 3, NOW, "boot-1")
    assert (state.active, state.committed) == (None, None)
    assert state.last_outcome is not None
    assert state.last_outcome.reason.endswith("falling back to the base install")


def test_power_cuts_and_stable_runs_do_not_count_as_a_crash_loop() -> None:
    state = SlotState(committed="b", active="b", previous="a", versions={"a": "1.1", "b": "1.2"})
    both = {"a": "1.1", "b": "1.2"}
    for boot in ("boot-1", "boot-2", "boot-3", "boot-4", "boot-5"):  # a new machine boot each
        state = boot_step(state, both, 3, NOW, boot)
        assert (state.active, state.starts) == ("b", 1)
    for _ in range(3):
        state = boot_step(state, both, 3, NOW, "boot-5")
        state = replace(state, starts=0)  # what mark_stable does after the stability period
    assert state.active == "b"
    # The base install has nowhere to fall back to: it is never counted.
    assert boot_step(SlotState(), {}, 3, NOW, "boot-1") == SlotState()


def test_the_launcher_falls_back_and_the_agent_marks_a_stable_start(tmp_path: Path) -> None:
    store = _store_with_trial(tmp_path)
    store.commit(NOW)  # 1.2.0 in b committed after its trial; 1.1.0 in a is the previous
    assert store.read().previous == "a"
    for _ in range(3):
        assert resolve_boot_slot(store.state_dir, now=NOW, boot_id="k") == store.slot_dir("b")
    store.mark_stable()
    assert store.read().starts == 0
    for _ in range(3):
        assert resolve_boot_slot(store.state_dir, now=NOW, boot_id="k") == store.slot_dir("b")
    assert resolve_boot_slot(store.state_dir, now=NOW, boot_id="k") == store.slot_dir("a")
    state = store.read()
    assert (state.committed, state.active) == ("a", "a")
    assert state.last_outcome is not None and state.last_outcome.version == "1.2.0"
    # The next install goes to b, the slot that crash-looped.
    assert state.inactive() == "b"
