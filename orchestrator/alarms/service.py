"""The alarm service: the thin shell around :mod:`domain.alarms`.

- :meth:`AlarmService.on_events` runs inside the transaction that stores a gateway's
  events (the ingest hook): each event the core classifies becomes an occurrence applied
  to the open alarm of its key. An event is never stored without its alarm, and a replayed
  batch (already stored) reaches no hook, so nothing is counted twice.
- :meth:`AlarmService.sweep` runs every few seconds: a gateway silent for longer than
  ``silent_after`` (no stream on any replica, last seen before) raises ``gateway.silent``,
  cleared when it is back; unacknowledged alarms past ``reminder_delay`` get a reminder.
- operators' actions (acknowledge, shelve, assign, close) are one read-modify-write each.

Flood control: an alarm of a grouped type (a lamp's failure) opened while its gateway has
an open root cause (mains lost, silent) is stored under it; a root cause opening groups the
gateway's open lamp alarms; a root cause that closes lets what is still open stand alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from domain import alarms as core
from domain.alarms import GATEWAY_SILENT, ROOT_TYPES, Alarm, Occurrence
from orchestrator.store import alarms as sql
from orchestrator.store.database import NewEvent, NotFound, Store
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import link_pb2

log = logging.getLogger("ondijon.orchestrator.alarms")

Connection = Any  # sqlalchemy.Connection, kept out of this layer's imports


@dataclass(frozen=True)
class AlarmSettings:
    """Delays of the alarm service."""

    # A gateway with no stream for this long (and not seen since) raises gateway.silent.
    silent_after: timedelta = timedelta(minutes=5)
    # An alarm unacknowledged this long is reminded, and again every such delay.
    reminder_delay: timedelta = timedelta(minutes=15)
    # How often the sweep runs.
    sweep_s: float = 10.0


def occurrences(gateway_id: str, events: Sequence[NewEvent]) -> list[Occurrence]:
    """What a batch of stored events means for alarms."""
    found: list[Occurrence] = []
    for e in events:
        if e.priority == link_pb2.EVENT_PRIORITY_METERING:
            continue  # the bulk: never an alarm (no decode)
        event = link_pb2.Event.FromString(e.payload)
        for alarm_type, raised in core.classify(e.type, e.priority, event.attributes):
            found.append(
                Occurrence(gateway_id, e.device_id, alarm_type, raised, e.at, event.message[:1024])
            )
    return found


@dataclass
class _New:
    """An alarm opened by this batch, inserted with the others at the next flush."""

    alarm: Alarm
    id: int | None = None


def apply(
    conn: Connection,
    commune: str,
    found: Sequence[Occurrence],
    now: datetime,
) -> list[int]:
    """Apply occurrences of one gateway in order; the ids of the alarms written.

    Rows are written in as few statements as the order allows: new alarms with one
    ``INSERT ... RETURNING``, changed ones with one ``executemany``, both flushed before
    any statement that reads or groups them (a root cause opening or closing, the lookup
    of a gateway's root cause) and at the end.
    """
    if not found:
        return []
    current = sql.open_alarms(conn, [(o.gateway_id, o.device_id, o.type) for o in found])
    ids: dict[tuple[str, str, str], int | _New] = {k: s.id for k, s in current.items()}
    state: dict[tuple[str, str, str], Alarm] = {k: s.alarm for k, s in current.items()}
    roots: dict[str, int | None] = {}
    written: list[int | _New] = []
    inserts: list[_New] = []
    updates: dict[int, Alarm] = {}

    def flush() -> None:
        new = sql.insert_many(conn, [n.alarm for n in inserts], commune=commune, now=now)
        for n, alarm_id in zip(inserts, new, strict=True):
            n.id = alarm_id
        inserts.clear()
        sql.update_many(conn, updates, commune=commune, now=now)
        updates.clear()

    for occ in sorted(found, key=lambda o: o.at):
        key = (occ.gateway_id, occ.device_id, occ.type)
        before = state.get(key)
        after = core.on_occurrence(before, occ)
        if after is None or after == before:
            continue
        target = ids.get(key) if before is not None and before.open else None
        if target is None and core.groups_under(after.type):
            if occ.gateway_id not in roots:
                flush()
                roots[occ.gateway_id] = sql.open_root(conn, occ.gateway_id, ROOT_TYPES)
            root = roots[occ.gateway_id]
            if root is not None:
                after = _with_root(after, root)
        if target is None:
            target = _New(after)
            inserts.append(target)
        elif isinstance(target, int):
            updates[target] = after
        elif target.id is None:
            target.alarm = after  # not inserted yet: inserted as it is now
        else:
            updates[target.id] = after
        written.append(target)
        if after.open:
            ids[key], state[key] = target, after
        else:
            ids.pop(key, None)
            state.pop(key, None)
        if core.is_root_type(after.type):
            roots.pop(occ.gateway_id, None)
            flush()
            root_id = target if isinstance(target, int) else target.id
            assert root_id is not None
            if before is None or not before.open:
                sql.group(conn, occ.gateway_id, root_id, core.GROUPED_TYPES, now)
            elif not after.open:
                sql.ungroup(conn, root_id, now)
    flush()
    return [w if isinstance(w, int) else _inserted(w) for w in written]


def _inserted(new: _New) -> int:
    assert new.id is not None  # flushed
    return new.id


def _with_root(alarm: Alarm, root: int) -> Alarm:
    from dataclasses import replace

    return replace(alarm, root_id=root)


class AlarmService:
    """Alarms of this orchestrator: the ingest hook, the sweep and operators' actions."""

    def __init__(
        self,
        runner: StoreRunner,
        now: Callable[[], datetime],
        settings: AlarmSettings | None = None,
        *,
        live_since: Callable[[], datetime] | None = None,
    ) -> None:
        self.runner = runner
        self.now = now
        self.settings = settings or AlarmSettings()
        self.live_since = live_since

    @property
    def store(self) -> Store:
        return self.runner.store

    # -- the ingest hook (inside the events' transaction) ---------------------------------

    def on_events(
        self, conn: Connection, gateway_id: str, events: Sequence[NewEvent], now: datetime
    ) -> None:
        found = occurrences(gateway_id, events)
        if not found:
            return
        try:
            commune = self.store.get_gateway(conn, gateway_id).commune
        except NotFound:
            commune = ""
        apply(conn, commune, found, now)

    # -- the sweep -------------------------------------------------------------------------

    async def run(self) -> None:
        """Sweep forever (owned by the server's task set)."""
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alarm sweep failed; trying again")
            await asyncio.sleep(self.settings.sweep_s)

    async def sweep(self) -> tuple[int, int]:
        """Raise or clear ``gateway.silent`` and send reminders; (silent changes, reminders)."""
        now = self.now()
        live_since = self.live_since() if self.live_since else now - timedelta(seconds=30)
        settings = self.settings
        store = self.store

        def silent(conn: Connection) -> int:
            quiet = store.quiet_gateways(
                conn, last_seen_before=now - settings.silent_after, live_since=live_since
            )
            open_silent = {s.alarm.gateway_id: s for s in sql.open_of_type(conn, GATEWAY_SILENT)}
            found: list[tuple[str, str, Occurrence]] = []
            for gateway_id, commune in quiet.items():
                was = open_silent.get(gateway_id)
                if was is None or not was.alarm.active:
                    g = store.get_gateway(conn, gateway_id)
                    message = f"no link since {g.last_seen:%Y-%m-%d %H:%M:%S} UTC"
                    occ = Occurrence(gateway_id, "", GATEWAY_SILENT, True, now, message)
                    found.append((gateway_id, commune, occ))
            for gateway_id, was in open_silent.items():
                if was.alarm.active and gateway_id not in quiet:
                    try:
                        g = store.get_gateway(conn, gateway_id)
                    except NotFound:
                        continue  # no longer registered: its alarm stays as it was
                    if g.enrolled_at is not None:
                        occ = Occurrence(gateway_id, "", GATEWAY_SILENT, False, now, "link back")
                        found.append((gateway_id, g.commune, occ))
            return sum(len(apply(conn, commune, [occ], now)) for _, commune, occ in sorted(found))

        def remind(conn: Connection) -> int:
            due = sql.awaiting_reminder(conn, now - settings.reminder_delay)
            count = 0
            for stored in due:
                if core.reminder_due(stored.alarm, now, settings.reminder_delay):
                    reminded = core.remind(stored.alarm, now)
                    sql.save(conn, stored.id, reminded, commune=stored.commune, now=now)
                    count += 1
            return count

        changes = await self.runner.write(silent)
        reminders = await self.runner.write(remind)
        return changes, reminders

    # -- operators' actions ----------------------------------------------------------------

    async def act(
        self, alarm_id: int, action: Callable[[Alarm, datetime], Alarm]
    ) -> sql.StoredAlarm | None:
        """Apply ``action`` to the alarm (None if there is no such alarm); raises the core's
        :class:`domain.alarms.AlarmError`, and then nothing is written."""
        now = self.now()

        def write(conn: Connection) -> sql.StoredAlarm | None:
            stored = sql.get(conn, alarm_id)
            if stored is None:
                return None
            after = action(stored.alarm, now)
            sql.save(conn, alarm_id, after, commune=stored.commune, now=now)
            if core.is_root_type(after.type) and not after.open:
                sql.ungroup(conn, alarm_id, now)
            return sql.get(conn, alarm_id)

        return await self.runner.write(write)

    async def find(self, alarm_id: int) -> sql.StoredAlarm | None:
        return await self.runner.read(sql.get, alarm_id)

    async def page(self, query: sql.AlarmQuery) -> list[sql.StoredAlarm]:
        return await self.runner.read(sql.select, query)

    async def changed_since(
        self, since: datetime, communes: Sequence[str] | None
    ) -> list[sql.StoredAlarm]:
        return await self.runner.read(sql.changed_since, since, communes)
