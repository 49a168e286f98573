"""The launcher: the systemd unit's ``ExecStart``, run from the base install.

``python -m edge.firmware.launch --state-dir DIR -- -m edge.agent --config FILE`` decides
the slot of this boot (:func:`edge.firmware.boot.resolve_boot_slot`) and then *execs* a
fresh interpreter with that slot first on ``PYTHONPATH``. Exec rather than an in-process
``sys.path`` edit: nothing imported by the launcher (from the base install) can leak into
the agent, and the process keeps its PID, which systemd's ``Type=notify`` and watchdog
need. The launcher itself is never updated by a release (like a bootloader): keep it, and
the state file format it reads, stable.

The launcher tells the agent what it booted: ``ONDIJON_SLOT`` (``a``, ``b`` or ``base``)
and ``ONDIJON_RELEASE``, the version installed there (the slot's marker, written from the
signed manifest, or the base install's distribution version). The agent reports that
version, fixed for the life of the process (:func:`running_release`): a process keeps
running the code it started with even after its trial was rolled back under it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import NoReturn

from edge.firmware.boot import DEFAULT_MAX_TRIAL_BOOTS, resolve_boot_slot
from edge.firmware.slots import SlotStore

SLOT_ENV = "ONDIJON_SLOT"
RELEASE_ENV = "ONDIJON_RELEASE"


def installed_distribution_version() -> str:
    """The version of the ``ondijon`` distribution this interpreter imports."""
    try:
        return metadata.version("ondijon")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def running_release(environ: Mapping[str, str] | None = None) -> str:
    """The version this process runs: what the launcher booted (``ONDIJON_RELEASE``), or,
    started without the launcher, the installed distribution's."""
    env = os.environ if environ is None else environ
    return env.get(RELEASE_ENV) or installed_distribution_version()


def exec_plan(
    state_dir: Path,
    python_args: Sequence[str],
    environ: Mapping[str, str],
    *,
    now: datetime | None = None,
    max_trial_boots: int = DEFAULT_MAX_TRIAL_BOOTS,
    boot_id: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment to exec for this boot (records the boot in the state).

    Args:
        state_dir: the firmware state directory.
        python_args: interpreter arguments, e.g. ``["-m", "edge.agent", "--config", f]``.
        environ: the current environment.
        now: current instant (default: system clock).
        max_trial_boots: boots a trial gets before it is rolled back.
        boot_id: this machine boot's id (default: the kernel's).
    """
    try:
        slot = resolve_boot_slot(
            state_dir, now=now, max_trial_boots=max_trial_boots, boot_id=boot_id
        )
    except OSError as exc:
        slot = _committed_slot(state_dir)
        print(f"ondijon launcher: cannot record this boot ({exc}); running {slot}", file=sys.stderr)
    env = dict(environ)
    env.pop("PYTHONPATH", None)
    version = SlotStore(state_dir).installed_version(slot.name) if slot is not None else None
    if slot is not None and version is not None:
        # Only the slot: an inherited PYTHONPATH could shadow it with another copy.
        env["PYTHONPATH"] = str(slot)
        env[SLOT_ENV] = slot.name
        env[RELEASE_ENV] = version
    else:
        env[SLOT_ENV] = "base"
        env[RELEASE_ENV] = installed_distribution_version()
    # -P: no working directory (or script directory) ahead of the slot on sys.path.
    return [sys.executable, "-P", *python_args], env


def _committed_slot(state_dir: Path) -> Path | None:
    # A trial whose boots cannot be counted could crash-loop forever: run the committed one.
    store = SlotStore(state_dir)
    committed = store.read().committed
    if committed is None or store.installed_version(committed) is None:
        return None
    return store.slot_dir(committed)


@dataclass(frozen=True)
class LaunchArgs:
    """The launcher's command line."""

    state_dir: Path
    max_trial_boots: int
    python_args: list[str]


def parse_args(argv: Sequence[str] | None = None) -> LaunchArgs:
    """Parse ``[--state-dir DIR] [--max-trial-boots N] -- PYTHON_ARGS...``."""
    parser = argparse.ArgumentParser(prog="python -m edge.firmware.launch")
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/ondijon/firmware"))
    parser.add_argument("--max-trial-boots", type=int, default=DEFAULT_MAX_TRIAL_BOOTS)
    parser.add_argument("python_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    python_args = list(args.python_args)
    if python_args[:1] == ["--"]:
        python_args = python_args[1:]
    if not python_args:
        parser.error("give the agent's interpreter arguments after --")
    return LaunchArgs(args.state_dir, args.max_trial_boots, python_args)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point: resolve the slot and exec the agent."""
    args = parse_args(argv)
    exec_argv, env = exec_plan(
        args.state_dir, args.python_args, os.environ, max_trial_boots=args.max_trial_boots
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(exec_argv[0], exec_argv, env)  # noqa: S606 - argv is ours, no shell wanted


if __name__ == "__main__":
    main()
