"""Benchmark: the ingest curve, offered load stepped up until acknowledgements are late.

    python bench/ingest_curve.py [--gateways 1000] [--devices 100] [--start 20000]
                                 [--step 20000] [--replicas 1] [--postgres]

Every gateway has its own certificate and its own mutual-TLS connection to a real
orchestrator process (``ondijon orchestrator serve``) and sends StateReports of
``--devices`` device states. The offered load (device updates per second, all gateways
together) goes up by ``--step`` per step; each step runs ``--seconds`` on the same open
streams, the first ``--warm`` of them not measured. A step is *held* when every report
sent in it is acknowledged and the acknowledgement p99 is under ``--p99-ms`` (100 ms); the
first step not held is bisected once, and the highest load held is the knee. Then a step
at half the knee.

Per step: acknowledgement p50/p99, updates acknowledged per second, the orchestrator's CPU
(percent of one core, microseconds per thousand updates, split by thread: the asyncio
thread running Python and protobuf, gRPC's own threads doing TLS and HTTP/2, the store's
writer), and the load generator's CPU. In the same run, the ceiling: the same decoding,
checks and group-committed store writes in-process without gRPC or TLS
(``link_bench.ceiling``), as CPU per thousand updates, and the ratio of the two.

``--replicas N`` starts N orchestrator processes on one PostgreSQL database
(``--postgres`` alone: one process on it), gateways spread over them round robin as a
balancer would. ``--profile perf|py-spy`` instead runs one step at ``--start`` under a
profiler and prints where the orchestrator's time goes.

The load processes share the machine's cores with the orchestrator (2 cores here): on such
a machine the knee is where the *machine* saturates, server and load generator together;
the load generator's CPU is printed beside the server's so the reader can see the split.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psutil
from city import BenchCity  # bench/city.py, beside this script
from fleet import load_process  # bench/fleet.py: the load gateways
from link_bench import ceiling_figures

from orchestrator.ingest.devices import COMPACT_EVERY
from protos.ondijon.v1 import link_pb2
from provisioning.identity import Identity, Role

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


# -- the gRPC floor: a bare servicer that only reads and acknowledges ----------------------


def floor_server(port: int, key: bytes, chain: bytes, root: bytes, ready: Any) -> None:
    """A GatewayLink that does nothing but decode each report and acknowledge it, over the
    same mutual TLS: what any Python gRPC service pays per message before doing any work."""

    async def serve() -> None:
        async def connect(requests: Any, context: Any) -> Any:
            async for raw in requests:
                request = link_pb2.ConnectRequest.FromString(raw)
                body = request.WhichOneof("body")
                if body == "hello":
                    reply = link_pb2.ConnectResponse(welcome=link_pb2.Welcome(gateway_id="x"))
                elif body == "state":
                    ack = link_pb2.StateAck(batch_id=request.state.batch_id)
                    reply = link_pb2.ConnectResponse(state_ack=ack)
                else:
                    continue
                await context.write(reply)

        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4 << 20)])
        handler = grpc.stream_stream_rpc_method_handler(
            connect,
            request_deserializer=lambda b: b,
            response_serializer=link_pb2.ConnectResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("ondijon.v1.GatewayLink", {"Connect": handler}),)
        )
        credentials = grpc.ssl_server_credentials([(key, chain)], root, True)
        server.add_secure_port(f"127.0.0.1:{port}", credentials)
        await server.start()
        ready.set()
        await server.wait_for_termination()

    asyncio.run(serve())


# -- the orchestrator's CPU, by thread ------------------------------------------------------


def thread_times(procs: list[psutil.Process]) -> dict[str, float]:
    """CPU seconds so far per kind of thread, all orchestrator processes together."""
    out: collections.Counter[str] = collections.Counter()
    for proc in procs:
        for t in proc.threads():
            try:
                name = Path(f"/proc/{proc.pid}/task/{t.id}/comm").read_text().strip()
            except OSError:
                name = "?"
            out[_thread_kind(proc.pid, t.id, name)] += t.user_time + t.system_time
    return dict(out)


def _thread_kind(pid: int, tid: int, name: str) -> str:
    if tid == pid:
        return "asyncio (Python, protobuf, gRPC aio)"
    if name == "python":  # Python names no OS thread: the store's writer and readers, gRPC's poller
        return "other Python threads (store writer, gRPC poller)"
    if name.startswith("store-write"):
        return "store writer"
    if name.startswith("store-"):
        return "store readers"
    if name.startswith(("grpc", "event_engine", "default-execu", "resolver", "timer")):
        return "gRPC core (TLS, HTTP/2)"
    return re.sub(r"[-_]?\d+$", "", name) or "?"


# -- steps ----------------------------------------------------------------------------------


@dataclass
class Step:
    offered: int
    p50_ms: float
    p99_ms: float
    acked_per_s: float
    unacked: int
    server_cpu_pct: float
    server_us_per_k: float
    load_cpu_pct: float
    threads_us_per_k: dict[str, float]
    held: bool

    def line(self) -> str:
        mark = "held" if self.held else "NOT HELD"
        return (
            f"{self.offered:>8,} {self.acked_per_s:>10,.0f} {self.p50_ms:>8.1f} "
            f"{self.p99_ms:>8.1f} {self.server_cpu_pct:>6.0f} % {self.server_us_per_k:>8.0f} "
            f"{self.load_cpu_pct:>6.0f} %  {mark}"
            + (f" ({self.unacked} late)" if self.unacked else "")
        )


HEADER = (
    " offered      acked   p50 ms   p99 ms  server  µs/1000    load\n"
    "updates/s  updates/s                  CPU  updates     CPU"
)


class Run:
    def __init__(
        self,
        pipes: list[multiprocessing.connection.Connection],
        servers: list[psutil.Process],
        loaders: list[psutil.Process],
        args: argparse.Namespace,
    ) -> None:
        self.pipes, self.servers, self.loaders, self.args = pipes, servers, loaders, args
        # The last step's measured reports: (due, sent, acknowledged or None), time.time().
        self.reports: list[tuple[float, float, float | None]] = []

    def step(self, offered: int) -> Step:
        args = self.args
        rate = offered / (args.gateways * args.devices)
        start_at = time.time() + 0.5
        for pipe in self.pipes:
            pipe.send((rate, start_at, args.seconds, args.warm))
        # CPU over the measured part of the step only.
        time.sleep(max(0.0, start_at + args.warm - time.time()))
        cpu0 = sum(sum(p.cpu_times()[:2]) for p in self.servers)
        threads0 = thread_times(self.servers)
        load0 = sum(sum(p.cpu_times()[:2]) for p in self.loaders)
        t0 = time.time()
        time.sleep(max(0.0, start_at + args.seconds - time.time()))
        wall = time.time() - t0
        cpu = sum(sum(p.cpu_times()[:2]) for p in self.servers) - cpu0
        threads1 = thread_times(self.servers)
        load_cpu = sum(sum(p.cpu_times()[:2]) for p in self.loaders) - load0
        parts = [pipe.recv() for pipe in self.pipes]
        latencies = sorted(x for p in parts for x in p["latencies"])
        unacked = sum(p["unacked"] for p in parts)
        self.reports = [r for p in parts for r in p["reports"]]
        measured = sum(p["measured"] for p in parts)
        # Reports never acknowledged count as late as can be.
        p99_index = int(0.99 * (measured - 1)) if measured else 0
        p99 = latencies[p99_index] if p99_index < len(latencies) else float("inf")
        p50 = statistics.median(latencies) if latencies else float("inf")
        updates = len(latencies) * args.devices
        measured_s = args.seconds - args.warm
        us_per_k = 1e9 * cpu / updates if updates else float("inf")
        threads = {
            k: 1e9 * (threads1.get(k, 0.0) - v) / updates if updates else float("inf")
            for k, v in threads0.items()
        }
        return Step(
            offered=offered,
            p50_ms=1000 * p50,
            p99_ms=1000 * p99,
            acked_per_s=updates / measured_s,
            unacked=unacked,
            server_cpu_pct=100 * cpu / wall,
            server_us_per_k=us_per_k,
            load_cpu_pct=100 * load_cpu / wall,
            threads_us_per_k=threads,
            held=unacked == 0 and 1000 * p99 < args.p99_ms,
        )


def curve(run: Run, args: argparse.Namespace) -> tuple[list[Step], Step | None, Step | None]:
    """The steps up to the first not held (bisected once), the knee, and half the knee."""
    steps: list[Step] = []
    knee: Step | None = None
    offered = args.start
    print(HEADER, flush=True)
    while offered <= args.max:
        step = run.step(offered)
        steps.append(step)
        print(step.line(), flush=True)
        if not step.held:
            low = knee.offered if knee else 0
            middle = (low + offered) // 2
            if middle > low and args.step >= 2 * 1000:
                step = run.step(middle)
                steps.append(step)
                print(step.line(), flush=True)
                if step.held:
                    knee = step
            break
        knee = step
        offered += args.step
    half = None
    if knee is not None:
        half = run.step(knee.offered // 2)
        steps.append(half)
        print(half.line() + "   <- half the knee", flush=True)
    return steps, knee, half


def ceiling_cpu(work: Path, gateways: int, devices: int) -> tuple[float, float]:
    """The in-process ceiling: (updates/s, CPU µs per thousand updates)."""
    url = f"sqlite:///{work / 'ceiling.db'}"
    rate, cpu = ceiling_figures(url, gateways, devices, rounds=COMPACT_EVERY)
    return rate, 1e9 * cpu / (gateways * devices * COMPACT_EVERY)


# -- PostgreSQL -------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(base_url: str) -> Iterator[str]:
    import psycopg  # only with --postgres
    import sqlalchemy as sa

    base = sa.make_url(base_url)
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"ondijon_curve_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- profiling ----------------------------------------------------------------------------------


SYSCALLS = (
    "context-switches",
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_sendmsg",
    "syscalls:sys_enter_recvmsg",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_read",
    "syscalls:sys_enter_futex",
    "syscalls:sys_enter_epoll_wait",
)
PERF_REPORT = ("perf", "report", "--no-children", "--stdio", "-g", "none", "-i")


def profile_step(run: Run, server: psutil.Process, tool: str, offered: int, work: Path) -> None:
    print(f"profiling the orchestrator with {tool} at {offered:,} updates/s ...", flush=True)
    out = work / f"profile-{tool}.txt"
    profiler = None
    if tool == "perf":
        data = work / "perf.data"
        command = ["perf", "record", "-F", "499", "-g", "-p", str(server.pid), "-o", str(data)]
        profiler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elif tool == "syscalls":
        events = ",".join(SYSCALLS)
        command = ["perf", "stat", "-x", ",", "-e", events, "-p", str(server.pid), "-o", str(out)]
        profiler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    step = run.step(offered)
    print(HEADER)
    print(step.line())
    print("orchestrator CPU per thousand updates, by thread:")
    for name, us in sorted(step.threads_us_per_k.items(), key=lambda kv: -kv[1]):
        print(f"  {us:8.0f} µs  {name}")
    if profiler is not None:
        profiler.send_signal(2)
        profiler.communicate(timeout=120)
    if tool == "syscalls":
        # The whole step (warm-up included) was counted: per report sent in it.
        reports = offered / run.args.devices * run.args.seconds
        print(f"per state report received and acknowledged ({reports:,.0f} reports):")
        for line in out.read_text().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[0].replace(".", "").isdigit():
                print(f"  {float(fields[0]) / reports:7.2f}  {fields[2]}")
        return
    if tool == "perf":
        report = subprocess.run(
            [*PERF_REPORT, str(work / "perf.data"), "--sort", "comm,dso", "--percent-limit", "1"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        print("where the CPU goes (perf, by thread name and library):")
        print("\n".join(x for x in report.splitlines() if x and not x.startswith("#")))
        report = subprocess.run(
            [*PERF_REPORT, str(work / "perf.data"), "--sort", "dso,sym", "--percent-limit", "0.7"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        print("top symbols:")
        print("\n".join(x for x in report.splitlines() if x and not x.startswith("#")))
    else:
        # py-spy runs the server (the whole run, start-up included): stop it to get the file.
        server.terminate()
        for _ in range(300):
            if out.exists():
                break
            time.sleep(0.1)
        print_py_spy(out)


def _py_spy() -> str:
    return shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


def print_py_spy(path: Path, also: tuple[str, ...] = ()) -> None:
    """Samples per thread; on the asyncio thread, own time per Python function (time in
    C, gRPC's Cython included, counts for the Python function that called it); the same,
    shorter, for the threads whose names start with one of ``also``."""
    threads: collections.Counter[str] = collections.Counter()
    own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    idle = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        thread = frames[0].partition(": ")[2] or frames[0]
        last = frames[-1]
        if "select (selectors.py" in last or "wait (threading.py" in last:
            idle += n
            continue
        threads[thread] += n
        for name in ("MainThread", *also):
            if thread.startswith(name):
                own[name][_frame(frames[-1])] += n
    print(f"busy samples per thread (idle waits left out: {idle}):")
    for name, n in threads.most_common(8):
        print(f"  {n:6d}  {name}")
    for name, top in (("MainThread", 20), *((a, 8) for a in also)):
        total = sum(own[name].values())
        if not total:
            continue
        label = "asyncio thread" if name == "MainThread" else f"{name} threads"
        print(f"{label}: own time per function (top {top}):")
        for function, n in own[name].most_common(top):
            print(f"  {100 * n / total:5.1f} %  {function}")


def _frame(frame: str) -> str:
    # "name (path/to/file.py:line)" -> "name (file)"
    name, _, where = frame.partition(" (")
    file = where.split(":")[0]
    parts = file.split("/")
    return f"{name} ({'/'.join(parts[-3:])})"


# -- orchestration ------------------------------------------------------------------------------


def _threads(step: Step) -> str:
    kinds = sorted(step.threads_us_per_k.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:.0f} µs" for k, v in kinds if v >= 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--start", type=int, default=20_000, help="first offered load")
    parser.add_argument("--step", type=int, default=20_000)
    parser.add_argument("--max", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="per step")
    parser.add_argument("--warm", type=float, default=3.0, help="not measured, per step")
    parser.add_argument("--p99-ms", type=float, default=100.0)
    parser.add_argument("--procs", type=int, default=2, help="load processes")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--postgres", nargs="?", const=DEFAULT_POSTGRES, default=None)
    parser.add_argument("--profile", choices=("perf", "py-spy", "syscalls"))
    parser.add_argument(
        "--loads", help="comma-separated offered loads to measure, instead of the curve"
    )
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument(
        "--peer",
        action="store_true",
        help="the gRPC floor instead of the orchestrator: a bare servicer, same TLS and load",
    )
    parser.add_argument(
        "--consoles",
        type=int,
        default=0,
        help="with --loads: each load measured again with this many web consoles open",
    )
    parser.add_argument(
        "--console-watch",
        type=int,
        default=20,
        help="cabinets each console follows (0: the city-wide map, events only)",
    )
    parser.add_argument(
        "--changing-states",
        action="store_true",
        help="every report flips its lamps between 50 and 100 %% (the states a console "
        "follows change at every report; by default they never change)",
    )
    parser.add_argument("--json", action="store_true", help="print figures as JSON too")
    args = parser.parse_args()
    if args.replicas > 1 and not args.postgres:
        args.postgres = DEFAULT_POSTGRES

    work = Path(tempfile.mkdtemp(prefix="ondijon-curve-"))
    with contextlib.ExitStack() as stack:
        store_url = stack.enter_context(fresh_database(args.postgres)) if args.postgres else None
        return measure(args, work, store_url)


CONSOLE_PASSWORD = "lanterne-de-la-place-darcy"  # tests/console/conftest.py's PASSWORD


def with_consoles(city: BenchCity, ctx: Any, run: Run, load: int, args: argparse.Namespace) -> None:
    """The same step again with ``args.consoles`` web consoles open on the orchestrator
    (bench/console_bench.py's clients, in a process of their own), each following
    ``args.console_watch`` of the cabinets under load."""
    from orchestrator.config import OrchestratorConfig
    from orchestrator.identity.operators import add_operator, set_console_password

    config = OrchestratorConfig.load(city.work / "orchestrator.toml")
    now = datetime.now(UTC)
    accounts = []
    for n in range(args.consoles):
        name = f"desk-{n:02d}"
        add_operator(
            config,
            name=name,
            role="operator",
            communes=["*"],
            profile_dir=city.work / "profiles" / name,
            address=f"localhost:{city.port}",
            now=now,
        )
        secret = set_console_password(config, name=name, password=CONSOLE_PASSWORD, now=now)
        accounts.append((name, secret))
    url = f"https://localhost:{city.console_port}"
    ours, theirs = ctx.Pipe()
    clients = []
    for n, account in enumerate(accounts):
        k = args.console_watch
        watched = [f"curve-{(k * n + i) % args.gateways:05d}" for i in range(k)]
        clients.append((account, watched))
    proc = ctx.Process(target=_console_process, args=(theirs, url, city.ca.root_pem, clients))
    proc.start()
    try:
        opened = ours.recv()
        if "error" in opened:
            print(f"consoles: {opened['opened']} opened, then {opened['error']}", flush=True)
            return
        step = run.step(load)
        print(
            f"{step.line()}  with {opened['opened']} consoles open "
            f"(each following {args.console_watch} cabinets)",
            flush=True,
        )
        print("  by thread: " + _threads(step), flush=True)
        ours.send(None)
        print(f"  consoles received {ours.recv()['events']} live updates", flush=True)
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()


def _console_process(pipe: Any, url: str, root: bytes, clients: list[Any]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from console_bench import _consoles

    asyncio.run(_consoles(pipe, url, root, clients))


def start_floor(city: BenchCity, ctx: Any) -> Any:
    now = datetime.now(UTC)
    key, issued = city.ca.issue_keypair(
        Identity(Role.ORCHESTRATOR, "floor"),
        now=now,
        lifetime=timedelta(days=1),
        dns_names=("localhost",),
    )
    ready = ctx.Event()
    proc = ctx.Process(
        target=floor_server, args=(city.port, key, issued.chain_pem, city.ca.root_pem, ready)
    )
    proc.start()
    ready.wait(60)
    return proc


def measure(args: argparse.Namespace, work: Path, store_url: str | None) -> int:
    city = BenchCity.build(work, args.gateways, "curve", store_url, console=bool(args.consoles))
    ctx = multiprocessing.get_context("spawn")
    # py-spy cannot attach to a running process in every container: it starts the server.
    spy = [_py_spy(), "record", "-f", "raw", "-o", str(work / "profile-py-spy.txt")]
    spy += ["-r", "100", "--nonblocking", "--threads", "--"]
    if args.peer:
        servers = [start_floor(city, ctx)]
    else:
        servers = [city.start_orchestrator(spy if args.profile == "py-spy" else ())]
    ports = [city.port]
    for i in range(1, args.replicas):
        server, port = city.start_replica(i)
        servers.append(server)
        ports.append(port)
    store = "PostgreSQL" if store_url else "SQLite"
    if args.peer:
        store = "no store: the gRPC floor (decode and acknowledge only)"
    print(
        f"{args.gateways} gateways on {args.replicas} orchestrator process(es), {store}, "
        f"{args.devices} device states per report; {os.cpu_count()} cores shared with "
        f"{args.procs} load processes",
        flush=True,
    )
    pipes, loaders = [], []
    rss_before = sum(psutil.Process(s.pid).memory_info().rss for s in servers)
    try:
        gateways = [
            (f"127.0.0.1:{ports[i % len(ports)]}", key, chain)
            for i, (key, chain) in enumerate(city.identities)
        ]
        for i in range(args.procs):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=load_process,
                args=(
                    theirs,
                    city.ca.root_pem,
                    gateways[i :: args.procs],
                    args.devices,
                    args.changing_states,
                ),
            )
            proc.start()
            pipes.append(ours)
            loaders.append(proc)
        opened = [pipe.recv() for pipe in pipes]
        count = sum(o["opened"] for o in opened)
        rss_after = sum(psutil.Process(s.pid).memory_info().rss for s in servers)
        burst = max(o["ended"] for o in opened) - min(o["began"] for o in opened)
        print(
            f"streams opened {count}, lost {sum(o['lost'] for o in opened)}, "
            f"all at once in {burst:.1f} s (each its own TLS handshake and hello); "
            f"server RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB, "
            f"{(rss_after - rss_before) / max(1, count) / 1024:.0f} KiB per stream",
            flush=True,
        )
        measured = [psutil.Process(s.pid) for s in servers]
        if args.profile == "py-spy":
            measured[0] = measured[0].children()[0]
        run = Run(
            pipes,
            measured,
            [psutil.Process(p.pid) for p in loaders],  # type: ignore[arg-type]
            args,
        )
        if args.profile:
            profile_step(run, run.servers[0], args.profile, args.start, work)
            return 0
        if args.loads:
            print(HEADER, flush=True)
            for load in args.loads.split(","):
                step = run.step(int(load))
                print(step.line(), flush=True)
                print("  by thread: " + _threads(step), flush=True)
                if args.consoles:
                    with_consoles(city, ctx, run, int(load), args)
            return 0
        steps, knee, half = curve(run, args)
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for loader in loaders:
            loader.join(timeout=30)
        for server in servers:
            server.terminate()
            if args.peer:
                server.join(timeout=30)
            else:
                server.wait(timeout=30)

    figures: dict[str, Any] = {
        "replicas": args.replicas,
        "store": store,
        "steps": [vars(s) for s in steps],
        "knee_updates_per_s": knee.offered if knee else None,
    }
    print()
    if knee is None:
        print(f"knee: below the first step ({args.start:,} updates/s)")
    else:
        print(
            f"knee: {knee.offered:,} updates/s held (p99 {knee.p99_ms:.0f} ms), "
            f"server {knee.server_us_per_k:.0f} µs CPU per thousand updates there"
        )
        print("  by thread: " + _threads(knee))
    if half is not None:
        verdict = "under" if half.p99_ms < args.p99_ms else "OVER"
        print(
            f"half the knee: {half.offered:,} updates/s, p50/p99 {half.p50_ms:.1f}/"
            f"{half.p99_ms:.1f} ms ({verdict} {args.p99_ms:g} ms)"
        )
        figures["half_knee_p99_ms"] = half.p99_ms
    if not args.no_ceiling:
        rate, us = ceiling_cpu(work, min(args.gateways, 1000), args.devices)
        figures["ceiling_updates_per_s"] = rate
        figures["ceiling_us_per_k"] = us
        print(
            f"in-process ceiling (same decode, checks and store, no gRPC/TLS): "
            f"{rate:,.0f} updates/s, {us:.0f} µs CPU per thousand updates"
        )
        if knee is not None:
            ratio = knee.server_us_per_k / us
            figures["ratio_to_ceiling"] = ratio
            print(
                f"server CPU per update at the knee / ceiling's: {ratio:.2f}x (goal: within 1.5x)"
            )
    if args.json:
        print(json.dumps(figures, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
