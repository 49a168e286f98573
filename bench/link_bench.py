"""Benchmark: a city's gateways reconnect in a burst, then report state every second.

    python bench/link_bench.py [--gateways 1000] [--devices 100] [--seconds 30] [--procs 2]

Starts a real orchestrator process (``ondijon orchestrator serve``, SQLite store) and
``--procs`` load processes; every gateway has its own client certificate and its own TLS
connection, opens its GatewayLink stream at the same moment as all the others, says
hello, then sends a StateReport of ``--devices`` device states every second. Prints:
streams opened and lost, device updates stored per second (read back from the store),
the orchestrator's CPU and RSS, state acknowledgement latency p50/p99, and the ceiling:
the same decode-and-store work done in-process without gRPC, as a ratio.

The load processes share the machine with the orchestrator (2 cores here): figures are
pessimistic for the server, and vary run to run by ~10-20 % on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import psutil
import sqlalchemy as sa
from city import BenchCity  # bench/city.py, beside this script

from orchestrator.config import Limits
from orchestrator.ingest.checks import check_state_report, time_window
from orchestrator.ingest.devices import COMPACT_EVERY, DeviceLog, compact
from orchestrator.ingest.link import decode_request
from orchestrator.store.database import Store
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import link_pb2, schedule_pb2, state_pb2

CONNECT = "/ondijon.v1.GatewayLink/Connect"
# Latency is also reported for batches acknowledged this long after the burst started.
STEADY_AFTER_S = 15.0


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def devices_blob(count: int, level: int = 50) -> bytes:
    """The repeated ``devices`` field of a StateReport, serialized once."""
    report = state_report_template(count, level)
    report.batch_id = 0
    return report.SerializeToString()


def state_report_template(count: int, level: int = 50) -> link_pb2.StateReport:
    report = link_pb2.StateReport()
    now = datetime.now(UTC)
    for i in range(count):
        device = report.devices.add(
            device_id=f"lamp-{i:04d}", kind=schedule_pb2.DEVICE_KIND_LAMP, source="program:night"
        )
        device.observed_at.FromDatetime(now)
        device.lamp.CopyFrom(
            state_pb2.LampState(
                level=level,
                lit=True,
                active_power_w=31.5,
                energy_wh=1234.5,
                operating_hours=4021.25,
                switch_count=812,
            )
        )
    return report


def encode_state(batch_id: int, blob: bytes) -> bytes:
    """ConnectRequest{state: StateReport{batch_id, devices...}} without re-serializing devices."""
    inner = b"\x08" + _varint(batch_id) + blob
    return b"\x12" + _varint(len(inner)) + inner


# -- load process -----------------------------------------------------------------------


def link_channel(
    address: str, credentials: grpc.ChannelCredentials, more: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """A gateway's own channel to the orchestrator: its own TCP and TLS connection (no
    subchannel shared with the other gateways of the process); ``more`` channel options."""
    options = [
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.ssl_target_name_override", "localhost"),
        *more,
    ]
    return grpc.aio.secure_channel(address, credentials, options=options)


def connect(
    channel: grpc.aio.Channel,
    queue: asyncio.Queue[bytes | None],
    hello: link_pb2.Hello | None = None,
) -> Any:
    """The GatewayLink stream: the hello, then the serialized requests put on ``queue``
    until None; responses are decoded."""
    stub = channel.stream_stream(
        CONNECT,
        request_serializer=lambda b: b,
        response_deserializer=link_pb2.ConnectResponse.FromString,
    )
    first = link_pb2.ConnectRequest(hello=hello or link_pb2.Hello(firmware_version="bench"))

    async def requests():  # type: ignore[no-untyped-def]
        yield first.SerializeToString()
        while (item := await queue.get()) is not None:
            yield item

    return stub(requests())


async def _gateway(
    address: str,
    root: bytes,
    key: bytes,
    chain: bytes,
    devices: int,
    seconds: float,
    start_at: float,
    out: dict[str, list[float] | int],
) -> None:
    blob = devices_blob(devices)
    credentials = grpc.ssl_channel_credentials(root, key, chain)
    async with link_channel(address, credentials) as channel:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        call = connect(channel, queue)
        sent: dict[int, float] = {}
        latencies: list[float] = out["latency"]  # type: ignore[assignment]
        steady: list[float] = out["steady"]  # type: ignore[assignment]
        try:
            first = await call.read()
            if first is grpc.aio.EOF or first.WhichOneof("body") != "welcome":
                out["lost"] += 1  # type: ignore[operator]
                return
            out["opened"] += 1  # type: ignore[operator]

            async def reader() -> None:
                while (response := await call.read()) is not grpc.aio.EOF:
                    if response.WhichOneof("body") == "state_ack":
                        t0 = sent.pop(response.state_ack.batch_id, None)
                        if t0 is not None:
                            latencies.append(time.perf_counter() - t0)
                            # Steady state: after the burst of 1,000 TLS handshakes.
                            if time.time() > start_at + STEADY_AFTER_S:
                                steady.append(time.perf_counter() - t0)
                            out["acked"] += 1  # type: ignore[operator]

            read_task = asyncio.create_task(reader())
            # Spread the first report over the first second, like real cabinets.
            await asyncio.sleep(os.urandom(1)[0] / 255)
            end = time.monotonic() + seconds
            batch = 0
            while time.monotonic() < end:
                batch += 1
                sent[batch] = time.perf_counter()
                queue.put_nowait(encode_state(batch, blob))
                out["sent"] += 1  # type: ignore[operator]
                await asyncio.sleep(1.0)
            # Let the last acknowledgements arrive (a saturated server answers late).
            for _ in range(600):
                if not sent:
                    break
                await asyncio.sleep(0.1)
            queue.put_nowait(None)
            read_task.cancel()
        except grpc.aio.AioRpcError:
            out["lost"] += 1  # type: ignore[operator]
        finally:
            call.cancel()


def load_process(
    args: tuple[str, bytes, list[tuple[bytes, bytes]], int, float, float, str],
) -> None:
    address, root, identities, devices, seconds, start_at, result_path = args
    out: dict[str, list[float] | int] = {
        "opened": 0,
        "lost": 0,
        "sent": 0,
        "acked": 0,
        "latency": [],
        "steady": [],
    }

    async def main() -> None:
        await asyncio.gather(
            *(
                _gateway(address, root, key, chain, devices, seconds, start_at, out)
                for key, chain in identities
            )
        )

    asyncio.run(main())
    Path(result_path).write_bytes(pickle.dumps(out))


# -- ceiling: the same work without gRPC --------------------------------------------------


def ceiling(store_url: str, gateways: int, devices: int, rounds: int) -> float:
    """Device updates/s for the server's own decode-check-store work, in-process, without
    gRPC: the same decoding, checks, report log and group-committed writes as the link."""
    return ceiling_figures(store_url, gateways, devices, rounds)[0]


def ceiling_figures(
    store_url: str, gateways: int, devices: int, rounds: int
) -> tuple[float, float]:
    """:func:`ceiling`'s updates/s, and the CPU seconds (every thread of this process) the
    timed part took."""
    store = Store.open(store_url)
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        for g in range(gateways):
            store.add_gateway(
                conn,
                gateway_id=f"ceil-{g:05d}",
                serial="x",
                commune="x",
                latitude=0,
                longitude=0,
                time_zone="UTC",
                tags=[],
                now=now,
            )
    message = encode_state(1, devices_blob(devices))
    logs = {f"ceil-{g:05d}": DeviceLog() for g in range(gateways)}
    window = time_window(Limits(), now)

    async def one(runner: StoreRunner, gid: str, seq: int) -> None:
        received = decode_request(message)
        ids = check_state_report(received.message.state, 2000, window)
        payload = received.state_bytes()
        assert payload is not None
        rows, fold = logs[gid].rows(store, gid, seq, payload, ids, now=now)
        await runner.write_rows(rows)
        if fold:
            await runner.write(lambda conn: compact(store, conn, gid))

    async def run() -> tuple[float, float]:
        runner = StoreRunner(store)
        await runner.start()
        t0, cpu0 = time.perf_counter(), time.process_time()
        for seq in range(1, rounds + 1):
            await asyncio.gather(*(one(runner, gid, seq) for gid in logs))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        await runner.close()
        return elapsed, cpu

    elapsed, cpu = asyncio.run(run())
    store.close()
    return rounds * gateways * devices / elapsed, cpu


# -- orchestration ------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print figures as JSON too")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ondijon-bench-"))
    city = BenchCity.build(work, args.gateways, "bench")
    ca, port, db, identities = city.ca, city.port, city.db, city.identities
    server = city.start_orchestrator()
    try:
        proc = psutil.Process(server.pid)
        proc.cpu_percent(None)
        shares = [identities[i :: args.procs] for i in range(args.procs)]
        start_at = time.time() + 3.0
        results = [str(work / f"load-{i}.pickle") for i in range(args.procs)]
        print(
            f"{args.gateways} gateways connect in a burst, then {args.devices} device states "
            f"each every second for {args.seconds:g} s ...",
            flush=True,
        )
        cpu0 = proc.cpu_times()
        t0 = time.time()
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.procs) as pool:
            rss_peak = 0
            pending = pool.map_async(
                load_process,
                [
                    (
                        f"127.0.0.1:{port}",
                        ca.root_pem,
                        share,
                        args.devices,
                        args.seconds,
                        start_at,
                        results[i],
                    )
                    for i, share in enumerate(shares)
                ],
            )
            while not pending.ready():
                rss_peak = max(rss_peak, proc.memory_info().rss)
                pending.wait(0.5)
            pending.get()
        wall = time.time() - t0
        cpu1 = proc.cpu_times()
        rss_peak = max(rss_peak, proc.memory_info().rss)
    finally:
        server.terminate()
        server.wait(timeout=30)

    totals: dict[str, list[float] | int] = {
        "opened": 0,
        "lost": 0,
        "sent": 0,
        "acked": 0,
        "latency": [],
        "steady": [],
    }
    for path in results:
        part = pickle.loads(Path(path).read_bytes())
        for k in ("opened", "lost", "sent", "acked"):
            totals[k] += part[k]  # type: ignore[operator]
        totals["latency"] += part["latency"]  # type: ignore[operator]
        totals["steady"] += part["steady"]  # type: ignore[operator]
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        stored = int(
            conn.execute(
                sa.text("SELECT COALESCE(SUM(device_updates),0) FROM gateway_devices")
            ).scalar()
            or 0
        )
    engine.dispose()
    latency = sorted(totals["latency"])  # type: ignore[arg-type]
    settled = sorted(totals["steady"])  # type: ignore[arg-type]
    steady = args.seconds
    cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    ceil_rate = ceiling(
        f"sqlite:///{work / 'ceiling.db'}",
        min(args.gateways, 1000),
        args.devices,
        rounds=COMPACT_EVERY,
    )
    rate = stored / steady
    figures = {
        "gateways": args.gateways,
        "streams_opened": totals["opened"],
        "streams_lost": totals["lost"],
        "batches_sent": totals["sent"],
        "batches_acked": totals["acked"],
        "device_updates_stored": stored,
        # Everything acknowledged is stored, and every batch sent was acknowledged.
        "every_batch_stored": stored >= totals["acked"] * args.devices  # type: ignore[operator]
        and totals["acked"] == totals["sent"],
        "device_updates_per_s": round(rate),
        "server_cpu_percent_of_one_core": round(100 * cpu_s / wall, 1),
        "server_rss_mib_peak": round(rss_peak / 2**20, 1),
        "ack_p50_ms": round(1000 * statistics.median(latency), 1) if latency else None,
        "ack_p99_ms": round(1000 * latency[int(0.99 * (len(latency) - 1))], 1) if latency else None,
        "steady_ack_p50_ms": round(1000 * statistics.median(settled), 1) if settled else None,
        "steady_ack_p99_ms": (
            round(1000 * settled[int(0.99 * (len(settled) - 1))], 1) if settled else None
        ),
        "ceiling_updates_per_s_in_process": round(ceil_rate),
        "ceiling_ratio": round(rate / ceil_rate, 3),
    }
    print()
    print(f"streams opened / lost        {figures['streams_opened']} / {figures['streams_lost']}")
    print(f"batches sent / acknowledged  {figures['batches_sent']} / {figures['batches_acked']}")
    verdict = "every batch stored" if figures["every_batch_stored"] else "MISSING BATCHES"
    print(f"device updates stored        {stored} ({verdict})")
    print(f"device updates stored / s    {figures['device_updates_per_s']}")
    cpu = figures["server_cpu_percent_of_one_core"]
    print(f"orchestrator CPU             {cpu} % of one core (wall {wall:.0f} s incl. burst)")
    print(f"orchestrator RSS (peak)      {figures['server_rss_mib_peak']} MiB")
    print(f"state ack latency p50 / p99  {figures['ack_p50_ms']} ms / {figures['ack_p99_ms']} ms")
    print(
        f"  steady (after {STEADY_AFTER_S:g} s)       {figures['steady_ack_p50_ms']} ms / "
        f"{figures['steady_ack_p99_ms']} ms"
    )
    print(
        f"ceiling without gRPC         {figures['ceiling_updates_per_s_in_process']} updates/s "
        f"in-process (this run used {figures['ceiling_ratio']:.1%} of it)"
    )
    if args.json:
        print(json.dumps(figures))
    ok = figures["streams_lost"] == 0 and figures["every_batch_stored"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
