"""Flash wear: bytes a 100-lamp cabinet's agent writes to its state directory per day.

    .venv/bin/python bench/flash_bench.py [--days 1] [--lamps 100] [--speed 300]
                                          [--dir /var/tmp] [--no-strace] [--json OUT.json]

The real processes: ``ondijon orchestrator serve`` (SQLite store, console and public side
off), ``ondijon edge enroll`` and ``ondijon edge run``, the agent with ``--lamps``
simulated lamps and a simulated cabinet monitor, holding the example schedule
(``examples/schedule.json``), on its own simulated clock (``[clock] mode = "simulated"``,
``speed = --speed``: a day in 86,400/speed seconds; every timer of the agent runs on that
clock, the counters' persistence included). Two cases, one after the other on the same
agent process, each ``--days`` simulated days long:

1. online: the orchestrator is reachable; events are sent and acknowledged as they come;
2. offline: the orchestrator is stopped; the outbox fills.

What is measured, per simulated day:

- **bytes written**, from ``/proc/<agent>/io`` ``write_bytes`` (what the process sent to
  the page cache for the storage layer, in whole pages; the state directory must be on a
  real filesystem, not tmpfs, which the bench checks and prints). The agent's log goes to
  a pipe the bench reads, so it is not in that figure; its volume is given beside it.
- **the cross-check** (``strace -f -y``, if installed: Debian's ``strace`` package): every
  ``write``/``pwrite64`` and ``fsync``/``fdatasync`` of the agent, split by file: outbox
  database and its write-ahead log, state file (``state.json``, its ``.bak`` and their
  temporaries), latches, identity, directories. Syscall bytes are exact; ``write_bytes``
  rounds each dirtied page up, so the two differ by that rounding.
- **logical payload**: the events recorded in the window times their serialized size (the
  rows the outbox stores: read back from the orchestrator's store for the online case,
  from the outbox for the offline one).
- **write amplification** = bytes written / logical payload, and **fsyncs** per day.
- **SD card life**: years until a ``--card-gb`` card's rated program/erase cycles are used
  up at that rate, for typical ratings of consumer TLC, high-endurance TLC and industrial
  pSLC cards. Assumptions, printed with the figures: wear levelling across the whole
  card, and the card's own internal amplification (small writes into large erase blocks),
  which cannot be measured from the host, shown at 1x, at 10x and, the worst case, as a
  whole 4 MiB erase block rewritten for every fsync (a card whose controller maps blocks,
  not pages).
  The filesystem's own journal (ext4's jbd2 writes metadata on each fsync) is not counted
  either: it is written by a kernel thread, not the agent.

The state file is rewritten once a minute of the agent's clock while a lamp burns; the
bench checks that cadence (rewrites against the minutes the lamps burnt, from the readings'
``on_seconds``) and says so when the machine could not keep up with the fast clock (fsyncs
on a loaded disk, a starved CPU): the figures are then low, lower ``--speed``. Otherwise
they repeat within a few per cent (where the windows' edges fall, one quarter hour of
readings more or less). Run time: about 2 x days x 86,400/speed seconds plus ~15 s of
set-up (~10 minutes for the default day at x300).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
from agent_bench import agent_toml as base_agent_toml  # bench/, beside this script
from agent_bench import orchestrator_files, wait_port

from domain import documents
from domain.schedule.model import Site
from ondijon.client import AdminClient
from orchestrator.store.schema import events as events_table
from protos.ondijon.v1 import control_pb2, link_pb2

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SCHEDULE = ROOT / "examples" / "schedule.json"
GATEWAY = "flash-cabinet"
LATITUDE, LONGITUDE, TIME_ZONE = 47.3226, 5.0339, "Europe/Paris"
DAY_S = 86_400
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Typical rated program/erase cycles (vendors' datasheets and application notes; a given
# card's own rating is what counts): consumer TLC microSD, "high endurance" TLC cards for
# dash cams, industrial cards running their TLC/MLC as pSLC.
CARDS = (("consumer TLC", 1_000), ("high-endurance TLC", 3_000), ("industrial pSLC", 30_000))
ERASE_BLOCK = 4 * 1024 * 1024  # a typical SD card's allocation unit
# The agent's files, as reported (latches: bollards only, written when a latch changes).
KINDS = ["outbox db", "outbox WAL", "state file", "latches", "identity", "directory"]
_CALLS = "write|pwrite64|fsync|fdatasync"
# A call strace printed whole, one it cut (another thread's call came in between) and the
# end of such a call, with its result.
_SYSCALL = re.compile(
    rf"^(?P<pid>\d+)\s+(?P<ts>\d+\.\d+)\s+(?P<call>{_CALLS})\((?P<fd>\d+)<(?P<path>[^>]*)>"
    r"(?:.*\)\s+=\s+(?P<ret>-?\d+)|(?P<cut>.*<unfinished \.\.\.>))"
)
_RESUMED = re.compile(
    rf"^(?P<pid>\d+)\s+\d+\.\d+\s+<\.\.\. (?P<call>{_CALLS}) resumed>.*\)\s+=\s+(?P<ret>-?\d+)"
)


# -- what one window measured -------------------------------------------------------------


@dataclass
class Window:
    """One case's window: real and simulated bounds, and what was counted in it."""

    name: str
    real_start: float = 0.0
    real_end: float = 0.0
    sim_start: datetime = EPOCH
    sim_end: datetime = EPOCH
    io_start: dict[str, int] = field(default_factory=dict)
    io_end: dict[str, int] = field(default_factory=dict)
    log_bytes: int = 0

    @property
    def days(self) -> float:
        return (self.sim_end - self.sim_start).total_seconds() / DAY_S

    def io(self, key: str) -> int:
        return self.io_end.get(key, 0) - self.io_start.get(key, 0)


