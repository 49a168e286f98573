"""The open data export: read the store, build every file (domain/opendata), publish.

:func:`read_inputs` is one read transaction over the register, the device states, the
desired schedules, energy and alarms; :func:`build` turns it into files in a worker
thread (the pure core, then the privacy gate); :func:`publish` writes them so that a
half-written export never replaces the last good one:

    OUT/exports/<UTC stamp>/...   each export in its own directory, fsynced
    OUT/current -> exports/<stamp>   a symbolic link, replaced atomically (os.replace)

Readers (a web server, re-users' scripts) read ``OUT/current/``; the previous export is
kept for whoever is reading it, older ones are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from domain import documents
from domain.city.inventory import Asset, AssetKind
from domain.energy import LampDay, summarise
from domain.opendata import datasets as ds
from domain.opendata.catalogue import Publisher, export_files
from domain.schedule.model import Schedule, Site
from domain.schedule.program import day_plan
from foundation.files import PUBLIC_FILE, CrashPoint, fsync_dir, fsync_tree, no_crash
from orchestrator.ingest.devices import latest
from orchestrator.store import assets as asset_sql
from orchestrator.store import energy as energy_sql
from orchestrator.store import public as public_sql
from orchestrator.store.database import Store
from protos.ondijon.v1 import link_pb2, schedule_pb2, state_pb2

log = logging.getLogger("ondijon.orchestrator.opendata")

Connection = Any
ZONE = "Europe/Paris"
WINDOW_DAYS = 31  # energy and outages: the last month, day by day
KEEP_EXPORTS = 2
_BOLLARD = {
    state_pb2.BOLLARD_MOTION_UP: "up",
    state_pb2.BOLLARD_MOTION_DOWN: "down",
    state_pb2.BOLLARD_MOTION_RISING: "moving",
    state_pb2.BOLLARD_MOTION_LOWERING: "moving",
}
_SIGNAL = {
    schedule_pb2.SIGNAL_MODE_NORMAL: "normal",
    schedule_pb2.SIGNAL_MODE_FLASHING_AMBER: "flashing",
    schedule_pb2.SIGNAL_MODE_DARK: "dark",
}


@dataclass
class Records:
    """What the store holds for an export, read in one transaction (decoded after it)."""

    register: list[Asset]
    gateways: dict[str, Any]
    device_logs: dict[str, bytes]
    schedule_payloads: dict[str, bytes]
    lamp_days: list[energy_sql.StoredDay]
    faults: list[public_sql.FaultRow]
    since: date
    today: date


def _window(now: datetime) -> tuple[date, date, datetime]:
    zone = ZoneInfo(ZONE)
    today = now.astimezone(zone).date()
    since = today - timedelta(days=WINDOW_DAYS)
    return since, today, datetime.combine(since, datetime.min.time(), zone)


def _gateway_rows(
    store: Store, conn: Connection, gateway_ids: list[str]
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    logs, payloads = {}, {}
    for gateway_id in gateway_ids:
        logs[gateway_id] = store.get_devices(conn, gateway_id)[0]
        for doc in store.documents_for(conn, gateway_id):
            if doc.kind == link_pb2.DOCUMENT_KIND_SCHEDULE:
                payloads[gateway_id] = doc.payload
    return logs, payloads


def read_records(store: Store, conn: Connection, now: datetime) -> Records:
    """Rows only, no decoding nor astronomy, in the caller's transaction."""
    since, today, start = _window(now)
    gateways = {g.gateway_id: g for g in store.list_gateways(conn)}
    logs, payloads = _gateway_rows(store, conn, list(gateways))
    return Records(
        register=list(asset_sql.load_register(conn).values()),
        gateways=gateways,
        device_logs=logs,
        schedule_payloads=payloads,
        lamp_days=energy_sql.select_days(conn, since, today - timedelta(days=1), communes=None),
        faults=public_sql.faults(conn, ds.LAMP_FAULTS, start),
        since=since,
        today=today,
    )


