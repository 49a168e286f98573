"""A stand-in for systemd running the agent's unit, where there is no systemd.

On a gateway, ``deploy/systemd/ondijon-agent.service`` runs the launcher under systemd:
``Type=notify``, ``Restart=always``. Development machines, CI containers and the bench
have no systemd to run it, so this module plays the few parts of it the firmware rollback
depends on, with the settings read from the shipped unit file (:meth:`UnitSettings.from_unit`):

- ``RestartSec``: after the main process ends, for whatever reason, start it again after
  this long (``Restart=always``);
- ``TimeoutStartSec``: a start that has not sent ``READY=1`` in this time fails; it is
  ended as ``TimeoutStartFailureMode`` says (``terminate``: SIGTERM then SIGKILL after
  ``TimeoutStopSec``; ``abort``: SIGABRT; ``kill``: SIGKILL);
- ``WatchdogSec``: once ready, a process that sends no ``WATCHDOG=1`` for this long is
  sent ``WatchdogSignal`` (SIGABRT), then SIGKILL after ``TimeoutStopSec``;
- ``NotifyAccess=main``: only datagrams from the main process (checked with the sender's
  credentials, as systemd does) count; ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC`` are set.

Every start is recorded (:class:`Start`: when it started, became ready, what its ``STATUS=``
said, how it ended), which is what the rollback tests and the bench measure. It is not a
service manager: no dependencies, cgroups, sandboxing or logging beyond a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import struct
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h)?")
_UNITS = {None: 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "min": 60.0, "m": 60.0, "h": 3600.0}
_FAILURE_SIGNALS = {
    "terminate": signal.SIGTERM,
    "abort": signal.SIGABRT,
    "kill": signal.SIGKILL,
}


def parse_duration(text: str) -> float:
    """Seconds in a systemd time span such as ``30s``, ``2min 30s``, ``500ms`` or ``90``.

    Raises:
        ValueError: not a time span.
    """
    total, rest = 0.0, text.strip()
    if not rest:
        raise ValueError(f"{text!r} is not a time span")
    while rest:
        match = _DURATION.match(rest)
        if match is None:
            raise ValueError(f"{text!r} is not a time span")
        total += float(match[1]) * _UNITS[match[2]]
        rest = rest[match.end() :].lstrip()
    return total


@dataclass(frozen=True)
class UnitSettings:
    """The ``[Service]`` settings the supervisor honours (systemd's defaults otherwise)."""

    restart_s: float = 0.1
    start_timeout_s: float = 90.0
    stop_timeout_s: float = 90.0
    watchdog_s: float | None = None
    start_failure: str = "terminate"
    watchdog_signal: int = signal.SIGABRT

    @classmethod
    def from_unit(cls, text: str) -> UnitSettings:
        """The settings of a unit file's ``[Service]`` section.

        Raises:
            ValueError: a setting the supervisor reads is malformed (named).
        """
        values: dict[str, str] = {}
        section = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
                continue
            if section == "[Service]" and "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
        spans: dict[str, float | None] = {}
        for key in ("RestartSec", "TimeoutStartSec", "TimeoutStopSec", "WatchdogSec"):
            if key in values:
                try:
                    spans[key] = parse_duration(values[key])
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
        defaults = cls()
        settings = replace(
            defaults,
            restart_s=spans.get("RestartSec") or defaults.restart_s,
            start_timeout_s=spans.get("TimeoutStartSec") or defaults.start_timeout_s,
            stop_timeout_s=spans.get("TimeoutStopSec") or defaults.stop_timeout_s,
            watchdog_s=spans.get("WatchdogSec") or None,
        )
        if "TimeoutStartFailureMode" in values:
            mode = values["TimeoutStartFailureMode"]
            if mode not in _FAILURE_SIGNALS:
                raise ValueError(f"TimeoutStartFailureMode: unknown mode {mode!r}")
            settings = replace(settings, start_failure=mode)
        if "WatchdogSignal" in values:
            try:
                number = signal.Signals[values["WatchdogSignal"]]
            except KeyError:
                name = values["WatchdogSignal"]
                raise ValueError(f"WatchdogSignal: unknown signal {name!r}") from None
            settings = replace(settings, watchdog_signal=int(number))
        return settings

    @classmethod
    def from_file(cls, path: Path) -> UnitSettings:
        return cls.from_unit(path.read_text("utf-8"))

    def scaled(self, factor: float) -> UnitSettings:
        """The same settings with every time span multiplied by ``factor`` (tests)."""
        return replace(
            self,
            restart_s=self.restart_s * factor,
            start_timeout_s=self.start_timeout_s * factor,
            stop_timeout_s=self.stop_timeout_s * factor,
            watchdog_s=None if self.watchdog_s is None else self.watchdog_s * factor,
        )


@dataclass
class Start:
    """One start of the service's main process (times on the monotonic clock)."""

    pid: int
    started: float
    ready: float | None = None
    status: str = ""
    ended: float | None = None
    result: str = ""


@dataclass
class ServiceSupervisor:
    """Runs ``argv`` as a ``Type=notify``, ``Restart=always`` service until stopped."""

    argv: Sequence[str]
    settings: UnitSettings
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    log: Path | None = None
    starts: list[Start] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._socket_dir = Path(tempfile.mkdtemp(prefix="ondijon-notify-"))
        self._socket_path = self._socket_dir / "notify"
        self._sock: socket.socket | None = None
        self._ready = asyncio.Event()
        self._pinged = asyncio.Event()
        self._changed = asyncio.Event()
        self._log: IO[bytes] | None = None

    @property
    def current(self) -> Start | None:
        return self.starts[-1] if self.starts else None

    def start(self) -> None:
        """Start supervising in the background."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.bind(str(self._socket_path))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._receive)
        if self.log is not None:
            self._log = self.log.open("ab")
        self._task = asyncio.create_task(self._run(), name="supervisor")

    async def stop(self) -> None:
        """Stop the service (SIGTERM, SIGKILL after ``TimeoutStopSec``) and supervising."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._end(signal.SIGTERM, "stopped")
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        with contextlib.suppress(OSError):
            self._socket_path.unlink()
            self._socket_dir.rmdir()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def changed(self) -> None:
        """Wait until a start begins, becomes ready, says a new status or ends."""
        self._changed.clear()
        await self._changed.wait()

    async def _run(self) -> None:
        while True:
            await self._start_one()
            await asyncio.sleep(self.settings.restart_s)

    async def _start_one(self) -> None:
        env = dict(self.env)
        env["NOTIFY_SOCKET"] = str(self._socket_path)
        if self.settings.watchdog_s is not None:
            env["WATCHDOG_USEC"] = str(int(self.settings.watchdog_s * 1_000_000))
        self._ready.clear()
        self._pinged.clear()
        out = self._log if self._log is not None else asyncio.subprocess.DEVNULL
        process = await asyncio.create_subprocess_exec(
            *self.argv, env=env, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL
        )
        self._process = process
        started = Start(process.pid, time.monotonic())
        self.starts.append(started)
        self._changed.set()
        watch = asyncio.create_task(self._watch(started))
        try:
            code = await process.wait()
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        started.ended = time.monotonic()
        if not started.result:
            started.result = f"exited {code}" if code >= 0 else f"killed by {_name(-code)}"
        elif code < 0:
            started.result += f", killed by {_name(-code)}"
        self._process = None
        self._changed.set()

    async def _watch(self, started: Start) -> None:
        try:
            await asyncio.wait_for(self._ready.wait(), self.settings.start_timeout_s)
        except TimeoutError:
            started.result = "start timed out"
            await self._end(_FAILURE_SIGNALS[self.settings.start_failure], "start timed out")
            return
        if self.settings.watchdog_s is None:
            return
        while True:
            self._pinged.clear()
            try:
                await asyncio.wait_for(self._pinged.wait(), self.settings.watchdog_s)
            except TimeoutError:
                started.result = "watchdog timeout"
                await self._end(self.settings.watchdog_signal, "watchdog timeout")
                return

    async def _end(self, first: int, why: str) -> None:
        """Send ``first`` to the main process; SIGKILL if it is still there after
        ``TimeoutStopSec``."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(first)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), self.settings.stop_timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    def _receive(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, ancillary, _, _ = self._sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (BlockingIOError, InterruptedError):
                return
            sender = _sender_pid(ancillary)
            current = self.current
            process = self._process
            if current is None or process is None or sender != process.pid:
                continue  # NotifyAccess=main: another process, or one already gone
            for line in data.decode("utf-8", "replace").splitlines():
                key, _, value = line.partition("=")
                if key == "READY" and value == "1" and current.ready is None:
                    current.ready = time.monotonic()
                    self._ready.set()
                    self._changed.set()
                elif key == "WATCHDOG" and value == "1":
                    self._pinged.set()
                elif key == "STATUS":
                    current.status = value
                    self._changed.set()


def _sender_pid(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= 12:
            pid, _uid, _gid = struct.unpack("iII", data[:12])
            return int(pid)
    return None


def _name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


__all__ = ["ServiceSupervisor", "Start", "UnitSettings", "parse_duration"]