@dataclass
class Syscalls:
    """What strace saw in a window, by kind of file."""

    bytes: Counter[str] = field(default_factory=Counter)
    writes: Counter[str] = field(default_factory=Counter)
    fsyncs: Counter[str] = field(default_factory=Counter)
    others: Counter[str] = field(default_factory=Counter)  # unclassified paths, for the reader


def file_kind(path: str, state_dir: str) -> str | None:
    """Which of the agent's files ``path`` is (None: not a file of the state directory)."""
    if path == state_dir:
        return "directory"
    if not path.startswith(state_dir + "/"):
        return None
    name = os.path.basename(path)
    if name.startswith("outbox.sqlite-wal"):
        return "outbox WAL"
    if name.startswith("outbox.sqlite"):
        return "outbox db"
    if name.startswith(("state.json", ".state.json")):
        return "state file"
    if "latches" in name:
        return "latches"
    if "/identity" in path[len(state_dir) :]:
        return "identity"
    return "other"


def read_strace(trace: Path, state_dir: str, windows: list[Window]) -> dict[str, Syscalls]:
    """Syscalls per window, by kind of file (lines outside every window are skipped)."""
    found = {w.name: Syscalls() for w in windows}
    cut: dict[str, tuple[str, float, str]] = {}  # by thread: the call strace cut
    with open(trace, errors="replace") as handle:
        for line in handle:
            match = _SYSCALL.match(line)
            if match is not None and match["cut"] is not None:
                cut[match["pid"]] = (match["call"], float(match["ts"]), match["path"])
                continue
            if match is not None:
                call, ts, path = match["call"], float(match["ts"]), match["path"]
            elif (resumed := _RESUMED.match(line)) is not None and resumed["pid"] in cut:
                call, ts, path = cut.pop(resumed["pid"])
                match = resumed
            else:
                continue
            window = next((w for w in windows if w.real_start <= ts < w.real_end), None)
            kind = file_kind(path, state_dir)
            if window is None or kind is None:
                continue  # outside the windows; sockets, pipes (the log), eventfds
            counted = found[window.name]
            if kind == "other":
                counted.others[os.path.basename(path)] += 1
            ret = int(match["ret"])
            if call in ("fsync", "fdatasync"):
                counted.fsyncs[kind] += 1
            elif ret > 0:
                counted.bytes[kind] += ret
                counted.writes[kind] += 1
    return found


# -- processes ----------------------------------------------------------------------------


def filesystem(path: Path) -> str:
    """``ext4 /dev/vda`` for the filesystem holding ``path``."""
    out = subprocess.run(
        ["df", "--output=fstype,source", str(path)], capture_output=True, text=True, check=True
    ).stdout.split("\n")[1]
    return " ".join(out.split())


