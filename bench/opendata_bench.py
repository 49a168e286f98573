"""Benchmark: the open data export of a Dijon-sized city, and the public endpoint.

    python bench/opendata_bench.py [--lamps 34000] [--cabinets 1500] [--days 7]
                                   [--seconds 5] [--concurrency 32]

Builds the generated city (``domain.city.generator``: 23 communes, ``--cabinets``
cabinets, ``--lamps`` lamps, 113 crossings, 26 bollard sites) in a fresh SQLite store,
with ``--days`` days of energy per lamp (one lamp-day row each), a schedule on every
cabinet and an open lamp alarm on 1 % of the lamps, then:

1. **Export**: the time to read the store and build every file (the pure core and the
   privacy gate), the time to publish it atomically to disk, and the size of each format;
   the time to build the same export without the privacy gate is printed beside it (its
   share of the cost).
2. **Public endpoint from cache**: a real orchestrator with ``[public]`` on (HTTPS on
   loopback) answers ``GET /opendata/energy.csv`` for ``--seconds`` from ``--concurrency``
   clients, full responses and ``If-None-Match`` revalidations (304); beside it, the
   ceiling of the same aiohttp server and TLS: a handler that returns a constant.
   Rate limits are raised out of the way for the run (one client address).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ssl
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from domain.alarms import Occurrence
from domain.city.generator import generate
from domain.city.inventory import AssetKind, diff
from domain.documents import kind_named, payload_from_json
from domain.opendata import catalogue
from domain.opendata.catalogue import Publisher
from foundation.clock import SystemClock
from orchestrator.alarms.service import apply
from orchestrator.config import OrchestratorConfig, Public
from orchestrator.public.export import Export, inputs_of, publish, read_records
from orchestrator.public.http import tls_context
from orchestrator.server import start
from orchestrator.store import assets as asset_sql
from orchestrator.store.database import Store
from orchestrator.store.schema import energy_days
from protos.ondijon.v1 import link_pb2
from provisioning.ca import CertificateAuthority

SCHEDULE = """{"programs": [{"id": "winter", "points": [
  {"sun_event": "SUN_EVENT_CIVIL_DUSK", "lamp_level": 100},
  {"local_time": "23:00", "lamp_level": 50},
  {"sun_event": "SUN_EVENT_SUNRISE", "lamp_level": 0}]}],
 "rules": [{"program_id": "winter"}]}"""


def populate(url: str, lamps: int, cabinets: int, days: int) -> None:
    small = cabinets < 1500  # a quick run: fewer crossings and bollard sites
    city = generate(
        21000,
        cabinets=cabinets,
        lamps=lamps,
        crossings=max(2, cabinets // 20) if small else 113,
        bollard_sites=max(2, cabinets // 40) if small else 26,
    )
    store = Store.open(url)
    now = datetime.now(UTC)
    today = now.date()
    kind = kind_named("schedule")
    payload = payload_from_json(kind, SCHEDULE, source="bench")
    with store.engine.begin() as conn:
        asset_sql.apply_diff(conn, diff({}, city.assets), now=now)
        for cab in city.cabinets:
            store.put_document(
                conn,
                gateway_id=cab.asset_id,
                kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
                digest=hashlib.sha256(payload).digest(),
                payload=payload,
                expected_version=0,
                issued_by="bench",
                now=now,
            )
        lamp_assets = city.of_kind(AssetKind.LAMP)
        for d in range(1, days + 1):
            day: date = today - timedelta(days=d)
            conn.execute(
                energy_days.insert(),
                [
                    {
                        "gateway_id": a.gateway_id,
                        "device_id": a.device_id,
                        "day": day,
                        "commune": a.commune,
                        "wh": a.power_w * 7.5,
                        "on_seconds": 13.5 * 3600,
                        "covered_seconds": 86400.0,
                        "day_wh": 0.0,
                        "night_seconds": 15 * 3600.0,
                        "night_on_seconds": 13.5 * 3600,
                        "peak_w": a.power_w,
                        "profile": [a.power_w * 0.5] * 24,
                    }
                    for a in lamp_assets
                ],
            )
        for a in lamp_assets[::100]:
            apply(
                conn,
                a.commune,
                [
                    Occurrence(
                        a.gateway_id, a.device_id, "lamp_failure", True, now - timedelta(hours=5)
                    )
                ],
                now,
            )
    store.close()


async def hammer(
    url: str, seconds: float, concurrency: int, context: ssl.SSLContext, headers: dict[str, str]
) -> tuple[int, dict[int, int]]:
    counts: dict[int, int] = {}
    done = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(ssl=context, limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with session.get(url, headers=headers) as r:
                    await r.read()
                    counts[r.status] = counts.get(r.status, 0) + 1
                    done += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return done, counts


async def endpoint(args: argparse.Namespace, url: str, tmp: Path) -> None:
    ca = CertificateAuthority.init(tmp / "ca", now=datetime.now(UTC))
    config = OrchestratorConfig(
        listen="127.0.0.1:0",
        enroll_listen="127.0.0.1:0",
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
        store_url=url,
        ca_dir=tmp / "ca",
        state_dir=tmp / "orchestrator",
        gateway_certificate_days=7,
        token_ttl_hours=72,
        public=Public(
            listen="127.0.0.1:0", refresh_s=3600, requests_per_s=1e4, request_burst=100_000
        ),
    )
    running = await start(config, SystemClock(), ca=ca)
    context = ssl.create_default_context(cadata=ca.root_pem.decode())
    try:
        assert running.app.public is not None
        await running.app.public.ready(600)
        base = f"https://127.0.0.1:{running.public_port}/opendata/energy.csv"
        etag = running.app.public.snapshot.resources["energy.csv"].etag
        size = len(running.app.public.snapshot.resources["energy.csv"].body)
        for label, headers in (
            ("full responses (200)", {}),
            ("revalidations (If-None-Match: 304)", {"If-None-Match": etag}),
        ):
            n, counts = await hammer(base, args.seconds, args.concurrency, context, headers)
            print(f"  {label:38s} {n / args.seconds:8.0f} req/s  {counts}")
        print(f"  (energy.csv is {size / 1000:.0f} kB)")
    finally:
        await running.stop()
    # The ceiling: the same server library and TLS, a constant answer.
    app = web.Application()

    async def constant(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", constant)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner,
        "127.0.0.1",
        0,
        ssl_context=tls_context(
            tmp / "orchestrator" / "server.pem", tmp / "orchestrator" / "server.key"
        ),
    )
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    n, counts = await hammer(
        f"https://127.0.0.1:{port}/", args.seconds, args.concurrency, context, {}
    )
    print(f"  {'ceiling: aiohttp + TLS, constant':38s} {n / args.seconds:8.0f} req/s  {counts}")
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lamps", type=int, default=34_000)
    parser.add_argument("--cabinets", type=int, default=1_500)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        url = f"sqlite:///{tmp / 'orchestrator.db'}"
        t = time.monotonic()
        populate(url, args.lamps, args.cabinets, args.days)
        print(
            f"city: {args.lamps} lamps, {args.cabinets} cabinets, {args.days} days of energy "
            f"(stored in {time.monotonic() - t:.0f} s)"
        )
        store = Store.open(url)
        at = datetime.now(UTC)
        t = time.monotonic()
        with store.engine.connect() as conn:
            records = read_records(store, conn, at)
        read_s = time.monotonic() - t
        t = time.monotonic()
        inputs = inputs_of(records, at)
        decode_s = time.monotonic() - t
        t = time.monotonic()
        files = catalogue.export_files(inputs, Publisher(), at)
        build_s = time.monotonic() - t
        original_check, original_rows = catalogue.check, catalogue.check_rows
        catalogue.check = catalogue.check_rows = lambda *a, **kw: None  # type: ignore[assignment]
        t = time.monotonic()
        catalogue.export_files(inputs, Publisher(), at)
        unchecked_s = time.monotonic() - t
        catalogue.check, catalogue.check_rows = original_check, original_rows
        export = Export(files, at)
        t = time.monotonic()
        publish(tmp / "od", export)
        publish_s = time.monotonic() - t
        store.close()
        print(
            f"export: read the store {read_s:.1f} s; decode states and schedules, tonight's "
            f"programs {decode_s:.1f} s; build every file {build_s:.1f} s (without the "
            f"privacy gate {unchecked_s:.1f} s); publish to disk {publish_s:.1f} s; "
            f"total {read_s + decode_s + build_s + publish_s:.1f} s"
        )
        sizes: dict[str, int] = {}
        for name, data in export.files.items():
            kind = "schemas" if name.startswith("schemas/") else name.split(".", 1)[1]
            sizes[kind] = sizes.get(kind, 0) + len(data)
        total = sum(sizes.values())
        print(
            f"size: {total / 1e6:.1f} MB in {len(export.files)} files: "
            + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sorted(sizes.items()))
        )
        print("public endpoint, served from cache:")
        asyncio.run(endpoint(args, url, tmp))


if __name__ == "__main__":
    main()
