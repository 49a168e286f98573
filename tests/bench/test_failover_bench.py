"""The failover benchmark's quick form, run for real: replicas killed, stopped and cut under
load gateways and a real agent, and what they numbered all stored once afterwards.

Checks what the run proves, not its timings (the figures are for the README, measured by
hand): every gateway that was on a replica hit was served again by a replica, and every
event sequence is in PostgreSQL exactly once, with no gap event.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import postgres_url

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_the_quick_failover_run_serves_every_gateway_again_and_loses_nothing() -> None:
    url = postgres_url()  # skipped without PostgreSQL, failed in CI
    run = subprocess.run(
        [sys.executable, "bench/failover_bench.py", "--quick", "--json", "--postgres", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    lines = [x for x in run.stdout.splitlines() if x.startswith("{")]
    assert lines, f"no figures (exit {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    figures = json.loads(lines[-1])
    kinds = figures["summary"]
    assert set(kinds) == {"kill", "term", "cut"}
    for kind, k in kinds.items():
        assert k["gateways"] > 0 and k["agents"] > 0, f"{kind}: nobody was on the replica hit"
        assert k["not_back"] == 0, f"{kind}: {k['not_back']} gateway(s) not served again"
    checks = figures["checks"]
    assert checks["load_events"] > 0
    assert checks["lost"] == []
    assert checks["stored_twice"] == []
    assert checks["gap_events"] == 0
    assert checks["unacked_after_drain"] == 0
    assert checks["conflicts"] == 0
    for agent in checks["agents"]:
        assert agent["stored"] > 0, agent
    assert figures["nothing_lost"] and figures["every_gateway_served_again"]
    assert run.returncode == 0, run.stdout[-3000:]
