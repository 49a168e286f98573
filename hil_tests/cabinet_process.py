"""The bench's side of the cabinet process (:mod:`edge.bench.cabinet`): start it, follow
its pins, inject faults, cut its power.

:class:`Rig` runs ``python -m edge.bench.cabinet`` (the real agent in its own process, the
street behind its mock pins), follows the agent's clock from the ``T`` lines it prints,
and reads the pin journal as a multimeter on each line would: :meth:`Rig.level` is what a
line held at an instant of the agent's clock, :meth:`Rig.changes` every change of a line.
It can be killed (SIGKILL: a power cut) and started again on the same state directory,
its clock going on from where the street last was.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from edge.bench.report import PinEvent

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Change:
    """One pin change of the journal: when on the agent's clock, which line, to what."""

    at: datetime
    line: str
    state: float


@dataclass
class Rig:
    """One rig process at a time, on one state directory and one journal."""

    config: Path
    inventory: Path
    journal: Path
    kinds: str
    address: str
    speed: float = 600.0
    step: float = 0.5
    now: datetime | None = None
    last_sequence: int = -1
    pending: int = -1
    documents: list[tuple[str, int]] = field(default_factory=list)
    boots: int = 0
    pipe: bool = False  # the journal through a FIFO (not a file of the rig: a full disk)
    process: asyncio.subprocess.Process | None = None
    _reader: asyncio.Task[None] | None = None
    _seen: asyncio.Condition = field(default_factory=asyncio.Condition)
    _faults: list[str] = field(default_factory=list)
    _copier: asyncio.Task[None] | None = None

    async def start(self, at: datetime) -> None:
        """Start the rig with the agent's clock at ``at``; returns once it runs."""
        journal = self.journal
        if self.pipe:
            journal = self._pipe_journal()
        argv = [
            sys.executable, "-m", "edge.bench.cabinet", "--config", str(self.config),
            "--inventory", str(self.inventory), "--journal", str(journal),
            "--kinds", self.kinds, "--start", at.isoformat(), "--address", self.address,
            "--speed", str(self.speed), "--step", str(self.step),
        ]  # fmt: skip
        env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", PYTHONUNBUFFERED="1")
        log = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.process = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
        os.close(log)  # the child holds its own copy
        self.now = at
        self.boots += 1
        ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read(ready))
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait({waiting, self._reader}, timeout=30, return_when="FIRST_COMPLETED")
        if not ready.is_set():
            waiting.cancel()
            raise AssertionError(f"the rig did not start: {self.tail()}")

    def _pipe_journal(self) -> Path:
        """A FIFO the rig writes its journal to, copied here into :attr:`journal`."""
        fifo = self.journal.with_suffix(f".fifo{self.boots}")
        os.mkfifo(fifo)
        # Read and write ends both held here: no EOF before the rig opens it or between
        # its starts; the copy ends once the rig has exited and the pipe is drained.
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        self._copier = asyncio.create_task(self._copy(fd))
        return fifo

    async def _copy(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            with self.journal.open("ab") as out:
                while True:
                    try:
                        chunk = await asyncio.wait_for(reader.read(65536), 0.2)
                    except TimeoutError:
                        if self.process is not None and self.process.returncode is not None:
                            return
                        continue
                    out.write(chunk)
                    out.flush()
        finally:
            transport.close()

    @property
    def log(self) -> Path:
        return self.journal.with_suffix(".log")

    def tail(self, lines: int = 40) -> str:
        """The end of the rig's log (the agent's and the street's messages)."""
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def _read(self, ready: asyncio.Event) -> None:
        assert self.process is not None and self.process.stdout is not None
        while raw := await self.process.stdout.readline():
            words = raw.decode().split()
            if not words:
                continue
            if words[0] == "READY":
                ready.set()
            elif words[0] == "T":
                self.now = datetime.fromisoformat(words[1])
                self.last_sequence, self.pending = int(words[3]), int(words[4])
            elif words[0] == "DOC":
                self.documents.append((words[1], int(words[2])))
            elif words[0] in ("F", "E", "S"):
                self._faults.append(raw.decode().strip())
            async with self._seen:
                self._seen.notify_all()

    async def wait_for(self, check: Callable[[], object], timeout: float = 60.0) -> None:
        """Wait until ``check()`` holds, re-checked at each line the rig prints."""
        async with self._seen:
            try:
                await asyncio.wait_for(self._seen.wait_for(check), timeout)
            except TimeoutError:
                raise AssertionError(f"not reached in {timeout} s: {self.tail()}") from None

    async def until(self, when: datetime, timeout: float = 120.0) -> None:
        """Wait until the agent's clock has passed ``when``."""
        await self.wait_for(lambda: self.now is not None and self.now >= when, timeout)

    async def _command(self, line: str) -> str:
        assert self.process is not None and self.process.stdin is not None
        seen = len(self._faults)
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()
        await self.wait_for(lambda: len(self._faults) > seen, 10)
        answer = self._faults[seen]
        if answer.startswith("E "):
            raise KeyError(answer[2:])
        return answer

    async def inject(self, fault: str, target: str, detail: str = "") -> datetime:
        """Inject a fault (:data:`edge.bench.street.FAULTS`); when, on the agent's clock."""
        answer = await self._command(f"inject {fault} {target} {detail}".strip())
        return datetime.fromisoformat(answer.split()[1])

    async def disk(self, state: str) -> datetime:
        """``full``: the cabinet's disk fills up (no file of the rig may grow); ``freed``."""
        answer = await self._command(f"disk {state}")
        return datetime.fromisoformat(answer.split()[1])

    async def pace(self, speed: float, step: float) -> None:
        """Run the agent's time ``speed`` times real time, in steps of ``step`` s."""
        await self._command(f"speed {speed} {step}")

    async def restart(self, off_s: float = 5.0) -> datetime:
        """Power back on after ``off_s`` simulated seconds without power: the agent's clock
        goes on from the last instant the rig was seen at; that boot instant."""
        seen = [c.at for c in self.read_journal()]
        if self.now is not None:
            seen.append(self.now)
        boot = max(seen) + timedelta(seconds=off_s)
        self._faults.clear()
        await self.start(boot)
        return boot

    async def kill(self) -> None:
        """SIGKILL: the power cut. Nothing is flushed, closed or handed back."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        code = await self.process.wait()
        assert code == -signal.SIGKILL, f"the rig had stopped on its own ({code}): {self.tail()}"
        await self._finish()

    async def stop(self) -> int:
        """SIGTERM, as ``systemctl stop`` does; the exit status."""
        assert self.process is not None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(f"the rig ignored SIGTERM: {self.tail()}") from None
        await self._finish()
        return code

    async def _finish(self) -> None:
        if self._reader is not None:
            await self._reader
        if self._copier is not None:
            await asyncio.wait_for(self._copier, 10)
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()

    # -- the pins, as a multimeter sees them ----------------------------------------------------

    def read_journal(self) -> list[Change]:
        """Every pin change of every boot, in order (a boot's first changes are the agent
        opening its pins)."""
        changes = []
        for raw in self.journal.read_text().splitlines():
            words = raw.split()
            if len(words) == 5 and words[0] == "P":
                changes.append(Change(datetime.fromisoformat(words[2]), words[3], float(words[4])))
        return changes

    def changes(self, line: str, since: datetime | None = None) -> list[Change]:
        """The changes of ``line`` (from ``since`` on)."""
        return [
            c for c in self.read_journal() if c.line == line and (since is None or c.at >= since)
        ]

    def level(self, line: str, at: datetime) -> float:
        """What ``line`` held at ``at`` (its last change at or before; 0 before any)."""
        held = 0.0
        for change in self.read_journal():
            if change.line == line and change.at <= at:
                held = change.state
        return held

    def trace(self, since: datetime) -> list[PinEvent]:
        """The journal as report events, ``t`` in agent seconds since ``since``."""
        return [
            PinEvent(
                at=c.at.isoformat(),
                t=round((c.at - since) / timedelta(seconds=1), 6),
                pin="",
                line=c.line,
                state=c.state,
            )
            for c in self.read_journal()
            if c.at >= since
        ]
