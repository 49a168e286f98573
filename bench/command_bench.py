"""Benchmark: a city-wide lighting program acknowledged by 10,000 gateways, and an
operator's command to its acknowledgement under ingest load.

    python bench/command_bench.py [--gateways 10000] [--procs 4] [--command-gateways 1000]
                                  [--load 20000] [--commands 200] [--load-nice 10]
                                  [--json] [--profile] [--only commands|fanout]
    python bench/command_bench.py --quick

One real orchestrator process (``ondijon orchestrator serve``, SQLite) and load processes
(bench/fleet.py) in which every gateway has its own certificate and its own mutual-TLS
GatewayLink stream, acknowledges every document and answers every command DONE as the
agent does once it has acted. Through the admin API over mutual TLS:

1. Commands. ``--command-gateways`` gateways connected (2 load processes); ``--commands``
   lamp overrides (``ondijon override lamp``'s command), each to another gateway, sent
   one every ``--spacing`` s; each call's time until ``GetCommand`` shows the answer (the
   call waits for it: ``wait_ms``; ``--poll``: asked every 5 ms instead, as before it could)
   shows the gateway's DONE stored: p50/p99, with the part until the gateway received it.
   First with no other traffic (the peer: once every gateway's first report is
   acknowledged and the orchestrator is idle again), then while the gateways send
   ``--load`` device updates per second (half the ingest knee: bench/ingest_curve.py
   ``--loads 20000``), whose acknowledgement p50/p99 is printed beside them: first with
   the load processes at normal priority, sharing the cores with the orchestrator as
   equals, then, on the same streams, with every thread of them at niceness
   ``--load-nice`` (default 10; 0 leaves it out), the orchestrator first in line for the
   cores, as in a city where the gateways run on their own boards. For each, the load
   as delivered from the first command to the last DONE: updates per second due, sent
   and acknowledged in that window, how late the reports were sent and their
   acknowledgement p50/p99. A generator that did not offer its load (under 95 % of the
   updates due acknowledged in the window, or a report never acknowledged) is marked
   LOAD NOT DELIVERED with a warning: its commands were not measured under the load
   asked for; one that offered it but sent its reports over 50 ms late at p99 (stalled,
   then sending what it owed at once) is marked LOAD SENT LATE with a warning. Beside
   them, the disk under the store: fsync p50/p99 (a command waits for two commits).
2. Fan-out. ``--gateways`` gateways connected from ``--procs`` load processes, at most
   ``--opening`` handshakes in flight per process; the time to open them all is printed
   on its own. Then one ``PutGroupDocument`` of a lighting program to the whole city:
   time until the call returns, until every gateway received it, until every
   acknowledgement is stored (goal under 5 s; read from the SQLite file every 20 ms) and
   until the operator's convergence view, looked at from then on, counts them all, with
   the orchestrator's CPU meanwhile. In the same run, on the same streams, the floor: every
   gateway sends one small state report at once, each acknowledged once stored (one
   small message each way per gateway, as the program costs); and the peer:
   ``PutDesiredState`` one gateway at a time (the shell loop), timed on a sample and
   extrapolated to the city (bench/city_bench.py's).

``--profile``: py-spy samples the orchestrator during the commands under ingest load, and
from the put to the last acknowledgement (threads, top functions).

``--only``: one of the two parts (``commands``: only ``--command-gateways`` gateways are
made, about a minute). ``--quick``: 400 gateways, 200 of them for 60 commands at 4,000
updates/s (the same updates per gateway), about a minute. The soft limit of open files
is raised to the hard limit (the orchestrator holds a socket per gateway). The load
processes share the machine's cores with the orchestrator (niced or not: a niced process
still takes what the orchestrator leaves), and the load average is printed: on a machine
shared with other work, latency tails are the machine's as much as the code's. Without
root a niceness only goes up, so the niced measurement always comes second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from city import BenchCity  # bench/, beside this script
from city_bench import city_wide_program, fleet_pages, one_at_a_time
from fleet import load_process
from ingest_curve import HEADER, Run, Step, _py_spy, print_py_spy

from ondijon.admin import lamp_override
from ondijon.client import AdminClient
from protos.ondijon.v1 import control_pb2, link_pb2

DEVICES = 100  # device states per report, as bench/ingest_curve.py
POLL_S = 0.005  # with --poll, how often the operator's side asks GetCommand
WAIT_MS = 10_000  # otherwise GetCommand holds the call until the answer (or this long)
# --load-nice's default: the orchestrator ahead of the load at about 9 to 1 when both want
# a core. 19 measured no better (4 runs each on this 2-core machine) and leaves a busy
# machine's generator less of a chance to offer its load.
LOAD_NICE = 10
SETTLED = (link_pb2.COMMAND_STATUS_DONE, link_pb2.COMMAND_STATUS_REFUSED)


@dataclass
class Sent:
    command_id: str
    at: float  # epoch, when the call started
    call_s: float  # SendCommand's own time
    acked_s: float  # until GetCommand showed the gateway's answer
    status: int


def raise_open_files(needed: int) -> tuple[int, int]:
    """Soft limit of open files up to the hard one; (soft, hard) afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        print(f"open files limited to {soft}: fewer than the {needed} this run asks for")
    return soft, hard


