"""The launcher boots the active slot ahead of the base install, in a fresh interpreter."""

from __future__ import annotations

import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.firmware import launch
from edge.firmware.launch import SLOT_ENV, exec_plan, parse_args
from edge.firmware.simulator import make_wheel
from edge.firmware.slots import SlotStore

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
SHADOW = {"edge/__init__.py": b'SLOT_EDGE = "from the slot"\n'}


def _trial_of(tmp_path: Path, version: str) -> SlotStore:
    store = SlotStore(tmp_path / "fw")
    name, data = make_wheel(version, {"ondijon_probe.py": b'VERSION = "1.1.0"\n', **SHADOW})
    (tmp_path / name).write_bytes(data)
    slot = store.install(tmp_path / name, version)
    store.switch_to_trial(slot, version)
    return store


def test_exec_plan_without_slots_runs_the_base_install(tmp_path: Path) -> None:
    argv, env = exec_plan(tmp_path, ["-m", "edge.agent"], {"PYTHONPATH": "/elsewhere"}, now=NOW)
    assert argv == [sys.executable, "-P", "-m", "edge.agent"]
    assert "PYTHONPATH" not in env
    assert env[SLOT_ENV] == "base"


def test_exec_plan_puts_the_active_slot_alone_on_pythonpath(tmp_path: Path) -> None:
    store = _trial_of(tmp_path, "1.1.0")
    _argv, env = exec_plan(store.state_dir, ["-c", "pass"], {"PYTHONPATH": "/elsewhere"}, now=NOW)
    assert env["PYTHONPATH"] == str(store.slot_dir("a"))
    assert env[SLOT_ENV] == "a"
    assert store.read().boot_count == 1


def test_a_boot_that_cannot_be_recorded_runs_the_committed_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SlotStore(tmp_path / "fw")
    for version in ("1.1.0", "1.2.0"):
        name, data = make_wheel(version)
        (tmp_path / name).write_bytes(data)
        slot = store.install(tmp_path / name, version)
        store.switch_to_trial(slot, version)
        if version == "1.1.0":
            store.commit(NOW)

    def read_only(*_args: object, **_kwargs: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(launch, "resolve_boot_slot", read_only)
    _argv, env = exec_plan(store.state_dir, ["-c", "pass"], {}, now=NOW)
    assert env["PYTHONPATH"] == str(store.slot_dir("a"))


def test_the_launcher_execs_the_agent_from_the_slot(tmp_path: Path) -> None:
    store = _trial_of(tmp_path, "1.1.0")
    code = "import edge, ondijon_probe; print(edge.SLOT_EDGE, ondijon_probe.VERSION)"
    launcher = [sys.executable, "-m", "edge.firmware.launch", "--state-dir", str(store.state_dir)]
    done = subprocess.run(
        [*launcher, "--", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "from the slot 1.1.0"
    assert store.read().boot_count == 1


def test_the_systemd_unit_runs_the_launcher_with_arguments_it_accepts() -> None:
    unit = Path(__file__).parents[3] / "deploy" / "systemd" / "ondijon-agent.service"
    lines = unit.read_text().splitlines()
    settings = [line.split("=", 1) for line in lines if "=" in line and not line.startswith("#")]
    values = {key: value for key, value in settings}
    assert values["Type"] == "notify" and values["Restart"] == "always"
    argv = shlex.split(values["ExecStart"])
    assert argv[1:3] == ["-m", "edge.firmware.launch"]
    args = parse_args(argv[3:])
    assert args.state_dir == Path("/var/lib/ondijon/firmware")
    assert values["ReadWritePaths"] == "/var/lib/ondijon"
    assert args.python_args[:2] == ["-m", "ondijon.cli"]
