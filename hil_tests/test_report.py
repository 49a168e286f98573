"""The run's report says what the pins did: its measurements are recomputed from its own
JSON trace, its trace is the pins' history, a value out of its limits fails, and the rig's
lock keeps a second run out while naming the holder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from street import street
from test_hil_bollard import CLOSING, SCHEDULE

from edge.bench.inventory import Inventory
from edge.bench.report import MeasurementFailed, Record, Report
from edge.bench.rig import RigBusy, hold_lock


def rising(trace: list[dict[str, object]], line: str) -> list[float]:
    return [float(e["t"]) for e in trace if e["line"] == line and e["state"]]  # type: ignore[arg-type]


async def test_the_report_measures_what_the_pins_did(tmp_path: Path, sim_bench: Inventory) -> None:
    device = sim_bench.bollards[0].id
    record = Record(scenario="rise after a van leaves")
    async with street(
        tmp_path, sim_bench, start=CLOSING - timedelta(seconds=20), kinds=["bollards"],
        documents=[SCHEDULE], record=record,
    ) as bench:  # fmt: skip
        bench.inject("car_on_loop", device)
        await bench.run_until(CLOSING + timedelta(seconds=5), step_s=0.1)
        bench.bollard().car_leaves()
        await bench.run_for(6, step_s=0.1)
        light = bench.inventory.pin(f"bollards.{device}.warning_light")
        motor = bench.inventory.pin(f"bollards.{device}.motor_up")
        lit = next(c.mono for c in bench.pins.history if c.pin == light and c.state)
        started = next(c.mono for c in bench.pins.history if c.pin == motor and c.state)
        bench.measure("warning_before_rise_s", started - lit, unit="s", low=1.0)
        history = list(bench.pins.history)
    report = Report(bench=sim_bench.bench.name, inventory="test", pin_factory="mock",
                    started=record.started, records=[record])  # fmt: skip
    record.outcome = "passed"
    written = json.loads(report.write(tmp_path / "out").read_text())

    # The trace in the file is every pin change, in order, named by its inventory line
    # (then those of the agent stopping: it releases its pins at the end).
    trace = written["records"][0]["trace"]
    observed = [(c.pin, float(c.state)) for c in history]
    assert [(e["pin"], e["state"]) for e in trace][: len(observed)] == observed
    assert {e["line"] for e in trace} >= {f"bollards.{device}.warning_light"}
    # The measurement is what the file's own trace gives: light on, then the motor.
    up = rising(trace, f"bollards.{device}.motor_up")
    on = rising(trace, f"bollards.{device}.warning_light")
    measured = written["records"][0]["measurements"][0]
    assert measured["value"] == pytest.approx(up[0] - on[0], abs=1e-6)
    assert (measured["passed"], measured["limits"]) == (True, ">= 1 s")
    assert written["records"][0]["faults"][0]["fault"] == "car_on_loop"
    # Readable forms: the same figures, and a timeline of the same lines.
    text = (tmp_path / "out" / "report.txt").read_text()
    assert f"warning_before_rise_s = {measured['value']:g} s  [>= 1 s]" in text
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<svg" in page and f"bollards.{device}.motor_up" in page


def test_a_value_out_of_its_limits_fails_and_is_kept() -> None:
    record = Record(scenario="x")
    with pytest.raises(MeasurementFailed, match=re.escape("reversal_s = 0.3s, limits <= 0.1 s")):
        record.measure("reversal_s", 0.3, unit="s", high=0.1)
    record.measure("edge_force_n", 120, unit="N", low=0, high=150)
    assert [m.passed for m in record.measurements] == [False, True]
    record.outcome = "failed"
    report = Report(bench="b", inventory="i", pin_factory="mock", started="", records=[record])
    assert report.to_json()["passed"] is False


def test_a_second_run_waits_for_the_rig_then_is_refused_naming_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "rig.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os, sys, time
            fd = os.open({str(lock)!r}, os.O_CREAT | os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, b"pid %d: another bench" % os.getpid())
            print("held", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(RigBusy, match=f"pid {holder.pid}: another bench"), hold_lock(lock, 0.3):
            pass
    finally:
        holder.communicate("")  # the holder exits: its lock goes with it
    with hold_lock(lock, 0.3) as held:
        assert str(holder.pid) not in held.read_text()