class Fleet:
    """Load processes holding ``identities``' streams to the orchestrator."""

    def __init__(
        self,
        city: BenchCity,
        gateways: int,
        procs: int,
        opening: int,
        ctx: Any,
        devices: int = DEVICES,
    ) -> None:
        address = f"127.0.0.1:{city.port}"
        share = [(address, key, chain) for key, chain in city.identities[:gateways]]
        self.pipes, self.procs = [], []
        for i in range(procs):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=load_process,
                args=(theirs, city.ca.root_pem, share[i::procs], devices, False, opening),
            )
            proc.start()
            self.pipes.append(ours)
            self.procs.append(proc)
        opened = [pipe.recv() for pipe in self.pipes]
        self.opened = sum(o["opened"] for o in opened)
        self.lost = sum(o["lost"] for o in opened)
        self.open_s = max(o["ended"] for o in opened) - min(o["began"] for o in opened)
        self.load_rss = sum(o["rss"] for o in opened)

    def answers(self) -> tuple[dict[str, float], list[float]]:
        """Commands (id: instant received) and documents (instants) the gateways were
        sent since the last call."""
        commands: dict[str, float] = {}
        documents: list[float] = []
        for pipe in self.pipes:
            pipe.send("answers")
            part = pipe.recv()
            commands.update(part["commands"])
            documents += part["documents"]
        return commands, documents

    def prime(self) -> None:
        """One state report from every gateway, so the orchestrator knows their lamps
        before the first command (as it would of any agent); returns once every report
        is acknowledged."""
        for pipe in self.pipes:
            pipe.send((1.0, time.time() + 0.2, 1.0, 0.0))
        for pipe in self.pipes:
            pipe.recv()

    def burst(self) -> tuple[int, list[float]]:
        """Every gateway sends one state report at the same instant: how many were sent,
        and the seconds from each one's sending to its acknowledgement (sent once it is
        stored)."""
        start_at = time.time() + 0.5
        for pipe in self.pipes:
            # One report each within 1 ms (a few in 10,000 fall just past the end: the
            # instants are that close to the epoch's float resolution; they are not sent).
            pipe.send((1000.0, start_at, 0.001, 0.0))
        parts = [pipe.recv() for pipe in self.pipes]
        return sum(p["measured"] for p in parts), [x for p in parts for x in p["latencies"]]

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)
        for proc in self.procs:
            proc.join(60)
            if proc.is_alive():
                proc.kill()


# -- commands ---------------------------------------------------------------------------------