async def read_records_in_parts(runner: Any, now: datetime) -> Records:
    """The same rows in several short reads, each well within the store's deadline (a
    city's month of lamp-days is one read, its gateways' states 200 gateways a read). The
    parts may be seconds apart: open data is a daily picture, not a transaction."""
    store = runner.store
    since, today, start = _window(now)
    gateways = await runner.read(lambda c: {g.gateway_id: g for g in store.list_gateways(c)})
    ids = list(gateways)
    logs: dict[str, bytes] = {}
    payloads: dict[str, bytes] = {}
    for i in range(0, len(ids), 200):
        part = ids[i : i + 200]
        more_logs, more_payloads = await runner.read(lambda c, p=part: _gateway_rows(store, c, p))
        logs |= more_logs
        payloads |= more_payloads
    register = await runner.read(lambda c: list(asset_sql.load_register(c).values()))
    lamp_days = await runner.read(
        energy_sql.select_days, since, today - timedelta(days=1), communes=None
    )
    faults = await runner.read(public_sql.faults, ds.LAMP_FAULTS, start)
    return Records(register, gateways, logs, payloads, lamp_days, faults, since, today)


def read_inputs(store: Store, conn: Connection, now: datetime) -> ds.Inputs:
    """Everything an export needs (the command line's path: read and decode at once)."""
    return inputs_of(read_records(store, conn, now), now)


def inputs_of(records: Records, now: datetime) -> ds.Inputs:
    """Decode what was read: device states, schedules, tonight's programs."""
    register, gateways = records.register, records.gateways
    lamp_days, faults = records.lamp_days, records.faults
    since, today = records.since, records.today
    states = {g: {d.device_id: d for d in latest(log)} for g, log in records.device_logs.items()}
    schedules: dict[str, Schedule] = {}
    for gateway_id, payload in records.schedule_payloads.items():
        value = documents.parse(link_pb2.DOCUMENT_KIND_SCHEDULE, payload).value
        if isinstance(value, Schedule):
            schedules[gateway_id] = value
    open_faults = {(f.gateway_id, f.device_id) for f in faults if f.closed_at is None}

    lamps, cabinets, sites = [], [], []
    by_kind: dict[AssetKind, list[Asset]] = defaultdict(list)
    for a in register:
        by_kind[a.kind].append(a)
    lamp_count: dict[str, int] = defaultdict(int)
    for a in by_kind[AssetKind.LAMP]:
        lamp_count[a.gateway_id] += 1
        state = states.get(a.gateway_id, {}).get(a.device_id)
        lamp_state = state.lamp if state is not None and state.HasField("lamp") else None
        lamps.append(
            ds.Luminaire(
                asset_id=a.asset_id,
                cabinet_id=a.gateway_id,
                commune=a.commune,
                latitude=a.latitude,
                longitude=a.longitude,
                power_w=a.power_w,
                colour_temperature_k=a.colour_temperature_k,
                luminous_flux_lm=a.luminous_flux_lm,
                upward_light_ratio=a.upward_light_ratio,
                lantern_height_m=a.lantern_height_m,
                install_date=a.install_date,
                level=None if lamp_state is None else lamp_state.level,
                lit=None if lamp_state is None else lamp_state.lit,
                faulty=None
                if lamp_state is None
                else bool(lamp_state.faults) or (a.gateway_id, a.device_id) in open_faults,
            )
        )
    energy_by_gateway: dict[str, float] = defaultdict(float)
    first_day: dict[str, date] = {}
    for r in lamp_days:
        energy_by_gateway[r.gateway_id] += r.totals.wh / 1000.0
        first_day[r.gateway_id] = min(first_day.get(r.gateway_id, r.day), r.day)
    for a in by_kind[AssetKind.CABINET]:
        gateway_states = states.get(a.asset_id, {})
        lamp_states = [s.lamp for s in gateway_states.values() if s.HasField("lamp")]
        schedule = schedules.get(a.asset_id)
        cabinets.append(
            ds.CabinetRecord(
                cabinet_id=a.asset_id,
                commune=a.commune,
                latitude=a.latitude,
                longitude=a.longitude,
                lamps=lamp_count[a.asset_id],
                energy_kwh=energy_by_gateway[a.asset_id],
                metering_since=first_day.get(a.asset_id),
                active_power_w=sum(s.active_power_w for s in lamp_states if s.lit)
                if lamp_states
                else None,
                overridden=any(s.source.startswith("override:") for s in gateway_states.values()),
                astronomical=schedule is not None and _astronomical(schedule),
            )
        )
    for kind, category in (
        (AssetKind.BOLLARD_SITE, "bollardSite"),
        (AssetKind.CROSSING, "signalisedCrossing"),
    ):
        for a in by_kind[kind]:
            sites.append(_site(a, category, states.get(a.gateway_id, {}).get(a.device_id)))
    return ds.Inputs(
        lamps=lamps,
        cabinets=cabinets,
        programs=_programs(by_kind[AssetKind.CABINET], gateways, schedules, now),
        energy=_energy(
            lamp_days,
            {a.gateway_id + "/" + a.device_id: a.power_w for a in by_kind[AssetKind.LAMP]},
        ),
        faults=[
            ds.Fault(f.commune, f"{f.gateway_id}/{f.device_id}", f.first_at, f.closed_at)
            for f in faults
        ],
        sites=sites,
        outage_since=since,
        outage_until=today,
        zone=ZONE,
    )


