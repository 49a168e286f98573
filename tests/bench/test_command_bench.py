"""bench/command_bench.py's quick form produces its figures, and they are whole: every
gateway connected, received the city-wide program and had its acknowledgement stored;
every command reached its gateway and its DONE was seen by the operator, with the load
generator at normal priority and niced; the load it delivered meanwhile is checked, and a
generator that fell behind is reported as such. Timings are only checked to be there and
ordered (a shared machine decides how large they are)."""

from __future__ import annotations

import json
import math
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.syspath_prepend(str(BENCH))  # the script imports its siblings (city.py)
    return runpy.run_path(str(BENCH / "command_bench.py"), run_name="bench_check")


def reports(
    rate: float, start: float, seconds: float, lag: float = 0.0, pace: float = 1.0
) -> list[Any]:
    """(due, sent, acknowledged) of reports due ``rate`` a second from ``start``, sent
    ``lag`` s late by a generator going at ``pace`` times its schedule, each acknowledged
    5 ms after it was sent."""
    n = int(rate * seconds)
    due = [start + i / rate for i in range(n)]
    sent = [start + (at - start) / pace + lag for at in due]
    return [(at, t, t + 0.005) for at, t in zip(due, sent, strict=True)]


def test_a_generator_on_time_delivered_its_load(monkeypatch: pytest.MonkeyPatch) -> None:
    delivery = bench(monkeypatch)["delivery"]
    # 200 reports a second of 100 devices: 20,000 updates/s, sent 1 ms late.
    d = delivery(reports(200, 100.0, 12.0, lag=0.001), (102.0, 112.0), 100)
    assert d["delivered"] and d["on_time"], d
    assert d["short"] == ""
    assert d["due_per_s"] == pytest.approx(20_000, rel=0.01)
    assert d["acked_per_s"] == pytest.approx(20_000, rel=0.01)
    assert d["late_p99_ms"] == pytest.approx(1.0, abs=0.01)
    assert d["ack_p99_ms"] == pytest.approx(5.0, abs=0.01)


def test_a_generator_behind_its_schedule_did_not_deliver(monkeypatch: pytest.MonkeyPatch) -> None:
    delivery = bench(monkeypatch)["delivery"]
    # Starved of CPU, it sends at 70 % of its pace: in the window only 70 % of what was
    # due reached the orchestrator, ever later.
    d = delivery(reports(200, 100.0, 12.0, pace=0.7), (102.0, 112.0), 100)
    assert not d["delivered"]
    assert not d["on_time"]
    assert d["due_per_s"] == pytest.approx(20_000, rel=0.01)
    assert d["acked_per_s"] == pytest.approx(14_000, rel=0.02)
    assert "acknowledged in the window" in d["short"]
    assert "late at p99" in d["short"]


def test_a_generator_late_by_more_than_the_goal_is_said_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delivery = bench(monkeypatch)["delivery"]
    # The rate holds over the window, but every report goes out 80 ms late (bunched).
    d = delivery(reports(200, 100.0, 12.0, lag=0.08), (102.0, 112.0), 100)
    assert d["acked_per_s"] == pytest.approx(20_000, rel=0.02)
    assert d["delivered"]
    assert not d["on_time"]
    assert d["short"] == "reports sent 80 ms late at p99 (over 50)"


def test_a_report_never_acknowledged_is_not_delivered(monkeypatch: pytest.MonkeyPatch) -> None:
    delivery = bench(monkeypatch)["delivery"]
    sent = reports(200, 100.0, 12.0, lag=0.001)
    sent[1000] = (*sent[1000][:2], None)
    d = delivery(sent, (102.0, 112.0), 100)
    assert not d["delivered"]
    assert d["unacked"] == 1


@pytest.mark.integration
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
    niced = commands["niced"]
    assert niced["nice"] == 10
    assert set(niced["threads_nice"]) == {10}
    assert set(commands["threads_nice"]) == {0}
    for measured in (commands["quiet"], commands["loaded"], niced["loaded"]):
        assert measured["sent"] == 60
        assert measured["done"] == measured["received"] == 60, measured
        assert 0 < measured["to_gateway_p50_ms"] <= measured["p50_ms"]
        assert 0 < measured["p50_ms"] <= measured["p99_ms"] <= measured["max_ms"]
    for part, generator in ((commands, "normal priority"), (niced, "nice 10")):
        ingest = part["ingest"]
        assert ingest["offered"] == 4000
        assert ingest["unacked"] == 0
        assert ingest["acked_per_s"] > 0
        delivery = part["delivery"]
        assert delivery["due_per_s"] > 0
        assert 0 < delivery["ack_p50_ms"] <= delivery["ack_p99_ms"]
        (line,) = [
            x
            for x in lines
            if x.startswith(f"  ingest at 4,000 updates/s, generator at {generator}")
        ]
        (said,) = [x for x in lines if x.startswith(f"    generator at {generator} (")]
        warned = any(x.startswith(f"  WARNING: with the generator at {generator}") for x in lines)
        if not delivery["delivered"]:
            assert said.endswith(": NOT DELIVERED")
            assert "[LOAD NOT DELIVERED]" in line
            assert warned
            continue
        assert delivery["acked_per_s"] >= 0.95 * delivery["due_per_s"]
        assert "NOT DELIVERED" not in line
        if delivery["on_time"]:
            assert delivery["late_p99_ms"] <= 50
            assert said.endswith(": delivered")
            assert "[LOAD SENT LATE]" not in line
            assert not warned
        else:
            assert said.endswith(": delivered, LATE")
            assert "[LOAD SENT LATE]" in line
            assert warned

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
