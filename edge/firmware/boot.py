"""Boot-time slot choice, the trial that decides whether a new release is kept, and the
watch on a committed release that keeps crashing.

Three moments, like a bootloader's boot counter and Mender's commit:

- **Before the agent is imported**, :func:`resolve_boot_slot` (run by the launcher) counts
  the boot of a trial and gives the trial up after ``max_trial_boots`` boots without a
  commit: a release that crashes or hangs (systemd's watchdog kills a hang and restarts
  it) is rolled back without ever needing to run correctly. It also counts the starts of a
  *committed* release within one machine boot (``/proc/sys/kernel/random/boot_id``) that
  did not reach the stability period: past ``max_trial_boots`` of them the release is
  crash-looping after its commit and the launcher falls back to the previous slot (or the
  base install). A power cut starts a new machine boot and does not count. A trial slot
  whose install is incomplete, or a committed slot that is damaged, is never booted.
- **Once the agent runs a trial**, :func:`confirm_trial` runs the injected health checks
  (reaches the orchestrator, drivers up, schedule evaluates) every ``interval``. It commits
  only once the release has run for the *stability period* in this boot with the checks
  passing; it rolls back by itself (and asks for a restart) when the checks have failed
  without a break for ``deadline``, from the start or later. A release that crashes after
  a while never lives through the stability period, so its boots run out instead. Times
  are measured on the injected clock from this start, not from the wall-clock time of the
  switch: a gateway without a real-time clock may boot in 1970 until NTP answers.
- **Once a committed release has run for the stability period**, the agent calls
  :meth:`~edge.firmware.slots.SlotStore.mark_stable` and its starts stop counting.

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
from foundation.clock import Clock, SystemClock

HealthCheck = Callable[[], Awaitable[bool]]
"""One health check: ``True`` when healthy; raising counts as unhealthy."""

DEFAULT_MAX_TRIAL_BOOTS = 3
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


def boot_step(
    state: SlotState,
    installed: Mapping[str, str | None],
    max_trial_boots: int,
    now: datetime,
    boot_id: str = "",
) -> SlotState:
    """The pointer after one more start of the agent (pure).

    Args:
        state: the pointer as read.
        installed: version found complete in each slot (``None``: missing or incomplete).
        max_trial_boots: starts a trial gets to commit before it is given up, and starts a
            committed release gets to reach its stability period before the launcher falls
            back to the previous release.
        now: the current instant, recorded with a rollback.
        boot_id: the machine boot this start belongs to (``""``: unknown, every start
            counts).
    """
    if state.trial is not None:
        if installed.get(state.trial) != state.versions.get(state.trial):
            return _safe(
                state.rolled_back(f"trial slot {state.trial} is incomplete", now), installed, now
            )
        if state.boot_count + 1 > max_trial_boots:
            reason = (
                f"{state.boot_count} boots without passing the health check and stability"
                " period (crash loop or hang)"
            )
            return _safe(state.rolled_back(reason, now), installed, now)
        return replace(state, boot_count=state.boot_count + 1, boot_id=boot_id)
    state = _safe(state, installed, now)
    if state.active is None or state.active != state.committed:
        return state
    same_boot = not boot_id or boot_id == state.boot_id
    starts = state.starts + 1 if same_boot else 1
    if starts > max_trial_boots:
        why = (
            f"crash loop after commit: {state.starts} starts in a row ended before the"
            " stability period"
        )
        return _fall_back(state, installed, now, why)
    return replace(state, starts=starts, boot_id=boot_id)


def _safe(state: SlotState, installed: Mapping[str, str | None], now: datetime) -> SlotState:
    active = state.active
    if active is None or installed.get(active) == state.versions.get(active):
        return state
    version = state.versions.get(active, "unknown")
    return _fall_back(state, installed, now, f"slot {active} ({version}) is damaged")


def _fall_back(
    state: SlotState, installed: Mapping[str, str | None], now: datetime, why: str
) -> SlotState:
    """Leave the active release for the one committed before it, else the base install (the
    last thing that always boots)."""
    failed = state.versions.get(state.active or "", "unknown")
    target = state.previous
    if (
        target is None
        or target == state.active
        or installed.get(target) != state.versions.get(target)
    ):
        target = None
    reason = f"{why}; falling back to {state.version_of(target, 'the base install')}"
    return replace(
        state,
        committed=target,
        active=target,
        trial=None,
        previous=None,
        boot_count=0,
        starts=0,
        last_outcome=Outcome(failed, "rolled_back", reason, now, False, state.campaign_id),
    )


def machine_boot_id() -> str:
    """This machine boot's id (Linux), or ``""`` where there is none."""
    try:
        return BOOT_ID_FILE.read_text("ascii").strip()
    except OSError:
        return ""


