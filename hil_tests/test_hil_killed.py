"""What the outputs hold when the agent is not there (SAFETY.md, "When the agent is not there").

The real agent process drives a gpio lamp and a simulated bollard on gpiozero's mock pins,
journaling every pin change to disk (``killed_agent.py``); it is killed with SIGKILL in the
middle of a bollard rise, or stopped with SIGTERM at the same moment. The journal shows
what the pins held: after SIGKILL nothing was cleaned up (the up motor pin is still high,
the lamp relay as it was): that is what the hardware must make safe (limit switch and edge
in the up contactor's circuit, a watchdog relay). The lamp is lit at night, and its relay
(normally closed by default) has its coil at rest: lit it stays, and lit it would be with
the pin released or the board unpowered. After SIGTERM both motor pins went low before
gpiozero released every pin (``close`` turns an output into an input), the lamp's coil
still at rest: the lamp stays lit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

HERE = Path(__file__).resolve().parent
NIGHT = datetime(2026, 6, 21, 23, 30, tzinfo=ZoneInfo("Europe/Paris"))
LAMP_RELAY, LAMP_PWM, MOTOR_UP, MOTOR_DOWN = "GPIO17", "GPIO18", "GPIO17", "GPIO27"


def config(tmp_path: Path) -> Path:
    (tmp_path / "root.pem").write_text("")
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""[gateway]
id = "killed-1"
serial = "SN-killed-1"
state_dir = "{tmp_path / "state"}"
[orchestrator]
address = "127.0.0.1:9"
ca_file = "{tmp_path / "root.pem"}"
[site]
latitude = 47.322
longitude = 5.0415
time_zone = "Europe/Paris"
[clock]
mode = "simulated"
start = "{NIGHT.isoformat()}"
speed = 1
[[lamps]]
id = "lamp-1"
backend = "gpio"
nominal_power_w = 60
relay_pin = 17
pwm_pin = 18
sense_pin = 27
[[bollards]]
id = "bollard-1"
backend = "simulated"
"""
    )
    return path


def run_until_rising(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    journal = tmp_path / "pins.journal"
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, str(HERE / "killed_agent.py"), str(config(tmp_path)), str(journal)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    for line in process.stdout:
        if line.strip() == "RISING":
            return process, journal
        assert time.monotonic() < deadline, "the bollard never started rising"
    raise AssertionError(f"the agent exited with {process.wait()} before the rise")


def read_journal(journal: Path) -> tuple[dict[tuple[str, str], float], set[tuple[str, str]]]:
    """The last level of each output (factory, pin): 0 or 1, or a PWM duty; and the outputs
    released since.

    An output starts low (gpiozero's ``initial_value=False``) unless the journal says
    otherwise; "released" means gpiozero turned it back into an input after it had been
    an output.
    """
    levels: dict[tuple[str, str], float] = {}
    outputs: set[tuple[str, str]] = set()
    released: set[tuple[str, str]] = set()
    for line in journal.read_text().splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        pin, value = (parts[0], parts[1]), parts[2]
        if value == "function=output":
            outputs.add(pin)
            levels.setdefault(pin, 0.0)
        elif value == "function=input" and pin in outputs:
            released.add(pin)
        elif pin in outputs and not value.startswith("function="):
            levels[pin] = float(value)
    return levels, released


@pytest.mark.timeout(120)
def test_sigkill_leaves_every_output_as_it_was_the_hardware_must_cope(tmp_path: Path) -> None:
    process, journal = run_until_rising(tmp_path)
    time.sleep(0.3)  # well inside the 3 s rise
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=20) == -signal.SIGKILL
    levels, released = read_journal(journal)
    # Nothing ran after the kill: the up motor is still energised, no pin was released.
    # SAFETY.md: the up contactor's own limit switch, edge and watchdog relay must stop
    # the motor. The lamp is lit at its night level: its relay's coil at rest (normally
    # closed contacts feed it) and its dimming line at full.
    assert levels[("bollard", MOTOR_UP)] == 1
    assert levels[("bollard", MOTOR_DOWN)] == 0
    assert levels[("lamp", LAMP_RELAY)] == 0
    assert levels[("lamp", LAMP_PWM)] == 1
    assert released == set()
    assert "stopped" not in journal.read_text()


@pytest.mark.timeout(120)
def test_sigterm_switches_the_motors_off_then_releases_every_pin(tmp_path: Path) -> None:
    process, journal = run_until_rising(tmp_path)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    lines = journal.read_text().splitlines()
    motor_off = lines.index(f"bollard {MOTOR_UP} 0")
    motor_released = len(lines) - 1 - lines[::-1].index(f"bollard {MOTOR_UP} function=input")
    assert motor_off < motor_released, "the motor pin was released while still energised"
    levels, released = read_journal(journal)
    for pin in ("GPIO17", "GPIO27", "GPIO22"):  # motors and warning light: off, released
        assert levels[("bollard", pin)] == 0
        assert ("bollard", pin) in released
    # gpiozero's close turns every output into an input; the lamp's coil was at rest when
    # released and the relay board's own pull keeps it there: the normally-closed contacts
    # go on feeding the lamp, lit.
    assert {("lamp", LAMP_RELAY), ("lamp", LAMP_PWM)} <= released
    assert levels[("lamp", LAMP_RELAY)] == 0
    lamp_relay = [line for line in lines if line.startswith(f"lamp {LAMP_RELAY} ")]
    assert f"lamp {LAMP_RELAY} 1" not in lamp_relay, "the coil was energised: the lamp went dark"