def _astronomical(schedule: Schedule) -> bool:
    return any(p.sun_event is not None for prog in schedule.programs for p in prog.points)


def _site(a: Asset, category: str, state: state_pb2.DeviceState | None) -> ds.AccessSite:
    if state is None:
        return ds.AccessSite(a.asset_id, a.commune, a.latitude, a.longitude, category, a.name)
    observed = state.observed_at.ToDatetime(UTC) if state.HasField("observed_at") else None
    if state.HasField("bollard"):
        b = state.bollard
        fault = bool(b.faults) or b.motion == state_pb2.BOLLARD_MOTION_FAULT
        return ds.AccessSite(
            a.asset_id,
            a.commune,
            a.latitude,
            a.longitude,
            category,
            a.name,
            status="fault" if fault else "ok",
            bollard_position=_BOLLARD.get(b.motion),
            observed_at=observed,
        )
    if state.HasField("signal"):
        s = state.signal
        fault = bool(s.faults) or s.conflict_fault or not s.communication_ok
        return ds.AccessSite(
            a.asset_id,
            a.commune,
            a.latitude,
            a.longitude,
            category,
            a.name,
            status="unknown" if s.unconfirmed else ("fault" if fault else "ok"),
            signal_mode=_SIGNAL.get(s.mode),
            observed_at=observed,
        )
    return ds.AccessSite(a.asset_id, a.commune, a.latitude, a.longitude, category, a.name)


def tonight(now: datetime, zone: ZoneInfo) -> date:
    """The night a reader means by "tonight": before local noon, the one under way."""
    local = now.astimezone(zone)
    return local.date() - timedelta(days=1) if local.hour < 12 else local.date()


def night_points(
    schedule: Schedule, site: Site, night: date
) -> tuple[str | None, tuple[tuple[datetime, int], ...]]:
    """Tonight's program id and lamp level changes, from local noon to local noon."""
    zone = ZoneInfo(site.time_zone)
    noon = datetime.combine(night, datetime.min.time().replace(hour=12), zone)
    next_noon = datetime.combine(night + timedelta(days=1), noon.timetz(), zone)
    evening, morning = (
        day_plan(schedule, site, night),
        day_plan(schedule, site, night + timedelta(days=1)),
    )
    points = [
        (t.at, t.point.lamp_level)
        for t in (*evening.points, *morning.points)
        if noon <= t.at < next_noon and t.point.lamp_level is not None
    ]
    program = evening.program.id if evening.program is not None else None
    return program, tuple((at, int(level)) for at, level in points if level is not None)


