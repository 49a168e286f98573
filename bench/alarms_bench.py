"""Benchmark: an alarm storm, and the control room's listings, on a city-sized store.

    python bench/alarms_bench.py [--gateways 1500] [--lamps 23] [--communes 23]
                                 [--storm-commune 0] [--calls 200]

Starts a real orchestrator in this process (SQLite store, mutual TLS on loopback) with an
admin profile, and registers ``--gateways`` cabinets spread over ``--communes`` communes,
``--lamps`` lamps each (1,500 x 23 = 34,500 lamps: Dijon métropole).

1. **Alarm storm**: one commune loses mains. Each of its cabinets sends what its agent
   records: ``mains_lost`` from the cabinet, then ``lamp_failure`` from every lamp (the
   lamps go dark on battery), as one event batch per cabinet, stored through the same path
   as GatewayLink (events stored, and the alarm and energy hooks run, in one transaction,
   the batches of all cabinets at once through the group-commit runner). Prints the events
   sent, the alarms stored, the rows an operator sees in ``ListAlarms`` (flood control:
   one per cabinet) and the time from the first batch until every alarm is committed.
2. **Listings** through the real admin API over mutual TLS: ``ListAlarms`` (a page of 100
   of the open root causes; and the lamps under one root), ``EnergyReport`` per commune
   over one day of the whole city (one lamp-day row per lamp, written beforehand), and
   the fleet (``ListGateways``) for comparison: p50/p99 over ``--calls`` calls each; and
   its peer, the same reads one gateway at a time (how ``ListGateways`` read before).

The ceiling printed beside the storm is the store's ``add_events`` alone for the same
events (no alarm hook), measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domain.energy import LampDay
from foundation.clock import SystemClock
from orchestrator.identity.operators import add_operator
from orchestrator.server import start
from orchestrator.store import energy as energy_sql
from orchestrator.store.database import NewEvent
from protos.ondijon.v1 import control_pb2, control_pb2_grpc, link_pb2
from provisioning.ca import CertificateAuthority
from tests.conftest import orchestrator_config

COMMUNES = [
    "Dijon", "Chenôve", "Talant", "Fontaine-lès-Dijon", "Quetigny", "Chevigny-Saint-Sauveur",
    "Longvic", "Saint-Apollinaire", "Marsannay-la-Côte", "Plombières-lès-Dijon", "Ahuy",
    "Bressey-sur-Tille", "Bretenière", "Corcelles-les-Monts", "Crimolois", "Daix", "Fénay",
    "Flavignerot", "Hauteville-lès-Dijon", "Magny-sur-Tille", "Neuilly-Crimolois",
    "Ouges", "Perrigny-lès-Dijon", "Sennecey-lès-Dijon",
]  # fmt: skip


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def storm_batch(gateway_id: str, lamps: int, at: datetime) -> list[NewEvent]:
    events = []
    raised = {"state": "raised"}
    for seq, (device, type_) in enumerate(
        [("cabinet", "mains_lost")] + [(f"lamp-{i:03d}", "lamp_failure") for i in range(lamps)],
        start=1,
    ):
        when = at + timedelta(seconds=seq)
        e = link_pb2.Event(
            sequence=seq, device_id=device, type=type_, message="bench",
            priority=link_pb2.EVENT_PRIORITY_ALARM, attributes=raised,
        )  # fmt: skip
        e.at.FromDatetime(when)
        events.append(NewEvent(seq, when, 1, device, type_, e.SerializeToString()))
    return events


async def timed(calls: int, fn) -> list[float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(calls):
        t = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t) * 1000)
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=1500)
    parser.add_argument("--lamps", type=int, default=23)
    parser.add_argument("--communes", type=int, default=23)
    parser.add_argument("--storm-commune", type=int, default=0, help="index of the commune")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    communes = COMMUNES[: args.communes]

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ca = CertificateAuthority.init(tmp_path / "ca", now=datetime.now(UTC))
        config = orchestrator_config(tmp_path)
        running = await start(config, SystemClock(), ca=ca)
        try:
            app = running.app
            runner, store = app.runner, app.runner.store
            now = datetime.now(UTC)
            gateways = [(f"gw-{i:04d}", communes[i % len(communes)]) for i in range(args.gateways)]

            def register(c):  # type: ignore[no-untyped-def]
                for gid, commune in gateways:
                    store.add_gateway(
                        c, gateway_id=gid, serial=f"SN-{gid}", commune=commune, latitude=47.32,
                        longitude=5.04, time_zone="Europe/Paris", tags=[], now=now,
                    )  # fmt: skip

            await runner.write(register)
            profile = add_operator(
                config, name="bench", role="admin", communes=["*"],
                profile_dir=tmp_path / "bench", address=f"localhost:{running.port}", now=now,
            )  # fmt: skip
            storm_commune = communes[args.storm_commune]
            hit = [gid for gid, commune in gateways if commune == storm_commune]
            batches = {gid: storm_batch(gid, args.lamps, now) for gid in hit}
            events = sum(len(b) for b in batches.values())
            hooks = app.link.event_hooks

            async def store_batch(gid: str, batch: list[NewEvent], with_hooks: bool) -> None:
                def add(c):  # type: ignore[no-untyped-def]
                    store.add_events(c, gid, batch, now=now)
                    if with_hooks:
                        for hook in hooks:
                            hook(c, gid, batch, now)

                await runner.write(add)

            # The ceiling first, on gateways of another commune (their own sequences).
            other = [gid for gid, commune in gateways if commune != storm_commune][: len(hit)]
            t = time.perf_counter()
            await asyncio.gather(
                *(store_batch(g, storm_batch(g, args.lamps, now), False) for g in other)
            )
            ceiling = time.perf_counter() - t
            t = time.perf_counter()
            await asyncio.gather(*(store_batch(g, b, True) for g, b in batches.items()))
            storm = time.perf_counter() - t

            async with profile.channel() as channel:
                ops = control_pb2_grpc.OperationsStub(channel)
                control = control_pb2_grpc.ControlCentreStub(channel)
                seen = await ops.ListAlarms(
                    control_pb2.ListAlarmsRequest(commune=storm_commune, limit=1000)
                )
                stored = len(seen.alarms) + sum(a.grouped for a in seen.alarms)
                print(f"city: {len(gateways)} gateways, {len(gateways) * args.lamps} lamps, "
                      f"{len(communes)} communes")  # fmt: skip
                print(
                    f"alarm storm, {storm_commune} loses mains: {len(hit)} cabinets send {events} "
                    f"alarm events; {stored} alarms stored, "
                    f"{len(seen.alarms)} rows an operator sees; all raised in {storm:.2f} s "
                    f"(store alone, no alarm hook: {ceiling:.2f} s)"
                )
                root = seen.alarms[0].alarm_id

                # One lamp-day per lamp of the city, for the energy listing.
                day = date.today()
                per_gateway = {
                    (f"lamp-{i:03d}", day): LampDay(
                        wh=400.0, on_seconds=12 * 3600.0, covered_seconds=86400.0,
                        night_seconds=14 * 3600.0, night_on_seconds=12 * 3600.0, peak_w=60.0,
                    )
                    for i in range(args.lamps)
                }  # fmt: skip

                def energy(c, chunk):  # type: ignore[no-untyped-def]
                    for gid, commune in chunk:
                        energy_sql.add_days(c, gid, commune, per_gateway)

                # A transaction per 100 cabinets: one for the city outlasts the store's
                # deadline on a busy machine.
                for i in range(0, len(gateways), 100):
                    await runner.write(energy, gateways[i : i + 100])
                store = runner.store

                async def one_at_a_time() -> None:
                    # Peer: what ListGateways read before (four queries per gateway, one read
                    # each), without building the messages.
                    def load(c, gid):  # type: ignore[no-untyped-def]
                        return (
                            store.held_for(c, gid),
                            store.documents_for(c, gid),
                            store.stored_sequence(c, gid),
                            store.missing_ranges(c, gid),
                        )

                    for record in await runner.read(store.list_gateways):
                        await runner.read(load, record.gateway_id)

                figures = {
                    "ListAlarms (open root causes, page of 100)": await timed(
                        args.calls, lambda: ops.ListAlarms(control_pb2.ListAlarmsRequest(limit=100))
                    ),
                    f"ListAlarms (the {args.lamps} lamps under one root)": await timed(
                        args.calls,
                        lambda: ops.ListAlarms(control_pb2.ListAlarmsRequest(root_id=root)),
                    ),
                    "EnergyReport per commune, one day, whole city": await timed(
                        max(10, args.calls // 10),
                        lambda: ops.EnergyReport(
                            control_pb2.EnergyReportRequest(since=day.isoformat(), by="commune")
                        ),
                    ),
                    "EnergyReport of one commune, per gateway": await timed(
                        args.calls,
                        lambda: ops.EnergyReport(
                            control_pb2.EnergyReportRequest(
                                since=day.isoformat(), by="gateway", commune=storm_commune
                            )
                        ),
                    ),
                    "ListGateways (the fleet, for comparison)": await timed(
                        max(10, args.calls // 10),
                        lambda: control.ListGateways(control_pb2.ListGatewaysRequest()),
                    ),
                    "peer: the fleet's reads one gateway at a time (ListGateways before)": (
                        await timed(3, one_at_a_time)
                    ),
                }
                for name, samples in figures.items():
                    print(
                        f"{name}: p50 {statistics.median(samples):.1f} ms, "
                        f"p99 {percentile(samples, 0.99):.1f} ms ({len(samples)} calls)"
                    )
        finally:
            await running.stop(0)


if __name__ == "__main__":
    asyncio.run(main())
