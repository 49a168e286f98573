"""Benchmark: the generated city (1,500 gateways) takes a city-wide program, and the fleet
is listed a page at a time.

    python bench/city_bench.py [--cabinets 1500] [--procs 2] [--rounds 20]

Registers the generated city (domain.city.generator: 23 communes, 1,500 cabinets, 34,000
lamps) in a SQLite store through the asset register, issues each cabinet its certificate,
starts a real orchestrator process (``ondijon orchestrator serve``) and ``--procs`` load
processes in which every cabinet opens its own mutual-TLS GatewayLink stream, says hello and
acknowledges every document it is sent. Then, through the City admin API over mutual TLS:

- one ``PutGroupDocument`` to the whole city; time until the call returns, and until the
  convergence view counts every gateway as holding the new version (every acknowledgement
  stored); peer measured in the same run: ``PutDesiredState`` one gateway at a time (the
  shell loop this replaces), timed on a sample and extrapolated to the city;
- ``ListFleet`` a page of 100 at a time over the whole city, p50/p99 per page; peer: the
  unpaged ``ListGateways`` of the whole city.

Load processes share the 2 cores with the orchestrator: figures are pessimistic.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from city import BenchCity, free_port  # bench/city.py, beside this script

from domain.city.generator import generate
from domain.city.inventory import diff
from ondijon.client import AdminClient
from orchestrator.store import assets as asset_sql
from orchestrator.store.database import Store
from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2
from provisioning.ca import CertificateAuthority, key_to_pem, make_csr, new_private_key
from provisioning.identity import Identity, Role
from provisioning.profile import Profile

CONNECT = "/ondijon.v1.GatewayLink/Connect"


def lighting(level: int) -> bytes:
    return schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="all-night",
                points=[schedule_pb2.SwitchPoint(local_time="00:00", lamp_level=level)],
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="all-night", priority=1)],
    ).SerializeToString()


def build(work: Path, cabinets: int) -> BenchCity:
    scale = cabinets / 1500
    city = generate(
        cabinets=cabinets,
        lamps=round(34000 * scale),
        crossings=max(1, round(113 * scale)),
        bollard_sites=max(1, round(26 * scale)),
    )
    now = datetime.now(UTC)
    ca = CertificateAuthority.init(work / "ca", now=now)
    port, enroll_port = free_port(), free_port()
    db = work / "orchestrator.db"
    (work / "orchestrator.toml").write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nenroll_listen = "127.0.0.1:{enroll_port}"\n'
        f'[store]\nurl = "sqlite:///{db}"\n'
        f'[identity]\nca_dir = "{work / "ca"}"\nstate_dir = "{work / "orchestrator"}"\n'
        '[console]\nlisten = ""\n[public]\nlisten = ""\n'  # one host may run several
    )
    store = Store.open(f"sqlite:///{db}")
    print(f"registering {len(city.assets)} assets, issuing {cabinets} certificates ...", flush=True)
    identities = []
    with store.engine.begin() as conn:
        asset_sql.apply_diff(conn, diff({}, list(city.assets)), now=now)
        for cabinet in city.cabinets:
            gid = cabinet.asset_id
            key = new_private_key()
            cert = ca.issue_for_csr(
                make_csr(key, gid), Identity(Role.GATEWAY, gid), now=now, lifetime=timedelta(days=1)
            )
            store.record_certificate(
                conn,
                serial_hex=cert.serial_hex,
                role="gateway",
                name=gid,
                not_before=cert.certificate.not_valid_before_utc,
                not_after=cert.not_after,
            )
            identities.append((key_to_pem(key), cert.chain_pem))
    store.close()
    return BenchCity(work, ca, port, db, identities)


async def _gateway(
    address: str, root: bytes, key: bytes, chain: bytes, out: dict[str, list[float]], stop_at: float
) -> None:
    credentials = grpc.ssl_channel_credentials(root, key, chain)
    options = [
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.ssl_target_name_override", "localhost"),
    ]
    async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
        connect = channel.stream_stream(
            CONNECT,
            request_serializer=link_pb2.ConnectRequest.SerializeToString,
            response_deserializer=link_pb2.ConnectResponse.FromString,
        )
        queue: asyncio.Queue[link_pb2.ConnectRequest | None] = asyncio.Queue()

        async def requests():  # type: ignore[no-untyped-def]
            yield link_pb2.ConnectRequest(hello=link_pb2.Hello(firmware_version="bench"))
            while (item := await queue.get()) is not None:
                yield item

        call = connect(requests())
        try:
            while time.time() < stop_at:
                try:
                    response = await asyncio.wait_for(call.read(), max(0.1, stop_at - time.time()))
                except TimeoutError:
                    break
                if response is grpc.aio.EOF:
                    break
                body = response.WhichOneof("body")
                if body == "welcome":
                    out["connected"].append(time.time())
                elif body == "document":
                    d = response.document
                    out["documents"].append(time.time())
                    queue.put_nowait(
                        link_pb2.ConnectRequest(
                            document_ack=link_pb2.DocumentAck(
                                kind=d.kind, version=d.version, digest=d.digest, accepted=True
                            )
                        )
                    )
        except grpc.aio.AioRpcError:
            out["lost"].append(time.time())
        finally:
            queue.put_nowait(None)
            call.cancel()


def load_process(args: tuple[str, bytes, list[tuple[bytes, bytes]], float, str]) -> None:
    address, root, identities, stop_at, result = args
    out: dict[str, list[float]] = {"connected": [], "documents": [], "lost": []}

    async def main() -> None:
        await asyncio.gather(*(_gateway(address, root, k, c, out, stop_at) for k, c in identities))

    asyncio.run(main())
    Path(result).write_bytes(pickle.dumps(out))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def operate(profile: Profile, cabinets: int, rounds: int) -> dict[str, float]:
    # One channel for the whole run, as `ondijon fleet` pages over one.
    async with AdminClient(profile, timeout=120) as admin:
        return await _operate(admin, cabinets, rounds)


async def _operate(admin: AdminClient, cabinets: int, rounds: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    # Wait for every gateway's stream.
    for _ in range(1200):
        fleet = await fleet_pages(admin)
        if sum(g.connected for g in fleet[0]) == cabinets:
            break
        await asyncio.sleep(0.5)
    connected = sum(g.connected for g in fleet[0])
    figures["connected"] = connected
    figures.update(await city_wide_program(admin, connected))
    # Peer: one gateway at a time (the shell loop), on a sample.
    figures["peer_at"] = time.time()
    sample = [g.gateway_id for g in fleet[0][:30]]
    figures["one_by_one_per_call_s"] = await one_at_a_time(admin, sample)
    # Fleet listing, paged.
    pages: list[float] = []
    for _ in range(rounds):
        pages += (await fleet_pages(admin))[1]
    figures["page_p50_ms"] = percentile(pages, 50) * 1000
    figures["page_p99_ms"] = percentile(pages, 99) * 1000
    figures["pages"] = len(pages)
    t2 = time.perf_counter()
    await admin.list_gateways(control_pb2.ListGatewaysRequest())
    figures["unpaged_list_s"] = time.perf_counter() - t2
    return figures


async def city_wide_program(
    admin: AdminClient, connected: int, settled: Awaitable[object] | None = None
) -> dict[str, float]:
    """One ``PutGroupDocument`` of a lighting program to the whole city, then the
    convergence view polled until it counts ``connected`` gateways holding it: when the put
    was made (``put_at``, epoch), how long the call took (``put_s``), gateways given a new
    version (``changed``), seconds from the put until every acknowledgement was stored
    (``all_acked_s``: when the look that counted them answered; ``last_look_s``: when it was
    asked), the gateways the view counted then (``converged``) and the mean time between
    two looks at the view (``poll_s``). ``settled``: awaited after the put, before the
    first look (a bench that knows otherwise when every acknowledgement is stored, and
    would not load the orchestrator with looks meanwhile)."""
    figures: dict[str, float] = {}
    t0 = time.perf_counter()
    figures["put_at"] = time.time()
    put = await admin.put_group_document(
        control_pb2.PutGroupDocumentRequest(
            target=control_pb2.Target(city=True),
            kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
            payload=lighting(80),
        )
    )
    figures["put_s"] = time.perf_counter() - t0
    figures["changed"] = put.gateways_changed
    if settled is not None:
        await settled
    polls = 0
    while time.perf_counter() - t0 < 300:
        asked = time.perf_counter()
        conv = await admin.get_convergence(
            control_pb2.GetConvergenceRequest(kind=link_pb2.DOCUMENT_KIND_SCHEDULE, max_lagging=1)
        )
        polls += 1
        if conv.converged == connected:
            break
        # Every 50 ms, less often when a look is long (a large city: the view's own cost
        # kept to about a quarter of the orchestrator's time), at least every 0.5 s.
        await asyncio.sleep(min(0.5, max(0.05, 3 * (time.perf_counter() - asked))))
    figures["all_acked_s"] = time.perf_counter() - t0
    figures["last_look_s"] = asked - t0
    figures["converged"] = conv.converged
    figures["poll_s"] = figures["all_acked_s"] / polls
    return figures


async def one_at_a_time(admin: AdminClient, gateway_ids: list[str]) -> float:
    """The peer of a city-wide put: ``PutDesiredState`` one gateway at a time (the shell
    loop it replaces) over ``gateway_ids``; seconds per call."""
    t1 = time.perf_counter()
    for gid in gateway_ids:
        await admin.put_desired_state(
            control_pb2.PutDesiredStateRequest(
                gateway_id=gid, kind=link_pb2.DOCUMENT_KIND_SCHEDULE, payload=lighting(60)
            )
        )
    return (time.perf_counter() - t1) / len(gateway_ids)


async def fleet_pages(admin: AdminClient) -> tuple[list[control_pb2.FleetGateway], list[float]]:
    token = ""
    items: list[control_pb2.FleetGateway] = []
    times: list[float] = []
    while True:
        t = time.perf_counter()
        page = await admin.list_fleet(control_pb2.ListFleetRequest(page_token=token, page_size=100))
        times.append(time.perf_counter() - t)
        items += list(page.gateways)
        token = page.next_page_token
        if not token:
            return items, times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cabinets", type=int, default=1500)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=600, help="load processes stop after")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        city = build(work, args.cabinets)
        server = city.start_orchestrator()
        profile = city.operator()
        stop_at = time.time() + args.seconds
        shares = [city.identities[i :: args.procs] for i in range(args.procs)]
        results = [str(work / f"load-{i}.pickle") for i in range(args.procs)]
        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(
                target=load_process,
                args=((f"127.0.0.1:{city.port}", city.ca.root_pem, share, stop_at, result),),
            )
            for share, result in zip(shares, results, strict=True)
        ]
        for p in procs:
            p.start()
        try:
            figures = asyncio.run(operate(profile, args.cabinets, args.rounds))
        finally:
            server.terminate()
            server.wait(30)
            for p in procs:
                p.join(60)
                if p.is_alive():
                    p.kill()
        documents = []
        for result in results:
            if Path(result).exists():
                documents += pickle.loads(Path(result).read_bytes())["documents"]
        received = [
            t - figures["put_at"] for t in documents if figures["put_at"] <= t < figures["peer_at"]
        ]
    n = int(figures["connected"])
    print(f"gateways connected over mutual TLS: {n} of {args.cabinets}")
    print(
        f"city-wide program: PutGroupDocument returned in {figures['put_s']:.2f} s "
        f"({int(figures['changed'])} gateways given a new version)"
    )
    if received:
        print(
            f"  documents received by the gateways: p50 {statistics.median(received):.2f} s, "
            f"last {max(received):.2f} s after the put"
        )
    print(
        f"  every acknowledgement stored (convergence {int(figures['converged'])}/{n}): "
        f"{figures['all_acked_s']:.2f} s after the put"
    )
    print(
        f"  peer, one gateway at a time: {figures['one_by_one_per_call_s'] * 1000:.0f} ms a call, "
        f"{figures['one_by_one_per_call_s'] * n:.0f} s for the city"
    )
    print(
        f"fleet listing, pages of 100: p50 {figures['page_p50_ms']:.1f} ms, "
        f"p99 {figures['page_p99_ms']:.1f} ms ({int(figures['pages'])} pages)"
    )
    print(f"  peer, unpaged ListGateways of the whole city: {figures['unpaged_list_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
