"""Boot-time slot choice and the trial that decides whether a new release is kept.

Two moments, like a bootloader's boot counter and Mender's commit:

- **Before the agent is imported**, :func:`resolve_boot_slot` (run by the launcher) counts
  the boot of a trial and gives the trial up after ``max_trial_boots`` boots without a
  commit: a release that crashes or hangs at start-up (systemd's watchdog kills a hang and
  restarts it) is rolled back without ever needing to run correctly. A trial slot whose
  install is incomplete, or a committed slot that is damaged, is never booted.
- **Once the agent runs**, :func:`confirm_trial` runs the injected health checks (reaches
  the orchestrator, drivers up, schedule evaluates) until they all pass, then commits; if
  the deadline passes first it rolls back by itself and asks for a restart. The deadline is
  measured from this start on the injected clock, not from the wall-clock time of the
  switch: a gateway without a real-time clock may boot in 1970 until NTP answers.

:func:`boot_step` and :func:`judge_trial` are the pure decisions; the rest applies them.
"""

from __future__ import annotations

import enum
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from edge.firmware.durable import CrashPoint, no_crash
from edge.firmware.slots import Outcome, SlotState, SlotStore
from ondijon.clock import Clock, SystemClock

HealthCheck = Callable[[], Awaitable[bool]]
"""One health check: ``True`` when healthy; raising counts as unhealthy."""

DEFAULT_MAX_TRIAL_BOOTS = 3


def boot_step(
    state: SlotState, installed: Mapping[str, str | None], max_trial_boots: int, now: datetime
) -> SlotState:
    """The pointer after one more boot (pure).

    Args:
        state: the pointer as read.
        installed: version found complete in each slot (``None``: missing or incomplete).
        max_trial_boots: boots a trial gets to commit before it is given up.
        now: the current instant, recorded with a rollback.
    """
    if state.trial is not None:
        if installed.get(state.trial) != state.versions.get(state.trial):
            return _safe(
                state.rolled_back(f"trial slot {state.trial} is incomplete", now), installed, now
            )
        if state.boot_count + 1 > max_trial_boots:
            reason = (
                f"{state.boot_count} boots without passing the health check"
                " (crash loop or hang at start-up)"
            )
            return _safe(state.rolled_back(reason, now), installed, now)
        return replace(state, boot_count=state.boot_count + 1)
    return _safe(state, installed, now)


def _safe(state: SlotState, installed: Mapping[str, str | None], now: datetime) -> SlotState:
    active = state.active
    if active is None or installed.get(active) == state.versions.get(active):
        return state
    # The committed slot itself is damaged: the base install is the last thing that boots.
    version = state.versions.get(active, "unknown")
    reason = f"slot {active} ({version}) is damaged; running the base install"
    return replace(
        state,
        committed=None,
        active=None,
        trial=None,
        boot_count=0,
        last_outcome=Outcome(version, "rolled_back", reason, now, False, state.campaign_id),
    )


def resolve_boot_slot(
    state_dir: Path,
    *,
    now: datetime | None = None,
    max_trial_boots: int = DEFAULT_MAX_TRIAL_BOOTS,
    crash: CrashPoint = no_crash,
) -> Path | None:
    """Decide which slot this boot runs and record the decision durably.

    Args:
        state_dir: the firmware state directory (``/var/lib/ondijon/firmware``).
        now: the current instant (default: the system clock).
        max_trial_boots: boots a trial gets to commit before it is rolled back.
        crash: crash point for tests (see :mod:`edge.firmware.durable`).

    Returns:
        The slot directory to put first on ``sys.path``, or ``None`` to run the base
        install.
    """
    store = SlotStore(state_dir, crash=crash)
    state = store.read()
    installed = {slot: store.installed_version(slot) for slot in ("a", "b")}
    decided = boot_step(state, installed, max_trial_boots, now or SystemClock().now())
    if decided != state:
        store.write(decided)
    return None if decided.active is None else store.slot_dir(decided.active)


class Verdict(enum.Enum):
    """What to do with a trial after one round of health checks."""

    COMMIT = "commit"
    WAIT = "wait"
    ROLL_BACK = "roll_back"


def judge_trial(
    started: datetime, now: datetime, deadline: timedelta, failing: list[str]
) -> tuple[Verdict, str]:
    """Commit when no check fails; roll back once ``deadline`` after ``started`` has passed.

    Returns:
        The verdict and a reason naming the failing checks.
    """
    if not failing:
        return Verdict.COMMIT, "health check passed"
    names = ", ".join(failing)
    if now - started >= deadline:
        return (
            Verdict.ROLL_BACK,
            f"health check ({names}) did not pass within {deadline.total_seconds():g} s",
        )
    return Verdict.WAIT, f"waiting for health check ({names})"


@dataclass(frozen=True)
class TrialResult:
    """How :func:`confirm_trial` ended."""

    verdict: Verdict | None
    reason: str


async def confirm_trial(
    store: SlotStore,
    checks: Mapping[str, HealthCheck],
    clock: Clock,
    *,
    deadline: timedelta = timedelta(minutes=5),
    interval: timedelta = timedelta(seconds=10),
    request_restart: Callable[[], None] | None = None,
) -> TrialResult:
    """Commit the running trial once every check passes, or roll it back at the deadline.

    Returns at once (verdict ``None``) when no trial is running.

    Args:
        store: the slot store of this agent.
        checks: named health checks; all must pass in the same round.
        clock: time source (its ``sleep`` paces the rounds).
        deadline: how long the checks get, from this call.
        interval: pause between rounds.
        request_restart: called after a rollback so the committed version runs again
            (default :func:`restart_via_supervisor`).
    """
    if store.read().trial is None:
        return TrialResult(None, "no trial in progress")
    started = clock.now()
    while True:
        failing = [name for name, check in checks.items() if not await _passes(check)]
        verdict, reason = judge_trial(started, clock.now(), deadline, failing)
        if verdict is Verdict.COMMIT:
            store.commit(clock.now())
            return TrialResult(verdict, reason)
        if verdict is Verdict.ROLL_BACK:
            store.roll_back(reason, clock.now())
            (request_restart or restart_via_supervisor)()
            return TrialResult(verdict, reason)
        remaining = deadline - (clock.now() - started)
        await clock.sleep(max(0.0, min(interval, remaining).total_seconds()))


async def _passes(check: HealthCheck) -> bool:
    try:
        return bool(await check())
    except Exception:
        return False


def restart_via_supervisor() -> None:
    """Ask systemd (``Restart=always``) for a fresh start: terminate this process cleanly."""
    os.kill(os.getpid(), signal.SIGTERM)