def _programs(
    cabinets: list[Asset],
    gateways: dict[str, Any],
    schedules: dict[str, Schedule],
    now: datetime,
) -> list[ds.GroupProgram]:
    out = []
    for a in cabinets:
        schedule = schedules.get(a.asset_id)
        g = gateways.get(a.asset_id)
        time_zone = g.time_zone if g is not None else ZONE
        night = tonight(now, ZoneInfo(time_zone))
        points: tuple[tuple[datetime, int], ...] = ()
        program: str | None = None
        if schedule is None:
            pass
        else:
            # Sun times to ~1 km (a few seconds): cabinets of a district share one computation.
            site = Site(round(a.latitude, 2), round(a.longitude, 2), time_zone)
            program, points = night_points(schedule, site, night)
        out.append(
            ds.GroupProgram(
                a.asset_id, a.commune, a.latitude, a.longitude, night, program, points, time_zone
            )
        )
    return out


def _energy(rows: list[energy_sql.StoredDay], rated_w: dict[str, float]) -> list[ds.EnergyDay]:
    # A lamp's full power: its rating in the register, else the most it drew in the window.
    peak: dict[str, float] = defaultdict(float)
    for r in rows:
        key = f"{r.gateway_id}/{r.device_id}"
        peak[key] = max(peak[key], r.totals.peak_w)
    full = {k: rated_w.get(k) or v for k, v in peak.items()}
    groups: dict[tuple[str, date], list[tuple[str, LampDay]]] = defaultdict(list)
    for r in rows:
        groups[(r.commune, r.day)].append((f"{r.gateway_id}/{r.device_id}", r.totals))
    out = []
    for (commune, day), pairs in groups.items():
        s = summarise(pairs, full)
        out.append(ds.EnergyDay(commune, day, s.lamps, s.kwh, s.baseline_kwh, s.burning_hours))
    return out


@dataclass(frozen=True)
class Export:
    """One export: its files and when it was made."""

    files: dict[str, bytes]
    generated_at: datetime


async def build(runner: Any, publisher: Publisher, now: Callable[[], datetime]) -> Export:
    """Read the store (one transaction) and build every file in a worker thread."""
    at = now()
    records = await read_records_in_parts(runner, at)

    def make() -> dict[str, bytes]:
        return export_files(inputs_of(records, at), publisher, at)

    return Export(await asyncio.to_thread(make), at)


def build_sync(store: Store, publisher: Publisher, at: datetime) -> Export:
    """The same, for the command line (no event loop, no runner)."""
    with store.engine.connect() as conn:
        inputs = read_inputs(store, conn, at)
    return Export(export_files(inputs, publisher, at), at)


def publish(out: Path, export: Export, *, crash: CrashPoint = no_crash) -> Path:
    """Write ``export`` under ``out`` and make it current atomically; its directory.

    Crash points (tests cut power there): ``export:written`` (files fsynced, not current),
    ``export:linked`` (the new link made, not yet swapped in), ``export:current``.
    """
    out.mkdir(parents=True, exist_ok=True)
    exports = out / "exports"
    exports.mkdir(exist_ok=True)
    stamp = export.generated_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    staging = Path(tempfile.mkdtemp(prefix=f".{stamp}.", dir=exports))
    try:
        for name, data in export.files.items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PUBLIC_FILE)
            try:
                os.fchmod(fd, PUBLIC_FILE)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        for directory in (staging, *[p for p in staging.rglob("*") if p.is_dir()]):
            os.chmod(directory, 0o755)  # noqa: S103 (published files, for everyone to read)
        fsync_tree(staging)
        final = exports / stamp
        os.replace(staging, final)
        fsync_dir(exports)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    crash("export:written")
    link_tmp = out / f".current.{stamp}"
    with_suppress_unlink(link_tmp)
    os.symlink(Path("exports") / stamp, link_tmp)
    crash("export:linked")
    os.replace(link_tmp, out / "current")
    fsync_dir(out)
    crash("export:current")
    for stale in out.glob(".current.*"):  # links an export cut short left behind
        with_suppress_unlink(stale)
    _prune(exports, keep=final)
    return final


def with_suppress_unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _prune(exports: Path, keep: Path) -> None:
    """Keep the newest exports (the current one and the one before it), and remove the
    leftovers of an export cut short."""
    done = sorted(p for p in exports.iterdir() if not p.name.startswith("."))
    for old in done[:-KEEP_EXPORTS]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    for partial in exports.glob(".*"):
        shutil.rmtree(partial, ignore_errors=True)