async def send_commands(
    admin: AdminClient, gateway_ids: list[str], count: int, spacing: float, poll: bool = False
) -> list[Sent]:
    """``count`` lamp overrides, one every ``spacing`` s, each to the next of
    ``gateway_ids`` spread over them; each followed until its answer is visible (``poll``:
    asking every 5 ms; else a call the orchestrator answers once the gateway has)."""

    # The orchestrator lets one operator have 16 calls open at once: a slow answer makes
    # the next calls wait here (and counts in their time).
    calls = asyncio.Semaphore(12)

    async def one(gateway_id: str) -> Sent:
        command = lamp_override(30, 5, 10, ["lamp-0000"])
        at, t0 = time.time(), time.perf_counter()
        async with calls:
            await admin.send_command(
                control_pb2.SendCommandRequest(gateway_id=gateway_id, command=command)
            )
        call_s = time.perf_counter() - t0
        ask = control_pb2.GetCommandRequest(
            command_id=command.command_id, wait_ms=0 if poll else WAIT_MS
        )
        while True:
            async with calls:
                answer = await admin.get_command(ask)
            if answer.status in SETTLED:
                break
            if poll:
                await asyncio.sleep(POLL_S)
        return Sent(command.command_id, at, call_s, time.perf_counter() - t0, answer.status)

    tasks = []
    start = time.monotonic()
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i * spacing - time.monotonic()))
        target = gateway_ids[i * len(gateway_ids) // count]
        tasks.append(asyncio.create_task(one(target)))
    return list(await asyncio.gather(*tasks))


def latency(sent: list[Sent], received: dict[str, float]) -> dict[str, float]:
    done = [s for s in sent if s.status == link_pb2.COMMAND_STATUS_DONE]
    acked = [1000 * s.acked_s for s in done]
    to_gateway = [1000 * (received[s.command_id] - s.at) for s in done if s.command_id in received]
    return {
        "sent": len(sent),
        "done": len(done),
        "received": len(to_gateway),
        "p50_ms": percentile(acked, 50),
        "p99_ms": percentile(acked, 99),
        "max_ms": max(acked, default=float("nan")),
        "call_p50_ms": percentile([1000 * s.call_s for s in done], 50),
        "to_gateway_p50_ms": percentile(to_gateway, 50),
        "to_gateway_p99_ms": percentile(to_gateway, 99),
    }


def settle(server: psutil.Process, idle_pct: float = 10.0, within_s: float = 30.0) -> None:
    """Wait until ``server`` uses less than ``idle_pct`` % of a core over half a second
    (at most ``within_s``)."""
    deadline = time.monotonic() + within_s
    server.cpu_percent()
    while server.cpu_percent(0.5) >= idle_pct and time.monotonic() < deadline:
        pass


def fsync_ms(directory: Path, count: int = 200) -> list[float]:
    """The disk under the store: ``count`` 4 KiB appends, each flushed with fsync (what
    each commit waits for: SQLite's WAL, ``synchronous=FULL``), in milliseconds."""
    path = directory / "fsync-probe"
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(count):
            os.write(fd, b"\0" * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            times.append(1000 * (time.perf_counter() - t0))
    finally:
        os.close(fd)
        path.unlink()
    return times


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclass
class UnderLoad:
    """The commands sent while the gateways offered the ingest load, with the load
    generator at one priority."""

    nice: int
    sent: list[Sent]
    step: Step
    reports: list[tuple[float, float, float | None]]  # (due, sent, acknowledged), epochs
    load_average: float
    threads_nice: list[int]  # every load process thread's niceness after the step


def commands_phase(
    city: BenchCity, server: psutil.Process, args: argparse.Namespace, ctx: Any
) -> dict[str, Any]:
    n = args.command_gateways
    print(f"commands: opening {n} streams from 2 load processes ...", flush=True)
    fleet = Fleet(city, n, 2, 0, ctx)
    ids = [f"fan-{g:05d}" for g in range(n)]
    figures: dict[str, Any] = {"gateways": n, "opened": fleet.opened, "server_nice": server.nice()}
    loaders = [psutil.Process(p.pid) for p in fleet.procs]
    # Normal priority first: without root a process's niceness only goes up.
    priorities = [0, args.load_nice] if args.load_nice else [0]
    try:
        fleet.prime()
        fleet.answers()
        # The peer is a quiet orchestrator: not one still storing the streams' hellos and
        # first reports (their last writes follow the acknowledgements).
        settle(server)
        commands_s = args.commands * args.spacing
        warm = 3.0
        run = Run(
            fleet.pipes,
            [server],
            loaders,
            argparse.Namespace(
                gateways=n, devices=DEVICES, seconds=warm + commands_s + 2.0, warm=warm, p99_ms=100
            ),
        )

        async def under_load(admin: AdminClient, nice: int) -> UnderLoad:
            if nice:
                renice(loaders, nice)
            # Each measurement starts from a quiet orchestrator, as the peer does.
            await asyncio.to_thread(settle, server)
            loop = asyncio.get_running_loop()
            step = loop.run_in_executor(None, run.step, args.load)
            await asyncio.sleep(0.5 + warm)
            spy = start_profile(server.pid, profiled(nice)) if args.profile else None
            sent = await send_commands(admin, ids, args.commands, args.spacing, args.poll)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            done = await step
            return UnderLoad(
                nice, sent, done, run.reports, os.getloadavg()[0], threads_nice(loaders)
            )

        async def operate() -> tuple[list[Sent], list[UnderLoad]]:
            async with AdminClient(city.operator(), timeout=60) as admin:
                quiet = await send_commands(admin, ids, args.commands, args.spacing, args.poll)
                return quiet, [await under_load(admin, nice) for nice in priorities]

        def profiled(nice: int) -> Path:
            return city.work / f"commands-nice{nice}.py-spy"

        quiet, loaded = asyncio.run(operate())
        received, _ = fleet.answers()
    finally:
        fleet.close()
    if args.profile:
        for nice in priorities:
            print(
                f"where the orchestrator's time went during the commands under ingest load, "
                f"{generator(nice)}:"
            )
            show_profile(profiled(nice))
    figures["load_average"] = os.getloadavg()[0]
    disk = fsync_ms(city.work)
    figures["fsync_p50_ms"], figures["fsync_p99_ms"] = percentile(disk, 50), percentile(disk, 99)
    figures["quiet"] = latency(quiet, received)
    for measured in loaded:
        part = {
            "loaded": latency(measured.sent, received),
            "ingest": vars(measured.step),
            "delivery": delivery(measured.reports, window(measured.sent), DEVICES),
            "load_average": measured.load_average,
            "threads_nice": measured.threads_nice,
        }
        if measured.nice:
            figures["niced"] = {"nice": measured.nice, **part}
        else:
            figures.update(part)
    return figures


def generator(nice: int) -> str:
    return f"generator at nice {nice}" if nice else "generator at normal priority"


def renice(procs: list[psutil.Process], nice: int) -> None:
    """Every thread of ``procs`` at niceness ``nice``. On Linux a thread's priority is
    its own (setpriority on a process id changes only its first thread) and a new thread
    inherits its creator's, so each thread is set, until a pass finds none left."""
    for _ in range(10):
        changed = False
        for proc in procs:
            for thread in proc.threads():
                try:
                    if os.getpriority(os.PRIO_PROCESS, thread.id) != nice:
                        os.setpriority(os.PRIO_PROCESS, thread.id, nice)
                        changed = True
                except ProcessLookupError:  # the thread ended meanwhile
                    pass
        if not changed:
            return


def threads_nice(procs: list[psutil.Process]) -> list[int]:
    """The niceness of every thread of ``procs``."""
    out = []
    for proc in procs:
        for thread in proc.threads():
            with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
                out.append(os.getpriority(os.PRIO_PROCESS, thread.id))
    return out


def window(sent: list[Sent]) -> tuple[float, float]:
    """From the first call to the last answer seen (epochs)."""
    return min(s.at for s in sent), max(s.at + s.acked_s for s in sent)


LATE_MS = 50.0  # a generator sending later than this at p99 bunches its reports
DELIVERED = 0.95  # of the reports due in the window, the share acknowledged in it


def delivery(
    reports: list[tuple[float, float, float | None]], within: tuple[float, float], devices: int
) -> dict[str, Any]:
    """Whether the load generator offered its load while the commands were measured:
    of the state reports (due, sent, acknowledged; epochs) whose due instant falls
    ``within``, how late they were sent and acknowledged, and the updates per second
    due, sent and acknowledged in it. A generator starved of CPU sends what it owes late,
    at once: fewer updates reach the orchestrator in the window than were due, or they
    come bunched. ``delivered`` is False if under ``DELIVERED`` of the due updates were
    acknowledged in the window or any report never was; ``on_time`` is False if the
    sends were over ``LATE_MS`` late at p99; ``short`` says why."""
    start, end = within
    span = max(end - start, 1e-9)
    due = [r for r in reports if start <= r[0] < end]
    late = [1000 * (sent - at) for at, sent, _ in due]
    acked = [1000 * (ack - sent) for _, sent, ack in due if ack is not None]
    unacked = sum(ack is None for *_, ack in due)
    rate = devices / span
    out: dict[str, Any] = {
        "window_s": span,
        "due_per_s": len(due) * rate,
        "sent_per_s": sum(start <= sent < end for _, sent, _ in reports) * rate,
        "acked_per_s": sum(ack is not None and start <= ack < end for *_, ack in reports) * rate,
        "late_p50_ms": percentile(late, 50),
        "late_p99_ms": percentile(late, 99),
        "late_max_ms": max(late, default=float("nan")),
        "ack_p50_ms": percentile(acked, 50),
        "ack_p99_ms": percentile(acked, 99),
        "unacked": unacked,
    }
    short = []
    if not due:
        short.append("no report was due in the window")
    elif out["acked_per_s"] < DELIVERED * out["due_per_s"]:
        short.append(
            f"{out['acked_per_s']:,.0f} of the {out['due_per_s']:,.0f} updates/s due "
            f"acknowledged in the window"
        )
    if unacked:
        short.append(f"{unacked} reports never acknowledged")
    out["delivered"] = not short
    out["on_time"] = not out["late_p99_ms"] > LATE_MS
    if not out["on_time"]:
        short.append(f"reports sent {out['late_p99_ms']:.0f} ms late at p99 (over {LATE_MS:g})")
    out["short"] = "; ".join(short)
    return out


# -- fan-out ----------------------------------------------------------------------------------


def fanout_phase(
    city: BenchCity, server: psutil.Process, args: argparse.Namespace, ctx: Any
) -> dict[str, Any]:
    n = args.gateways
    print(
        f"fan-out: opening {n} streams from {args.procs} load processes, "
        f"at most {args.opening} handshakes at once in each ...",
        flush=True,
    )
    rss0 = server.memory_info().rss
    # One device state a report: the floor's round trip is a small message each way.
    fleet = Fleet(city, n, args.procs, args.opening, ctx, devices=1)
    figures: dict[str, Any] = {
        "gateways": n,
        "opened": fleet.opened,
        "lost": fleet.lost,
        "open_s": fleet.open_s,
        "server_rss_before": rss0,
        "server_rss_after": server.memory_info().rss,
        "load_rss": fleet.load_rss,
    }
    print(
        f"  {fleet.opened} opened, {fleet.lost} lost, in {fleet.open_s:.1f} s",
        flush=True,
    )
    loaders = [psutil.Process(p.pid) for p in fleet.procs]  # type: ignore[arg-type]
    try:

        async def operate() -> dict[str, float]:
            async with AdminClient(city.operator("fanout"), timeout=120) as admin:
                listed, _ = await fleet_pages(admin)
                connected = sum(g.connected for g in listed)
                out = {"connected": connected}
                t0 = time.perf_counter()
                for _ in range(3):
                    await admin.get_convergence(
                        control_pb2.GetConvergenceRequest(
                            kind=link_pb2.DOCUMENT_KIND_SCHEDULE, max_lagging=1
                        )
                    )
                out["convergence_call_s"] = (time.perf_counter() - t0) / 3
                cpu0, load0 = cpu_seconds([server]), cpu_seconds(loaders)
                spy = start_profile(server.pid, city.work / "put.py-spy") if args.profile else None
                stored = asyncio.create_task(all_held(city.db, connected))
                # The view looked at once every acknowledgement is stored: looks while they
                # come in take seconds of the orchestrator's time at 10,000 gateways.
                out.update(await city_wide_program(admin, connected, stored))
                out["stored_s"] = await stored - out["put_at"]
                out["load_average"] = os.getloadavg()[0]
                out["server_cpu_s"] = cpu_seconds([server]) - cpu0
                out["load_cpu_s"] = cpu_seconds(loaders) - load0
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(60)
                _, documents = await asyncio.to_thread(fleet.answers)
                cpu0 = cpu_seconds([server])
                out["floor_sent"], burst = await asyncio.to_thread(fleet.burst)
                out["floor_cpu_s"] = cpu_seconds([server]) - cpu0
                out["floor_acked"] = len(burst)
                out["floor_p50_s"] = percentile(burst, 50)
                out["floor_last_s"] = max(burst, default=float("nan"))
                received = sorted(t - out["put_at"] for t in documents)
                out["received"] = len(received)
                out["received_p50_s"] = percentile(received, 50)
                out["received_last_s"] = max(received, default=float("nan"))
                sample = [g.gateway_id for g in listed if g.connected][:30]
                out["one_by_one_per_call_s"] = await one_at_a_time(admin, sample)
                return out

        figures.update(asyncio.run(operate()))
    finally:
        fleet.close()
    if args.profile:
        print("where the orchestrator's time went from the put to the last acknowledgement:")
        show_profile(city.work / "put.py-spy")
    return figures


HELD_AS_ISSUED = """
    SELECT count(*) FROM held_documents h JOIN desired_documents d
    ON h.gateway_id = d.gateway_id AND h.kind = d.kind
    WHERE h.kind = ? AND h.version = d.version AND h.digest = d.digest
"""


async def all_held(db: Path, gateways: int) -> float:
    """When (epoch) ``gateways`` gateways hold their desired schedule as issued, read from
    the SQLite file itself every 20 ms (the bench's own reader, in this process: the
    orchestrator's convergence view is the operator's figure, and a look at it takes
    seconds while 10,000 acknowledgements come in)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)
    try:
        while True:
            (held,) = (await asyncio.to_thread(conn.execute, HELD_AS_ISSUED, (1,))).fetchone()
            if held >= gateways:
                return time.time()
            await asyncio.sleep(0.02)
    finally:
        conn.close()


def show_profile(samples: Path) -> None:
    print_py_spy(samples, also=("store-write", "store-read"))
    kept = Path(tempfile.gettempdir()) / f"command_bench-{samples.name}"
    shutil.copy(samples, kept)
    print(f"(py-spy's raw samples kept in {kept})")


def cpu_seconds(procs: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in procs)


def start_profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the orchestrator (every thread, 100 Hz) into ``out`` until sent
    SIGINT."""
    command = [_py_spy(), "record", "-f", "raw", "-o", str(out), "-r", "100", "--threads"]
    command += ["--nonblocking", "--pid", str(pid)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    return spy


# -- the run ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=10_000, help="for the fan-out")
    parser.add_argument("--procs", type=int, default=4, help="load processes of the fan-out")
    parser.add_argument(
        "--opening", type=int, default=100, help="handshakes in flight per load process"
    )
    parser.add_argument("--command-gateways", type=int, default=1000)
    parser.add_argument("--load", type=int, default=20_000, help="device updates per second")
    parser.add_argument("--commands", type=int, default=200, help="per measurement")
    parser.add_argument("--spacing", type=float, default=0.05, help="seconds between commands")
    parser.add_argument(
        "--load-nice",
        type=int,
        default=LOAD_NICE,
        metavar="N",
        help="the commands under load measured again with the load processes at niceness N "
        "(lower CPU priority: the city's gateways run on their own boards, not on the "
        "orchestrator's cores), checking that they still offer the load; 0: only at normal "
        f"priority (default {LOAD_NICE})",
    )
    parser.add_argument("--quick", action="store_true", help="a small form (~1 min)")
    parser.add_argument(
        "--poll",
        action="store_true",
        help="follow each command by asking GetCommand every 5 ms (as before GetCommand "
        "could wait for the answer); default: one call that waits",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy on the orchestrator during the loaded commands and the put",
    )
    parser.add_argument(
        "--only", choices=("commands", "fanout"), help="run one part (default: both)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    if args.quick:
        args.gateways, args.procs, args.command_gateways = 400, 2, 200
        args.load, args.commands = 4000, 60
    if args.only == "commands":
        args.gateways = args.command_gateways
    args.command_gateways = min(args.command_gateways, args.gateways)
    soft, _ = raise_open_files(args.gateways + 1000)
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="ondijon-commands-") as tmp:
        city = BenchCity.build(Path(tmp), args.gateways, "fan")
        popen = city.start_orchestrator()
        server = psutil.Process(popen.pid)
        try:
            commands = fanout = None
            if args.only != "fanout":
                commands = commands_phase(city, server, args, ctx)
            if args.only != "commands":
                fanout = fanout_phase(city, server, args, ctx)
        finally:
            popen.terminate()
            popen.wait(30)
    if commands is not None:
        report_commands(commands, args)
    if fanout is not None:
        report_fanout(fanout, soft)
    if args.json:
        print(json.dumps({"commands": commands, "fanout": fanout}))
    return 0


def report_commands(commands: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    print(
        f"operator command to the gateway's acknowledgement visible (GetCommand, "
        f"{'polled every 5 ms' if args.poll else 'waiting for it'}), "
        f"{commands['gateways']} gateways connected ({commands['opened']} opened):"
    )
    loaded = [(0, commands)]
    if commands.get("niced"):
        loaded.append((commands["niced"]["nice"], commands["niced"]))
    lines = [("peer, no other traffic", commands["quiet"])]
    for nice, part in loaded:
        label = f"ingest at {args.load:,} updates/s, {generator(nice)}"
        if not part["delivery"]["delivered"]:
            label += " [LOAD NOT DELIVERED]"
        elif not part["delivery"]["on_time"]:
            label += " [LOAD SENT LATE]"
        lines.append((label, part["loaded"]))
    for label, c in lines:
        print(
            f"  {label}: p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms, max "
            f"{c['max_ms']:.1f} ms ({c['done']} of {c['sent']} done); to the gateway p50 "
            f"{c['to_gateway_p50_ms']:.1f} ms, p99 {c['to_gateway_p99_ms']:.1f} ms; "
            f"SendCommand p50 {c['call_p50_ms']:.1f} ms"
        )
    print(
        f"  the disk under the store, measured after them: fsync p50 "
        f"{commands['fsync_p50_ms']:.1f} ms, p99 {commands['fsync_p99_ms']:.1f} ms (a command "
        f"waits for two commits: queued, then answered)"
    )
    averages = ", ".join(f"{p['load_average']:.1f} ({generator(n)})" for n, p in loaded)
    print(
        f"  machine load average (1 min) after the commands under load: {averages}; "
        f"{os.cpu_count()} cores; orchestrator at nice {commands['server_nice']}"
    )
    print(f"  the ingest meanwhile (bench/ingest_curve.py's step, its measured part):\n{HEADER}")
    for nice, part in loaded:
        print(f"{Step(**part['ingest']).line()}  {generator(nice)}")
    print("  the load as delivered from the first command to the last DONE:")
    for nice, part in loaded:
        d = part["delivery"]
        threads = part["threads_nice"]
        at = sorted(set(threads))
        print(
            f"    {generator(nice)} ({len(threads)} load threads at nice "
            f"{'/'.join(map(str, at))}): {d['window_s']:.1f} s, updates/s due "
            f"{d['due_per_s']:,.0f}, sent {d['sent_per_s']:,.0f}, acknowledged "
            f"{d['acked_per_s']:,.0f} (offered {args.load:,}); sent late p50 "
            f"{d['late_p50_ms']:.1f} ms, p99 {d['late_p99_ms']:.1f} ms; acknowledged p50 "
            f"{d['ack_p50_ms']:.1f} ms, p99 {d['ack_p99_ms']:.1f} ms: " + verdict(d)
        )
        if not d["delivered"]:
            print(
                f"  WARNING: with the {generator(nice)} the load was not offered as asked "
                f"({d['short']}): its command figures are not under {args.load:,} updates/s"
            )
        elif not d["on_time"]:
            print(
                f"  WARNING: with the {generator(nice)} the load came bunched ({d['short']}): "
                f"the generator stalled, then sent what it owed at once"
            )
        if at != [nice]:
            print(f"  WARNING: load threads at nice {at}, not {nice}")


def verdict(d: dict[str, Any]) -> str:
    if not d["delivered"]:
        return "NOT DELIVERED"
    return "delivered" if d["on_time"] else "delivered, LATE"


def report_fanout(f: dict[str, Any], soft: int) -> None:
    n = f["connected"]
    print(
        f"fan-out: {f['opened']} of {f['gateways']} streams opened ({f['lost']} lost) in "
        f"{f['open_s']:.1f} s, {n} connected; orchestrator RSS "
        f"{f['server_rss_before'] / 2**20:.0f} -> {f['server_rss_after'] / 2**20:.0f} MiB; "
        f"load processes {f['load_rss'] / 2**20:.0f} MiB; open files limit {soft}"
    )
    print(
        f"  city-wide program: PutGroupDocument returned in {f['put_s']:.2f} s "
        f"({int(f['changed'])} new versions); received by {f['received']} gateways, p50 "
        f"{f['received_p50_s']:.2f} s, last {f['received_last_s']:.2f} s after the put"
    )
    verdict = "under" if f["stored_s"] < 5 else "OVER"
    print(
        f"  every acknowledgement stored (read from the database every 20 ms): "
        f"{f['stored_s']:.2f} s after the put ({verdict} 5 s)"
    )
    print(
        f"  the convergence view counts {int(f['converged'])}/{n}: {f['all_acked_s']:.2f} s "
        f"after the put (first looked at once they were stored, that look asked "
        f"{f['last_look_s']:.2f} s after the put)"
    )
    print(
        f"  CPU from the put to the last acknowledgement: orchestrator "
        f"{f['server_cpu_s']:.1f} s ({1000 * f['server_cpu_s'] / max(1, n):.2f} ms a gateway), "
        f"load processes {f['load_cpu_s']:.1f} s; one GetConvergence of the city "
        f"{1000 * f['convergence_call_s']:.0f} ms (looked at every {1000 * f['poll_s']:.0f} ms)"
    )
    print(
        f"  floor, same streams: one small state report from every gateway at once, each "
        f"acknowledged once stored: {int(f['floor_acked'])} of {int(f['floor_sent'])} "
        f"acknowledged, p50 "
        f"{f['floor_p50_s']:.2f} s, last {f['floor_last_s']:.2f} s; orchestrator CPU "
        f"{f['floor_cpu_s']:.1f} s ({1000 * f['floor_cpu_s'] / max(1, n):.2f} ms a gateway)"
    )
    print(
        f"  machine load average (1 min) after the put: {f['load_average']:.1f} "
        f"({os.cpu_count()} cores, shared with whatever else runs)"
    )
    per_call = f["one_by_one_per_call_s"]
    print(
        f"  peer, one gateway at a time: {per_call * 1000:.0f} ms a call, "
        f"{per_call * n:.0f} s for the city"
    )


if __name__ == "__main__":
    sys.exit(main())
