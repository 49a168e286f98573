"""The flash bench's short form: the real agent, an hour of its clock online and offline.

Checks that the figures come out and hang together (bytes written above the payload, the
readings a cabinet makes, the cross-check near the first method), not how fast anything is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "flash_bench.py"
LAMPS = 10
DAYS = 0.04  # 58 minutes of the agent's clock per case: 3 to 4 quarter-hour readings a lamp


def test_the_short_form_gives_plausible_figures(tmp_path: Path) -> None:
    fs = subprocess.run(
        ["df", "--output=fstype", str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    if fs == "tmpfs":
        pytest.skip(f"{tmp_path} is on tmpfs: /proc write_bytes counts nothing there")
    out = tmp_path / "figures.json"
    arguments = [
        *("--days", str(DAYS), "--lamps", str(LAMPS), "--speed", "600"),
        *("--start", "2026-03-17T21:00:00+01:00"),  # at night: lamps lit, counters grow
        *("--dir", str(tmp_path), "--json", str(out)),
    ]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert figures["strace"] == (shutil.which("strace") is not None)
    assert set(figures["cases"]) == {"online", "offline"}
    for name, case in figures["cases"].items():
        # One reading per lamp per quarter hour, whether or not the orchestrator is there
        # (the window's edges may leave a quarter or two out of its 58 minutes).
        readings = case["event_types_per_day"]["energy_interval"]
        assert LAMPS * 96 * 0.25 <= readings <= LAMPS * 96 * 1.5, name
        assert case["payload_bytes_per_day"] > 100 * case["events_per_day"], name
        assert case["write_bytes_per_day"] > case["payload_bytes_per_day"], name
        assert case["amplification"] > 1, name
        assert all(years > 0 for years in case["card_years"].values()), name
        if figures["strace"]:
            # The syscalls' bytes and write_bytes agree within the page rounding of the
            # latter: each write dirties its bytes' pages, rounded up at both ends.
            syscalls, pages = case["strace_bytes_per_day"], case["write_bytes_per_day"]
            writes = sum(f["writes_per_day"] for f in case["by_file"].values())
            assert syscalls <= 1.2 * pages <= 1.2 * (syscalls + 2 * 4096 * writes), name
            assert case["by_file"]["outbox WAL"]["bytes_per_day"] > 0, name
            state = case["by_file"]["state file"]
            # Lamps burn, counters grow: the state file and its backup are rewritten, each
            # write fsynced, and so is the directory after each rename.
            assert state["bytes_per_day"] > 0 and state["fsyncs_per_day"] > 0, name
            assert case["by_file"]["directory"]["fsyncs_per_day"] > 0, name
            assert case["fsyncs_per_day"] > 0, name
