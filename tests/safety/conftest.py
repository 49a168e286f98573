"""The randomized safety suite's budget and its figures.

``make test`` runs a bounded short form. A long run explores for a given time and prints
what it tried::

    ONDIJON_SAFETY_MINUTES=30 .venv/bin/pytest tests/safety -p no:randomly -q

The minutes are shared between the state machines (bollard, crossing, street). Each
machine then runs fresh Hypothesis searches until its share is spent; a violation is
recorded with its falsifying steps and the search goes on; the test fails at the end if
any was found. Both forms print, per machine: runs, steps tried, violations found.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

MACHINES = 3
MINUTES = float(os.environ.get("ONDIJON_SAFETY_MINUTES", "0") or 0)
#: pytest-timeout for one machine's test: its share of the budget and a margin.
TIMEOUT_S = 600 if MINUTES <= 0 else int(MINUTES * 60 / MACHINES) + 600


@dataclass
class Tally:
    runs: int = 0
    steps: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0


TALLIES: dict[str, Tally] = {}


def tally(name: str) -> Tally:
    return TALLIES.setdefault(name, Tally())


def explore(
    name: str,
    machine: Callable[[], type[RuleBasedStateMachine]],
    *,
    examples: int,
    steps: int,
) -> None:
    """Run the state machine: ``examples`` searches in the short form, or searches until
    this machine's share of ``ONDIJON_SAFETY_MINUTES`` is spent."""
    record = tally(name)
    started = time.monotonic()
    budget = MINUTES * 60 / MACHINES
    try:
        while True:
            options = settings(
                max_examples=examples,
                stateful_step_count=steps,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                print_blob=True,
            )
            record.runs += examples
            try:
                run_state_machine_as_test(machine(), settings=options)
            except Exception as exc:
                # With its notes: Hypothesis puts the falsifying steps and the
                # @reproduce_failure blob there, and a long run must not lose them.
                notes = "\n".join(getattr(exc, "__notes__", []))
                record.violations.append(f"{type(exc).__name__}: {exc}\n{notes}"[-20000:])
                if budget <= 0:
                    raise
            if budget <= 0 or time.monotonic() - started > budget:
                break
    finally:
        record.seconds += time.monotonic() - started
    assert not record.violations, "\n\n".join(record.violations)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLIES:
        return
    form = f"long run, {MINUTES:g} min" if MINUTES > 0 else "short form"
    terminalreporter.section(f"randomized safety suite ({form})")
    total_steps = total_violations = 0
    for name, record in sorted(TALLIES.items()):
        total_steps += record.steps
        total_violations += len(record.violations)
        terminalreporter.write_line(
            f"{name:10} {record.runs:7d} runs {record.steps:9d} steps tried"
            f" {len(record.violations):4d} violations found  ({record.seconds:.0f} s)"
        )
    terminalreporter.write_line(
        f"{'total':10} {'':12} {total_steps:9d} steps tried {total_violations:4d} violations found"
    )