def proc_io(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/io") as handle:
        return {k: int(v) for k, v in (line.split(": ") for line in handle if ": " in line)}


class Drain(threading.Thread):
    """Reads a process's output (so it never stalls on a full pipe), counting the bytes."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.total = 0
        self.tail = b""

    def run(self) -> None:
        for chunk in iter(lambda: self.stream.read1(65536), b""):
            self.total += len(chunk)
            self.tail = (self.tail + chunk)[-4000:]


def stop(process: subprocess.Popen[bytes] | None, pid: int | None = None) -> bool:
    """SIGTERM to ``pid`` (default: the process itself), SIGKILL to both after 30 s;
    ``False`` if it had to be killed. ``pid`` is the agent when ``process`` is strace."""
    if process is None or process.poll() is not None:
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid or process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
        return True
    except subprocess.TimeoutExpired:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.kill()
        process.wait()
        return False


_ENV = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", PYTHONUNBUFFERED="1")
_CLI = [sys.executable, "-m", "ondijon.cli"]


def start_orchestrator(root: Path) -> subprocess.Popen[bytes]:
    with open(root / "orchestrator.log", "ab") as log:
        return subprocess.Popen(
            [*_CLI, "orchestrator", "serve", "--config", str(root / "orchestrator.toml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_ENV,
        )


def enroll(config: Path, token: str) -> None:
    done = subprocess.run(
        [*_CLI, "edge", "enroll", "--config", str(config), "--token", token],
        capture_output=True,
        env=_ENV,
    )
    if done.returncode != 0:
        raise RuntimeError(f"enrollment failed: {done.stdout!r} {done.stderr!r}")


def start_agent(config: Path, trace: Path | None) -> subprocess.Popen[bytes]:
    """``ondijon edge run``, under strace when ``trace`` is given; output to a pipe."""
    command = [*_CLI, "edge", "run", "--config", str(config)]
    if trace is not None:
        command = [
            "strace", "-f", "-qq", "-ttt", "-y", "-s", "0", "--seccomp-bpf",
            "-e", "trace=write,pwrite64,fsync,fdatasync", "-e", "signal=none",
            "-o", str(trace), *command,
        ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_ENV)


def _traced_agent(strace_pid: int) -> int:
    """The pid of the agent strace runs (0 while it has not exec'd it yet: strace's own
    children, and the agent before its exec, still run strace's command line)."""
    for child in psutil.Process(strace_pid).children():
        with contextlib.suppress(psutil.Error):
            if child.cmdline()[:3] == _CLI:
                return int(child.pid)
    return 0


def _leftovers(config: Path) -> list[int]:
    """Agents of this run still alive (run by a strace that was killed): their pids."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline[:3] == _CLI and str(config) in cmdline:
            found.append(int(process.info["pid"]))
    return found


def agent_toml(root: Path, lamps: int, address: str, enroll: str, clock: str) -> str:
    """agent_bench's configuration for this bench's cabinet: its lamps, a cabinet monitor
    and ``clock`` (a ``[clock]`` table, or nothing)."""
    return base_agent_toml(
        root,
        lamps,
        address,
        enroll,
        gateway=GATEWAY,
        site=Site(latitude=LATITUDE, longitude=LONGITUDE, time_zone=TIME_ZONE),
        equipment=f'{clock}\n[cabinet]\nid = "cabinet"\nbackend = "simulated"\n',
    )


# -- the run ------------------------------------------------------------------------------


@dataclass
class Run:
    root: Path
    lamps: int
    days: float
    speed: float
    start: datetime
    use_strace: bool
    windows: list[Window] = field(default_factory=list)
    origin: float = 0.0
    agent_pid: int = 0
    files_at_end: dict[str, int] = field(default_factory=dict)

    def sim_now(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.origin) * self.speed)

    def real_at(self, sim: datetime) -> float:
        return self.origin + (sim - self.start).total_seconds() / self.speed


async def _gateway_synced(client: AdminClient) -> bool:
    listing = await client.list_gateways(control_pb2.ListGatewaysRequest())
    return any(g.gateway_id == GATEWAY and g.connected and g.held for g in listing.gateways)


async def _measure(run: Run, name: str, drain: Drain) -> Window:
    """Wait ``run.days`` simulated days, taking /proc figures at both ends."""
    window = Window(name)
    window.real_start = time.time()
    window.sim_start = run.sim_now()
    window.io_start = proc_io(run.agent_pid)
    logged = drain.total
    end = window.sim_start + timedelta(days=run.days)
    await asyncio.sleep(max(0.0, run.real_at(end) - time.time()))
    window.io_end = proc_io(run.agent_pid)
    window.real_end = time.time()
    window.sim_end = run.sim_now()
    window.log_bytes = drain.total - logged
    return window


async def execute(run: Run) -> None:
    root = run.root
    port, enroll_port, profile = orchestrator_files(root)
    address = profile.address
    orchestrator: subprocess.Popen[bytes] | None = start_orchestrator(root)
    agent: subprocess.Popen[bytes] | None = None
    drain: Drain | None = None
    try:
        try:
            await wait_port(port)
            await wait_port(enroll_port)
        except TimeoutError:
            print((root / "orchestrator.log").read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        client = AdminClient(profile)
        added = await client.add_gateway(
            control_pb2.AddGatewayRequest(
                gateway_id=GATEWAY,
                serial=f"SN-{GATEWAY}",
                commune="Dijon",
                latitude=LATITUDE,
                longitude=LONGITUDE,
                time_zone=TIME_ZONE,
            ),
        )
        kind = documents.kind_named("schedule")
        payload = documents.payload_from_json(
            kind, EXAMPLE_SCHEDULE.read_text(), source=str(EXAMPLE_SCHEDULE)
        )
        await client.put_desired_state(
            control_pb2.PutDesiredStateRequest(
                gateway_id=GATEWAY, kind=link_pb2.DOCUMENT_KIND_SCHEDULE, payload=payload
            ),
        )
        config = root / "agent.toml"
        enroll_config = agent_toml(root, run.lamps, address, f"localhost:{enroll_port}", "")
        config.write_text(enroll_config)
        enroll(config, added.enrollment_token)

        # The agent's clock reads `start` at `origin`: the bench reads the same time.
        run.origin = time.time()
        origin = datetime.fromtimestamp(run.origin, UTC)
        clock = (
            f'[clock]\nmode = "simulated"\nstart = "{run.start.isoformat()}"\n'
            f'speed = {run.speed}\norigin = "{origin.isoformat()}"\n'
        )
        config.write_text(agent_toml(root, run.lamps, address, f"localhost:{enroll_port}", clock))
        agent = start_agent(config, root / "strace.txt" if run.use_strace else None)
        drain = Drain(agent.stdout)
        drain.start()
        run.agent_pid = agent.pid
        deadline = time.monotonic() + 120
        if run.use_strace:
            # strace forks short-lived children of its own first (probing ptrace and
            # seccomp): the agent is the child running ``edge run``.
            while not (found := _traced_agent(agent.pid)):
                if time.monotonic() > deadline or agent.poll() is not None:
                    raise RuntimeError("strace did not start the agent")
                await asyncio.sleep(0.05)
            run.agent_pid = found
        while not await _gateway_synced(client):
            if time.monotonic() > deadline or agent.poll() is not None:
                raise RuntimeError("the agent did not sync: " + drain.tail.decode(errors="replace"))
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # start-up settles: first reports, first metering pass

        run.windows.append(await _measure(run, "online", drain))
        await asyncio.sleep(1.0)  # the window's last readings reach the store
        stop(orchestrator)
        orchestrator = None
        await asyncio.sleep(3.0)  # the link notices and backs off
        run.windows.append(await _measure(run, "offline", drain))
        await asyncio.sleep(1.0)  # the window's last readings reach the outbox
    finally:
        asked = time.monotonic()
        if not stop(agent, run.agent_pid):
            tail = drain.tail.decode(errors="replace") if drain else ""
            print(f"the agent did not stop on SIGTERM in 30 s: killed; it said:\n{tail}")
        elif agent is not None:
            print(f"agent stopped on SIGTERM in {time.monotonic() - asked:.1f} s")
        stop(orchestrator)
        for pid in _leftovers(root / "agent.toml"):
            print(f"agent {pid} still running after its strace: killed")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    state_dir = root / "agent"
    run.files_at_end = {
        p.name: p.stat().st_size for p in sorted(state_dir.iterdir()) if p.is_file()
    }


# -- logical payload ----------------------------------------------------------------------


def _count(found: Counter[str], body: bytes, lit: Counter[str]) -> None:
    event = link_pb2.Event.FromString(body)
    found["events"] += 1
    found["bytes"] += len(body)
    found[f"type:{event.type}"] += 1
    if event.type == "energy_interval":
        lit[event.device_id] += int(event.attributes.get("on_seconds", "0"))


def _payload(found: Counter[str], lit: Counter[str]) -> Counter[str]:
    # Minutes the busiest lamp burnt: each is one write of the state file (counters grew).
    found["lit_minutes"] = max(lit.values(), default=0) // 60
    return found


def payload_online(root: Path, window: Window) -> Counter[str]:
    """Events of the window (by their time) the orchestrator stored: count and bytes."""
    engine = sa.create_engine(f"sqlite:///{root / 'orchestrator.db'}")
    found: Counter[str] = Counter()
    lit: Counter[str] = Counter()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(events_table.c.at, events_table.c.payload).where(
                events_table.c.gateway_id == GATEWAY
            )
        )
        for at, body in rows:
            at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
            if window.sim_start <= at < window.sim_end:
                _count(found, body, lit)
    engine.dispose()
    return _payload(found, lit)


def payload_offline(root: Path, window: Window) -> Counter[str]:
    """Events of the window (by their time) waiting in the outbox: count and bytes."""
    found: Counter[str] = Counter()
    lit: Counter[str] = Counter()
    first = int(window.sim_start.timestamp() * 1e6)
    last = int(window.sim_end.timestamp() * 1e6)
    conn = sqlite3.connect(f"file:{root / 'agent' / 'outbox.sqlite'}?mode=ro", uri=True)
    try:
        for lane in ("alarm_lane", "event_lane", "metering_lane"):
            for (body,) in conn.execute(
                f"SELECT body FROM {lane} WHERE at_us >= ? AND at_us < ?",
                (first, last),
            ):
                _count(found, body, lit)
    finally:
        conn.close()
    return _payload(found, lit)


# -- report -------------------------------------------------------------------------------


def _kb(value: float) -> str:
    return f"{value / 1000:,.0f} kB"


def _mb(value: float) -> str:
    return f"{value / 1e6:,.2f} MB"


def report(run: Run, card_gb: float) -> dict[str, Any]:
    state_dir = str((run.root / "agent").resolve())
    trace = run.root / "strace.txt"
    syscalls = read_strace(trace, state_dir, run.windows) if run.use_strace else {}
    payloads = {
        "online": payload_online(run.root, run.windows[0]),
        "offline": payload_offline(run.root, run.windows[1]),
    }
    print(
        f"\n{run.lamps} simulated lamps and a cabinet monitor, example schedule, clock from "
        f"{run.start:%Y-%m-%d %H:%M %Z} at x{run.speed:g}; state directory on "
        f"{filesystem(run.root)} ({state_dir})"
    )
    result: dict[str, Any] = {"lamps": run.lamps, "speed": run.speed, "cases": {}}
    for window in run.windows:
        days = window.days
        payload = payloads[window.name]
        written = window.io("write_bytes")
        per_day = written / days
        payload_per_day = payload["bytes"] / days
        case: dict[str, Any] = {
            "days": days,
            "events_per_day": payload["events"] / days,
            "payload_bytes_per_day": payload_per_day,
            "write_bytes_per_day": per_day,
            "amplification": per_day / payload_per_day if payload_per_day else None,
            "log_bytes_per_day": window.log_bytes / days,
            "event_types_per_day": {
                k.removeprefix("type:"): v / days
                for k, v in payload.items()
                if k.startswith("type:")
            },
            "lit_minutes_per_day": payload["lit_minutes"] / days,
        }
        print(
            f"\n== {window.name}: {days:.2f} simulated days"
            f" (from {window.sim_start:%d %b %H:%M} UTC)"
        )
        types = ", ".join(f"{v:,.0f} {k}" for k, v in sorted(case["event_types_per_day"].items()))
        print(f"  events recorded      {case['events_per_day']:>12,.0f} /day ({types})")
        print(f"  logical payload      {_kb(payload_per_day):>12} /day (events x serialized size)")
        print(f"  written (/proc io)   {_kb(per_day):>12} /day   write_bytes, whole pages")
        if case["amplification"] is not None:
            print(f"  write amplification  {case['amplification']:>12.1f} x  (written / payload)")
        if window.name in syscalls:
            seen = syscalls[window.name]
            total = sum(seen.bytes.values())
            fsyncs = sum(seen.fsyncs.values())
            case["strace_bytes_per_day"] = total / days
            case["fsyncs_per_day"] = fsyncs / days
            case["by_file"] = {
                kind: {
                    "bytes_per_day": seen.bytes[kind] / days,
                    "writes_per_day": seen.writes[kind] / days,
                    "fsyncs_per_day": seen.fsyncs[kind] / days,
                }
                for kind in KINDS + sorted(set(seen.bytes) - set(KINDS))
            }
            print(
                f"  written (strace)     {_kb(total / days):>12} /day   write/pwrite64 bytes,"
                f" {total / written:.2f} of write_bytes"
            )
            print(f"  fsyncs               {fsyncs / days:>12,.0f} /day")
            for kind, figures in case["by_file"].items():
                share = figures["bytes_per_day"] / (total / days) if total else 0.0
                print(
                    f"    {kind:<12} {_kb(figures['bytes_per_day']):>12} /day ({share:5.1%}),"
                    f" {figures['writes_per_day']:>8,.0f} writes, "
                    f"{figures['fsyncs_per_day']:>6,.0f} fsyncs"
                )
            if seen.others:
                print(f"    (other files: {dict(seen.others)})")
            # The product rewrites the state file once a minute while a lamp burns (two
            # files: state.json and its .bak); a clock too fast for this disk's fsyncs makes
            # the agent skip minutes, and the figures above would be low.
            rewrites = seen.writes["state file"] / 2
            expected = payload["lit_minutes"]
            case["state_rewrites_per_day"] = rewrites / days
            case["state_cadence"] = rewrites / expected if expected else None
            if expected:
                print(
                    f"  state file rewritten {rewrites:,.0f} times for {expected:,} lit minutes"
                    f" ({rewrites / expected:.0%} of the product's cadence)"
                    + ("" if rewrites >= 0.95 * expected else ": lower --speed on this machine")
                )
        print(
            f"  agent log            {_kb(window.log_bytes / days):>12} /day to stderr (journald in"
            " the field; a pipe here, not in the figures above)"
        )
        # What the card writes into its flash a day, in three models: the host's bytes as
        # they are (ideal wear levelling), ten times that, and a card that rewrites a whole
        # erase block for every flush (a block-mapped controller: the worst case).
        flash_per_day = {"1x": per_day, "10x": 10 * per_day}
        if "fsyncs_per_day" in case:
            flash_per_day["block"] = case["fsyncs_per_day"] * ERASE_BLOCK
        years = {
            f"{card} {model}": card_gb * 1e9 * cycles / flash / 365
            for card, cycles in CARDS
            for model, flash in flash_per_day.items()
        }
        case["card_years"] = years
        print(
            f"  {card_gb:g} GB card, years until its rated P/E cycles are used, if the card"
            " writes 1x / 10x the bytes"
            + (" / a 4 MiB erase block per fsync:" if "block" in flash_per_day else ":")
        )
        for card, cycles in CARDS:
            lives = " / ".join(f"{years[f'{card} {model}']:,.0f}" for model in flash_per_day)
            print(f"    {card:<20} {cycles:>6,} P/E: {lives} years")
        result["cases"][window.name] = case
    sizes = ", ".join(f"{k} {_kb(v)}" for k, v in run.files_at_end.items())
    print(f"\nfiles at the end: {sizes}")
    result["files_at_end"] = run.files_at_end
    result["filesystem"] = filesystem(run.root)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=1.0, help="simulated days per case")
    parser.add_argument("--lamps", type=int, default=100)
    parser.add_argument("--speed", type=float, default=300.0, help="simulated clock speed")
    parser.add_argument(
        "--start", default="2026-03-17T12:00:00+01:00", help="simulated start (ISO 8601)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the state goes (not tmpfs)")
    parser.add_argument("--no-strace", action="store_true", help="skip the strace cross-check")
    parser.add_argument("--card-gb", type=float, default=32.0)
    parser.add_argument("--json", type=Path, default=None, help="write the figures there too")
    parser.add_argument("--keep", action="store_true", help="keep the directory (strace.txt)")
    args = parser.parse_args()
    use_strace = not args.no_strace and shutil.which("strace") is not None
    if not args.no_strace and not use_strace:
        print("strace not found (Debian: apt-get install strace): no per-file cross-check")
    root = Path(tempfile.mkdtemp(prefix="flash-bench-", dir=args.dir))
    try:
        kind = filesystem(root)
        if kind.startswith("tmpfs"):
            print(f"{root} is on tmpfs ({kind}): write_bytes would not count; use --dir")
            return 2
        run = Run(
            root=root,
            lamps=args.lamps,
            days=args.days,
            speed=args.speed,
            start=datetime.fromisoformat(args.start),
            use_strace=use_strace,
        )
        print(
            f"running {args.lamps} lamps, {args.days:g} simulated day(s) online then offline at"
            f" x{args.speed:g} (~{2 * args.days * DAY_S / args.speed:.0f} s) in {root} ({kind})"
        )
        asyncio.run(execute(run))
        result = report(run, args.card_gb)
        result["strace"] = use_strace
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