def resolve_boot_slot(
    state_dir: Path,
    *,
    now: datetime | None = None,
    max_trial_boots: int = DEFAULT_MAX_TRIAL_BOOTS,
    boot_id: str | None = None,
    crash: CrashPoint = no_crash,
) -> Path | None:
    """Decide which slot this start runs and record the decision durably.

    Args:
        state_dir: the firmware state directory (``/var/lib/ondijon/firmware``).
        now: the current instant (default: the system clock).
        max_trial_boots: see :func:`boot_step`.
        boot_id: this machine boot's id (default: :func:`machine_boot_id`).
        crash: crash point for tests (see :mod:`edge.firmware.durable`).

    Returns:
        The slot directory to put first on ``sys.path``, or ``None`` to run the base
        install.
    """
    store = SlotStore(state_dir, crash=crash)
    state = store.read()
    installed = {slot: store.installed_version(slot) for slot in ("a", "b")}
    decided = boot_step(
        state,
        installed,
        max_trial_boots,
        now or SystemClock().now(),
        machine_boot_id() if boot_id is None else boot_id,
    )
    if decided != state:
        store.write(decided)
    return None if decided.active is None else store.slot_dir(decided.active)


class Verdict(enum.Enum):
    """What to do with a trial after one round of health checks."""

    COMMIT = "commit"
    WAIT = "wait"
    ROLL_BACK = "roll_back"


def judge_trial(
    started: datetime,
    now: datetime,
    deadline: timedelta,
    failing: list[str],
    *,
    stability: timedelta = timedelta(0),
    failing_since: datetime | None = None,
) -> tuple[Verdict, str]:
    """Commit once the checks pass and the trial has run ``stability`` since ``started``;
    roll back once they have failed without a break for ``deadline``.

    Args:
        started: when this boot of the trial started.
        now: the current instant.
        deadline: how long the checks may fail in a row.
        failing: names of the checks failing in this round.
        stability: how long the trial must run before it is committed.
        failing_since: when the checks started failing (``None``: since ``started``,
            they never passed).

    Returns:
        The verdict and a reason naming the failing checks.
    """
    if not failing:
        if now - started >= stability:
            if stability > timedelta(0):
                return Verdict.COMMIT, f"health check passed; ran {_s(stability)} s stably"
            return Verdict.COMMIT, "health check passed"
        return Verdict.WAIT, f"healthy; stability period until {_s(stability)} s"
    names = ", ".join(failing)
    since = started if failing_since is None else failing_since
    if now - since >= deadline:
        if failing_since is None or failing_since <= started:
            return Verdict.ROLL_BACK, f"health check ({names}) did not pass within {_s(deadline)} s"
        return (
            Verdict.ROLL_BACK,
            f"health check ({names}) failed for {_s(deadline)} s during the stability period",
        )
    return Verdict.WAIT, f"waiting for health check ({names})"


def _s(duration: timedelta) -> str:
    return f"{duration.total_seconds():g}"


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
    deadline: timedelta = timedelta(minutes=2),
    interval: timedelta = timedelta(seconds=10),
    stability: timedelta = timedelta(0),
    request_restart: Callable[[], None] | None = None,
) -> TrialResult:
    """Commit the running trial once it has run ``stability`` with every check passing, or
    roll it back once the checks have failed for ``deadline`` in a row.

    Returns at once (verdict ``None``) when no trial is running.

    Args:
        store: the slot store of this agent.
        checks: named health checks; all must pass in the same round.
        clock: time source (its ``sleep`` paces the rounds).
        deadline: how long the checks may fail in a row, from this call or later.
        interval: pause between rounds.
        stability: how long the trial must run, from this call, before it is committed.
        request_restart: called after a rollback so the committed version runs again
            (default :func:`restart_via_supervisor`).
    """
    if store.read().trial is None:
        return TrialResult(None, "no trial in progress")
    started = clock.now()
    failing_since: datetime | None = started
    while True:
        failing = [name for name, check in checks.items() if not await _passes(check)]
        now = clock.now()
        if not failing:
            failing_since = None
        elif failing_since is None:
            failing_since = now
        verdict, reason = judge_trial(
            started,
            now,
            deadline,
            failing,
            stability=stability,
            failing_since=failing_since,
        )
        if verdict is Verdict.COMMIT:
            store.commit(now, reason)
            return TrialResult(verdict, reason)
        if verdict is Verdict.ROLL_BACK:
            store.roll_back(reason, now)
            (request_restart or restart_via_supervisor)()
            return TrialResult(verdict, reason)
        due = [interval]
        if failing_since is not None:
            due.append(deadline - (now - failing_since))
        elif now - started < stability:
            due.append(stability - (now - started))
        await clock.sleep(max(0.0, min(due).total_seconds()))


async def _passes(check: HealthCheck) -> bool:
    try:
        return bool(await check())
    except Exception:
        return False


def restart_via_supervisor() -> None:
    """Ask systemd (``Restart=always``) for a fresh start: terminate this process cleanly."""
    os.kill(os.getpid(), signal.SIGTERM)
