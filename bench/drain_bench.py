"""Benchmark: a city's cabinets come back after an outage, each with a day of backlog.

    python bench/drain_bench.py [--gateways 1000] [--lamps 100] [--hours 24]
                                [--max-seconds 120] [--alarm-at-s 10] [--procs 2]

Starts a real orchestrator process (``ondijon orchestrator serve``, SQLite store) and
``--procs`` load processes. Every gateway has its own certificate and its own TLS
connection; the gateways reconnect spread over ``--ramp-s`` (their jittered backoff), say
hello and drain a backlog of ``--lamps`` x 4 x ``--hours`` quarter-hour metering records
the way the agent's link does: batches of at most 200 events and 256 KiB, never more in
flight than the window the orchestrator grants in its welcome, alarms before metering.
``--alarm-at-s`` seconds after its welcome every gateway raises one live alarm; its
latency (raised -> acknowledged, i.e. committed) says whether the backlog starved it.

The run is bounded: after ``--max-seconds`` the load stops and the drain time is projected
from the rate. Prints what was run, events stored per second (read back from the store),
time to drain, the orchestrator's CPU and RSS, acknowledgement and alarm latencies, and the
ceiling of the store's own ``add_events`` in-process (no gRPC) for comparison.

Events are serialized once per load process (the agent's outbox also stores each event
serialized, with its sequence prepended as raw bytes), so the load processes spend their
time on TLS and HTTP/2, not on building messages. They share the machine's cores with the
orchestrator: figures are pessimistic for the server and vary run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import pickle
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psutil
import sqlalchemy as sa
from city import BenchCity  # bench/city.py, beside this script

from orchestrator.store.database import NewEvent, Store
from protos.ondijon.v1 import link_pb2

CONNECT = "/ondijon.v1.GatewayLink/Connect"
T0 = datetime(2026, 1, 5, tzinfo=UTC)
MAX_BATCH_EVENTS = 200  # edge.link.GatewayLinkClient's defaults
MAX_BATCH_BYTES = 256 * 1024


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


def _field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + _varint(len(payload)) + payload


def metering_bodies(lamps: int, quarters: int) -> list[bytes]:
    """Serialized metering Events without their sequence, oldest first (as the agent's)."""
    bodies = []
    for q in range(quarters):
        end = T0 + timedelta(minutes=15 * (q + 1))
        for lamp in range(lamps):
            event = link_pb2.Event(
                priority=link_pb2.EVENT_PRIORITY_METERING,
                device_id=f"lamp-{lamp:03d}",
                type="energy_interval",
                attributes={
                    "interval_start": (end - timedelta(minutes=15)).isoformat(),
                    "interval_end": end.isoformat(),
                    "wh": "9.375",
                    "on_seconds": "900",
                    "covered_seconds": "900",
                },
            )
            event.at.FromDatetime(end)
            bodies.append(event.SerializeToString())
    return bodies


def alarm_body() -> bytes:
    event = link_pb2.Event(
        priority=link_pb2.EVENT_PRIORITY_ALARM,
        device_id="lamp-013",
        type="lamp_failure",
        message="no current with the relay on",
        attributes={"state": "raised"},
    )
    event.at.FromDatetime(T0 + timedelta(days=1))
    return event.SerializeToString()


def with_sequence(sequence: int, body: bytes) -> bytes:
    """An Event's bytes with its sequence field prepended (field 1, varint)."""
    return b"\x08" + _varint(sequence) + body


# -- load process -----------------------------------------------------------------------


async def _gateway(
    address: str,
    root: bytes,
    key: bytes,
    chain: bytes,
    bodies: list[bytes],
    alarm: bytes,
    start_at: float,
    alarm_at_s: float,
    stop_at: float,
    out: dict[str, Any],
) -> None:
    credentials = grpc.ssl_channel_credentials(root, key, chain)
    options = [
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.ssl_target_name_override", "localhost"),
    ]
    total = len(bodies) + 1  # the backlog, then the live alarm
    await asyncio.sleep(max(0.0, start_at - time.time()))
    async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
        connect = channel.stream_stream(
            CONNECT,
            request_serializer=lambda b: b,
            response_deserializer=link_pb2.ConnectResponse.FromString,
        )
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def requests():  # type: ignore[no-untyped-def]
            hello = link_pb2.Hello(firmware_version="bench", last_sequence=total - 1)
            yield link_pb2.ConnectRequest(hello=hello).SerializeToString()
            while (item := await queue.get()) is not None:
                yield item

        call = connect(requests())
        try:
            first = await call.read()
            if first is grpc.aio.EOF or first.WhichOneof("body") != "welcome":
                out["lost"] += 1
                return
            out["opened"] += 1
            window = max(1, first.welcome.event_window)
            welcomed = time.perf_counter()
            next_metering = 0  # index into bodies: metering sequence = index + 1
            alarm_state = {"raised": 0.0, "sent": False}
            in_flight = 0
            acked = 0
            sent_at: dict[int, float] = {}  # first sequence of a batch -> when sent
            alarm_seq = total
            alarm_acked = False

            def fill() -> None:
                nonlocal next_metering, in_flight
                while in_flight < window:
                    room = min(MAX_BATCH_EVENTS, window - in_flight)
                    parts: list[bytes] = []
                    size = 0
                    first_seq = 0
                    if alarm_state["raised"] and not alarm_state["sent"]:
                        entry = _field(0x0A, with_sequence(alarm_seq, alarm))
                        parts.append(entry)
                        size += len(entry)
                        first_seq = alarm_seq
                        alarm_state["sent"] = True
                    while len(parts) < room and next_metering < len(bodies):
                        entry = _field(
                            0x0A, with_sequence(next_metering + 1, bodies[next_metering])
                        )
                        if parts and size + len(entry) > MAX_BATCH_BYTES:
                            break
                        parts.append(entry)
                        size += len(entry)
                        first_seq = first_seq or next_metering + 1
                        next_metering += 1
                    if not parts:
                        return
                    in_flight += len(parts)
                    sent_at[first_seq] = time.perf_counter()
                    queue.put_nowait(_field(0x1A, b"".join(parts)))

            async def raise_alarm() -> None:
                await asyncio.sleep(alarm_at_s)
                alarm_state["raised"] = time.perf_counter()
                out["alarm_backlog_left"].append(len(bodies) - next_metering + in_flight)
                fill()

            alarm_task = asyncio.create_task(raise_alarm())
            fill()
            while acked < total and time.time() < stop_at:
                try:
                    response = await asyncio.wait_for(call.read(), max(0.1, stop_at - time.time()))
                except TimeoutError:
                    break
                if response is grpc.aio.EOF:
                    out["lost"] += 1
                    break
                if response.WhichOneof("body") != "event_ack":
                    continue
                now = time.perf_counter()
                for r in response.event_ack.stored:
                    count = r.last - r.first + 1
                    acked += count
                    in_flight -= count
                    t_sent = sent_at.pop(r.first, None)
                    if t_sent is not None and r.first != alarm_seq:
                        out["ack_latency"].append(now - t_sent)
                    if r.first <= alarm_seq <= r.last:
                        out["alarm_latency"].append(now - alarm_state["raised"])
                        sent_at.pop(alarm_seq, None)
                        alarm_acked = True
                if alarm_acked:
                    # Metering still unacknowledged when the alarm was: what it overtook.
                    out["alarm_overtook"].append(total - acked)
                    alarm_acked = False
                fill()
            alarm_task.cancel()
            out["acked"] += acked
            if acked == total:
                out["drained"] += 1
                out["drain_s"].append(time.perf_counter() - welcomed)
                out["drained_at"].append(time.time())
        except grpc.aio.AioRpcError:
            out["lost"] += 1
        finally:
            queue.put_nowait(None)
            call.cancel()


def load_process(args: tuple[Any, ...]) -> None:
    address, root, identities, lamps, quarters, ramp_s, t_start, alarm_at_s, stop_at, path = args
    bodies = metering_bodies(lamps, quarters)
    alarm = alarm_body()
    out: dict[str, Any] = {
        "opened": 0,
        "lost": 0,
        "acked": 0,
        "drained": 0,
        "drain_s": [],
        "drained_at": [],
        "ack_latency": [],
        "alarm_latency": [],
        "alarm_backlog_left": [],
        "alarm_overtook": [],
    }

    async def main() -> None:
        n = max(1, len(identities))
        await asyncio.gather(
            *(
                _gateway(
                    address,
                    root,
                    key,
                    chain,
                    bodies,
                    alarm,
                    t_start + ramp_s * i / n,
                    alarm_at_s,
                    stop_at,
                    out,
                )
                for i, (key, chain) in enumerate(identities)
            )
        )

    asyncio.run(main())
    Path(path).write_bytes(pickle.dumps(out))


# -- ceiling: the store's own work, in-process ------------------------------------------


def ceiling(store_url: str, batches: int = 30) -> float:
    """Events/s that ``Store.add_events`` stores in-process, 200-event batches, one commit
    each (what the orchestrator does per EventBatch, without gRPC or decoding)."""
    store = Store.open(store_url)
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        store.add_gateway(
            conn,
            gateway_id="ceiling",
            serial="x",
            commune="x",
            latitude=0,
            longitude=0,
            time_zone="UTC",
            tags=[],
            now=now,
        )
    body = metering_bodies(1, 1)[0]
    t0 = time.perf_counter()
    for b in range(batches):
        rows = [
            NewEvent(b * 200 + i + 1, T0, 3, "lamp-000", "energy_interval", body)
            for i in range(200)
        ]
        with store.engine.begin() as conn:
            store.add_events(conn, "ceiling", rows, now=now)
    elapsed = time.perf_counter() - t0
    store.close()
    return batches * 200 / elapsed


# -- orchestration ------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--lamps", type=int, default=100)
    parser.add_argument("--hours", type=float, default=24, help="backlog: hours of metering")
    parser.add_argument("--max-seconds", type=float, default=120, help="stop the load then")
    parser.add_argument("--alarm-at-s", type=float, default=10)
    parser.add_argument("--ramp-s", type=float, default=5, help="reconnections spread over")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print figures as JSON too")
    args = parser.parse_args()
    quarters = max(1, round(args.hours * 4))
    backlog = args.lamps * quarters

    work = Path(tempfile.mkdtemp(prefix="ondijon-drain-"))
    city = BenchCity.build(work, args.gateways, "drain")
    ca, port, db, identities = city.ca, city.port, city.db, city.identities
    total_events = args.gateways * (backlog + 1)
    print(
        f"run: {args.gateways} gateways x {backlog} metering events ({args.lamps} lamps x "
        f"{quarters} quarter hours) + 1 live alarm each = {total_events} events; "
        f"reconnections over {args.ramp_s:g} s, alarms {args.alarm_at_s:g} s after each "
        f"welcome, load stopped after {args.max_seconds:g} s, {args.procs} load processes",
        flush=True,
    )
    results = [str(work / f"load-{i}.pickle") for i in range(args.procs)]
    server = city.start_orchestrator()
    try:
        proc = psutil.Process(server.pid)
        proc.cpu_percent(None)
        shares = [identities[i :: args.procs] for i in range(args.procs)]
        t_start = time.time() + 3.0
        stop_at = t_start + args.max_seconds
        cpu0 = proc.cpu_times()
        rss_peak = 0
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.procs) as pool:
            pending = pool.map_async(
                load_process,
                [
                    (
                        f"127.0.0.1:{port}",
                        ca.root_pem,
                        share,
                        args.lamps,
                        quarters,
                        args.ramp_s,
                        t_start,
                        args.alarm_at_s,
                        stop_at,
                        results[i],
                    )
                    for i, share in enumerate(shares)
                ],
            )
            while not pending.ready():
                rss_peak = max(rss_peak, proc.memory_info().rss)
                pending.wait(0.5)
            pending.get()
        wall = time.time() - t_start
        cpu1 = proc.cpu_times()
        rss_peak = max(rss_peak, proc.memory_info().rss)
    finally:
        server.terminate()
        server.wait(timeout=60)

    totals: dict[str, Any] = {
        "opened": 0,
        "lost": 0,
        "acked": 0,
        "drained": 0,
        "drain_s": [],
        "drained_at": [],
        "ack_latency": [],
        "alarm_latency": [],
        "alarm_backlog_left": [],
        "alarm_overtook": [],
    }
    for path in results:
        part = pickle.loads(Path(path).read_bytes())
        for key, value in part.items():
            totals[key] += value
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        stored = int(conn.execute(sa.text("SELECT count(*) FROM events")).scalar() or 0)
        # The backlog went in sequence order: no gateway has a hole below its highest
        # stored metering sequence (the live alarm, numbered after the backlog, overtakes it).
        per_gateway_ok = (
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM (SELECT count(*) AS n, max(sequence) AS m FROM events"
                    " WHERE sequence <= :backlog GROUP BY gateway_id) WHERE n != m"
                ),
                {"backlog": backlog},
            ).scalar()
            == 0
        )
    engine.dispose()
    cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    all_drained = totals["drained"] == args.gateways
    # From the first reconnection to the last acknowledgement, or the whole bounded run.
    span = max(totals["drained_at"]) - t_start if all_drained else wall
    rate = stored / span if span > 0 else 0.0
    drain_time = span if all_drained else total_events / rate if rate else None
    ceil_rate = ceiling(f"sqlite:///{work / 'ceiling.db'}")
    alarm_p50 = _percentile(totals["alarm_latency"], 0.5)
    ack_p50 = _percentile(totals["ack_latency"], 0.5)
    figures = {
        "gateways": args.gateways,
        "backlog_per_gateway": backlog,
        "events_total": total_events,
        "streams_opened": totals["opened"],
        "streams_lost": totals["lost"],
        "events_acked": totals["acked"],
        "events_stored": stored,
        "every_ack_stored": stored >= totals["acked"],
        "stored_in_order_per_gateway": per_gateway_ok,
        "events_stored_per_s": round(rate),
        "fraction_drained": round(stored / total_events, 4),
        "gateways_fully_drained": totals["drained"],
        "time_to_drain_s": None if drain_time is None else round(drain_time, 1),
        "time_to_drain_measured": all_drained,
        "server_cpu_percent_of_one_core": round(100 * cpu_s / wall, 1),
        "server_rss_mib_peak": round(rss_peak / 2**20, 1),
        "batch_ack_p50_ms": None if ack_p50 is None else round(1000 * ack_p50),
        "batch_ack_p99_ms": _round_ms(_percentile(totals["ack_latency"], 0.99)),
        "alarms_acked": len(totals["alarm_latency"]),
        "alarms_raised": len(totals["alarm_backlog_left"]),
        "alarm_p50_ms": None if alarm_p50 is None else round(1000 * alarm_p50),
        "alarm_p99_ms": _round_ms(_percentile(totals["alarm_latency"], 0.99)),
        "alarm_max_ms": _round_ms(max(totals["alarm_latency"], default=None)),
        "backlog_left_when_alarm_raised_p50": _percentile(
            [float(x) for x in totals["alarm_backlog_left"]], 0.5
        ),
        "alarms_stored_ahead_of_backlog": sum(1 for x in totals["alarm_overtook"] if x > 0),
        "store_ceiling_events_per_s_in_process": round(ceil_rate),
    }
    print()
    print(f"streams opened / lost          {totals['opened']} / {totals['lost']}")
    print(
        f"events stored                  {stored} of {total_events} "
        f"({figures['fraction_drained']:.1%}); acknowledged {totals['acked']}"
        f"{'' if figures['every_ack_stored'] else ' (ACKED BUT NOT STORED)'}"
    )
    print(f"events stored / s              {figures['events_stored_per_s']} (over {span:.0f} s)")
    if all_drained:
        print(
            f"time to drain                  {drain_time:.1f} s (measured, first reconnection "
            f"to last ack; one gateway's own drain p50 "
            f"{_percentile(totals['drain_s'], 0.5) or 0:.1f} s)"
        )
    elif drain_time is not None:
        print(
            f"time to drain                  ~{drain_time:.0f} s = {drain_time / 3600:.1f} h "
            f"(projected at this rate; {totals['drained']} gateways fully drained)"
        )
    print(
        f"orchestrator CPU / RSS peak    {figures['server_cpu_percent_of_one_core']} % of one "
        f"core / {figures['server_rss_mib_peak']} MiB"
    )
    print(
        f"batch sent -> first acked      {_ms(ack_p50)} / "
        f"{_ms(_percentile(totals['ack_latency'], 0.99))}"
    )
    print(
        f"live alarms acked / raised     {figures['alarms_acked']} / {figures['alarms_raised']}"
        f" (backlog left when raised, p50: {figures['backlog_left_when_alarm_raised_p50']})"
    )
    print(
        f"alarm latency p50 / p99 / max  {_ms(alarm_p50)} / "
        f"{_ms(_percentile(totals['alarm_latency'], 0.99))} / "
        f"{_ms(max(totals['alarm_latency'], default=None))}"
    )
    overtook = [x for x in totals["alarm_overtook"] if x > 0]
    print(
        f"alarms ahead of the backlog    {len(overtook)} of {figures['alarms_raised']} alarms "
        "were stored while their gateway's metering was still queued (median "
        f"{_percentile([float(x) for x in overtook], 0.5) or 0:.0f} events behind them)"
    )
    print(
        f"store ceiling, no gRPC         {figures['store_ceiling_events_per_s_in_process']} "
        "events/s (Store.add_events, 200-event batches, one commit each)"
    )
    if args.json:
        print(json.dumps(figures))
    ok = figures["streams_lost"] == 0 and figures["every_ack_stored"] and per_gateway_ok
    return 0 if ok else 1


def _round_ms(value: float | None) -> int | None:
    return None if value is None else round(1000 * value)


if __name__ == "__main__":
    sys.exit(main())
