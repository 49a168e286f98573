"""bench/command_bench.py's quick form produces its figures, and they are whole: every
gateway connected, received the city-wide program and had its acknowledgement stored;
every command reached its gateway and its DONE was seen by the operator. Timings are
only checked to be there and ordered (a shared machine decides how large they are)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_the_quick_form_measures_every_gateway_and_every_command() -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH / "command_bench.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    figures = json.loads(lines[-1])
    commands, fanout = figures["commands"], figures["fanout"]

    assert commands["opened"] == commands["gateways"] == 200
    for name in ("quiet", "loaded"):
        measured = commands[name]
        assert measured["sent"] == 60
        assert measured["done"] == measured["received"] == 60, measured
        assert 0 < measured["to_gateway_p50_ms"] <= measured["p50_ms"]
        assert 0 < measured["p50_ms"] <= measured["p99_ms"] <= measured["max_ms"]
    ingest = commands["ingest"]
    assert ingest["offered"] == 4000
    assert ingest["unacked"] == 0
    assert ingest["acked_per_s"] > 0

    gateways = fanout["gateways"]
    assert fanout["opened"] == fanout["connected"] == gateways == 400
    assert fanout["lost"] == 0
    assert fanout["changed"] == fanout["converged"] == fanout["received"] == gateways
    assert 0 < fanout["received_p50_s"] <= fanout["received_last_s"] <= fanout["stored_s"]
    assert fanout["received_last_s"] <= fanout["all_acked_s"]
    assert fanout["floor_acked"] == fanout["floor_sent"] >= 0.99 * gateways
    assert 0 < fanout["floor_p50_s"] <= fanout["floor_last_s"]
    assert fanout["open_s"] > 0
    assert math.isfinite(fanout["one_by_one_per_call_s"])
    assert any(line.startswith("operator command to the gateway's") for line in lines)
    assert any("every acknowledgement stored" in line for line in lines)
