"""The systemd stand-in: the shipped unit's settings, start timeout, watchdog, restarts and
NotifyAccess=main, with real processes and a real notify socket."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from edge.firmware.systemd_standin import ServiceSupervisor, UnitSettings, parse_duration

UNIT = Path(__file__).resolve().parents[3] / "deploy" / "systemd" / "ondijon-agent.service"
FAST = UnitSettings(restart_s=0.1, start_timeout_s=1.0, stop_timeout_s=1.0, watchdog_s=0.6)

NOTIFY = """
import os, socket, sys, time
def say(text):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(text.encode(), os.environ["NOTIFY_SOCKET"])
"""


def _service(body: str) -> list[str]:
    return [sys.executable, "-c", NOTIFY + body]


async def _until(supervisor: ServiceSupervisor, count: int, timeout: float = 15.0) -> None:
    async def enough() -> None:
        while len([s for s in supervisor.starts if s.ended is not None]) < count:
            await supervisor.changed()

    await asyncio.wait_for(enough(), timeout)


@pytest.mark.parametrize(
    "text, seconds",
    [("30s", 30.0), ("2min 30s", 150.0), ("500ms", 0.5), ("90", 90.0), ("1h", 3600.0)],
)
def test_time_spans_read_like_systemd(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_the_shipped_unit_keeps_the_time_to_rollback_short() -> None:
    unit = UnitSettings.from_file(UNIT)
    assert (unit.restart_s, unit.start_timeout_s, unit.watchdog_s) == (2.0, 30.0, 20.0)
    assert unit.start_failure == "abort" and unit.watchdog_signal == signal.SIGABRT
    # Three trial starts of a release that hangs, then the previous release starts.
    assert 3 * (unit.start_timeout_s + unit.restart_s) <= 120
    with pytest.raises(ValueError, match="TimeoutStartSec"):
        UnitSettings.from_unit("[Service]\nTimeoutStartSec=soon\n")


async def test_a_start_that_never_gets_ready_is_aborted_and_started_again() -> None:
    supervisor = ServiceSupervisor(
        _service("time.sleep(60)"), FAST.scaled(1.0), env={"PATH": "/usr/bin"}
    )
    supervisor.start()
    try:
        await _until(supervisor, 2)
    finally:
        await supervisor.stop()
    first, second = supervisor.starts[:2]
    assert first.result == "start timed out, killed by SIGTERM"
    assert first.ended is not None and 0.9 <= first.ended - first.started < 3.0
    assert second.started - first.ended >= 0.1


async def test_abort_mode_and_the_watchdog_end_a_hung_process_with_sigabrt() -> None:
    body = "say('READY=1\\nSTATUS=running x 1.0'); say('WATCHDOG=1'); time.sleep(60)"
    settings = UnitSettings(restart_s=0.1, start_timeout_s=2.0, stop_timeout_s=1.0, watchdog_s=0.5)
    supervisor = ServiceSupervisor(_service(body), settings, env={"PATH": "/usr/bin"})
    supervisor.start()
    try:
        await _until(supervisor, 1)
    finally:
        await supervisor.stop()
    first = supervisor.starts[0]
    assert first.status == "running x 1.0" and first.ready is not None
    assert first.result == "watchdog timeout, killed by SIGABRT"

    unit = "[Service]\nRestartSec=100ms\nTimeoutStartSec=500ms\nTimeoutStopSec=5s\n"
    settings = UnitSettings.from_unit(unit + "TimeoutStartFailureMode=abort\n")
    # SIGTERM is ignored by a blocked interpreter with a handler; SIGABRT is not.
    body = "import signal; signal.signal(signal.SIGTERM, lambda *a: None); time.sleep(60)"
    supervisor = ServiceSupervisor(_service(body), settings, env={"PATH": "/usr/bin"})
    supervisor.start()
    try:
        await _until(supervisor, 1)
    finally:
        await supervisor.stop()
    first = supervisor.starts[0]
    assert first.result == "start timed out, killed by SIGABRT"
    assert first.ended is not None and first.ended - first.started < 2.0


async def test_only_the_main_process_is_listened_to() -> None:
    # A child says READY=1: with NotifyAccess=main it does not count.
    body = (
        "import subprocess; subprocess.run([sys.executable, '-c', "
        + repr(NOTIFY + "say('READY=1')")
        + "]); time.sleep(60)"
    )
    supervisor = ServiceSupervisor(_service(body), FAST, env={"PATH": "/usr/bin"})
    supervisor.start()
    try:
        await _until(supervisor, 1)
    finally:
        await supervisor.stop()
    assert supervisor.starts[0].ready is None
    assert supervisor.starts[0].result.startswith("start timed out")
