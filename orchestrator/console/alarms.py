"""The alarms screen: open alarms under their root causes, filtered by commune, type,
severity and state, kept live from the admin API's alarm feed; acknowledge with a comment,
shelve until a time, assign to a crew, close with a repair note.

Every read and action is the Operations service's (roles, communes, validation, audit);
a role that may not act is shown no control, and a forged action is refused by the
service, which audits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import grpc
from aiohttp import web

from orchestrator.access.peers import Refused
from orchestrator.console.pages import csrf_field, e, local_time
from orchestrator.console.services import Host
from orchestrator.console.words import words
from protos.ondijon.v1 import control_pb2

SITE_ZONE = ZoneInfo("Europe/Paris")
SEVERITY = {1: "warning", 2: "minor", 3: "major", 4: "critical"}
STATES = ("open", "unacknowledged", "acknowledged", "cleared", "shelved", "closed", "all")
ACTIONS = ("acknowledge", "shelve", "assign", "close")
HEARTBEAT_S = 15.0
MAX_COUNT = 1000


@dataclass(frozen=True)
class Filters:
    commune: str = ""
    type: str = ""
    min_severity: int = 0
    state: str = "open"

    @classmethod
    def of(cls, query: Any) -> Filters:
        try:
            severity = int(query.get("severity", "0") or 0)
        except ValueError:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT, "severity: a whole number from 0 to 4"
            ) from None
        state = query.get("state", "open") or "open"
        if state not in STATES:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"state: one of {', '.join(STATES)}")
        return cls(
            commune=query.get("commune", "")[:128],
            type=query.get("type", "")[:128],
            min_severity=severity,
            state=state,
        )

    def request(self, **more: Any) -> control_pb2.ListAlarmsRequest:
        return control_pb2.ListAlarmsRequest(
            commune=self.commune,
            type=self.type,
            min_severity=self.min_severity,
            state=self.state,
            **more,
        )

    def matches(self, a: control_pb2.AlarmRecord) -> bool:
        """Whether a changed alarm belongs in this view (the same rules as ListAlarms)."""
        if self.commune and a.commune != self.commune:
            return False
        if self.type and a.type != self.type:
            return False
        if a.severity < self.min_severity:
            return False
        if self.state == "all":
            return True
        if self.state == "closed":
            return a.state == "closed"
        if self.state == "open":
            return a.state not in ("closed", "shelved")
        return a.state == self.state


def alarm_row(
    w: dict[str, str], a: control_pb2.AlarmRecord, *, may_write: bool, csrf: str, child: bool
) -> str:
    """One alarm as a table row (and its actions, for a role that may act)."""
    first = a.first_at.ToDatetime(tzinfo=UTC)
    severity = SEVERITY.get(a.severity, str(a.severity))
    where = a.gateway_id + (f" / {a.device_id}" if a.device_id else "")
    notes = [a.message]
    if a.comment:
        notes.append(f"{w['comment']}: {a.comment}")
    if a.assigned_to:
        notes.append(f"{w['crew']}: {a.assigned_to}")
    if a.HasField("shelved_until"):
        until = local_time(a.shelved_until.ToDatetime(tzinfo=UTC), "Europe/Paris")
        notes.append(f"{w['shelved_until']} {until}")
    if a.repair_note:
        notes.append(f"{w['repair_note']}: {a.repair_note}")
    grouped = f' <span class="grouped">+{a.grouped} {e(w["grouped"])}</span>' if a.grouped else ""
    actions = alarm_actions(w, a, csrf) if may_write and a.state != "closed" else ""
    css = f"severity-{severity} state-{a.state}" + (" child" if child else "")
    return (
        f'<tr data-alarm="{a.alarm_id}" data-root="{a.root_id}" class="{css}">'
        f"<td>{a.alarm_id}</td>"
        f'<td><span class="sev">{e(w.get("sev_" + severity, severity))}</span></td>'
        f"<td>{'↳ ' if child else ''}{e(a.type)}{grouped}</td>"
        f'<td><a href="/gateways/{e(a.gateway_id)}">{e(where)}</a></td>'
        f"<td>{e(a.commune)}</td>"
        f'<td class="alarm-state">{e(w.get("st_" + a.state, a.state))}</td>'
        f"<td><time>{e(local_time(first, 'Europe/Paris'))}</time> ({a.count})</td>"
        f"<td>{e(' · '.join(n for n in notes if n))}</td><td>{actions}</td></tr>"
    )


def alarm_actions(w: dict[str, str], a: control_pb2.AlarmRecord, csrf: str) -> str:
    base = f"/alarms/{a.alarm_id}"
    n = a.alarm_id

    def form(act: str, field: str) -> str:
        return (
            f'<form method="post" action="{base}/{act}" class="alarm-action {act}">'
            f"{csrf_field(csrf)}{field}"
            f'<button type="submit">{e(w["alarm_" + act])}</button></form>'
        )

    forms = []
    if not a.acknowledged:
        forms.append(
            form(
                "acknowledge",
                f'<label for="ack-{n}">{e(w["comment"])}</label>'
                f'<input id="ack-{n}" name="text" maxlength="500">',
            )
        )
    forms.append(
        form(
            "shelve",
            f'<label for="shelve-{n}">{e(w["shelved_until"])}</label>'
            f'<input id="shelve-{n}" name="until" type="datetime-local" required>',
        )
    )
    forms.append(
        form(
            "assign",
            f'<label for="crew-{n}">{e(w["crew"])}</label>'
            f'<input id="crew-{n}" name="crew" maxlength="64" required>',
        )
    )
    forms.append(
        form(
            "close",
            f'<label for="note-{n}">{e(w["repair_note"])}</label>'
            f'<input id="note-{n}" name="text" maxlength="500" required>',
        )
    )
    return f"<details><summary>{e(w['act'])}</summary>{''.join(forms)}</details>"


def filters_form(w: dict[str, str], f: Filters) -> str:
    severities = "".join(
        f'<option value="{n}"{" selected" if f.min_severity == n else ""}>'
        f"{e(w['any'] if n == 0 else w['sev_' + SEVERITY[n]])}</option>"
        for n in range(5)
    )
    states = "".join(
        f'<option value="{s}"{" selected" if f.state == s else ""}>{e(w["st_" + s])}</option>'
        for s in STATES
    )
    return (
        '<form method="get" action="/alarms" class="filters">'
        f'<label for="f-commune">{e(w["commune"])}</label>'
        f'<input id="f-commune" name="commune" value="{e(f.commune)}">'
        f'<label for="f-type">{e(w["kind"])}</label>'
        f'<input id="f-type" name="type" value="{e(f.type)}">'
        f'<label for="f-severity">{e(w["severity"])}</label>'
        f'<select id="f-severity" name="severity">{severities}</select>'
        f'<label for="f-state">{e(w["state"])}</label>'
        f'<select id="f-state" name="state">{states}</select>'
        f'<button type="submit">{e(w["filter"])}</button></form>'
    )


class AlarmScreen:
    """The alarms screen's handlers, on the console's services."""

    def __init__(self, console: Host) -> None:
        self.console = console

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/alarms", self.page)
        router.add_get("/alarms/count.json", self.count)
        router.add_get("/live/alarms", self.live)
        router.add_post("/alarms/{alarm_id}/{act}", self.act)

    async def rows(self, request: web.Request, f: Filters, *, may_write: bool) -> tuple[str, int]:
        """The table's rows: each root cause, then the alarms grouped under it."""
        c = self.console
        call, api = c.call(request), c.services.operations
        w = words(c.lang(request))
        csrf = c.csrf(request)
        listed = await api.ListAlarms(f.request(limit=200), call)
        rows = []
        for a in listed.alarms:
            rows.append(alarm_row(w, a, may_write=may_write, csrf=csrf, child=False))
            if a.grouped:
                under = await api.ListAlarms(
                    control_pb2.ListAlarmsRequest(
                        root_id=a.alarm_id, include_grouped=True, state="all", limit=100
                    ),
                    call,
                )
                rows.extend(
                    alarm_row(w, child, may_write=may_write, csrf=csrf, child=True)
                    for child in under.alarms
                    if child.alarm_id != a.alarm_id
                )
        return "".join(rows), len(listed.alarms)

    async def page(self, request: web.Request) -> web.StreamResponse:
        c = self.console
        caller = await c.caller(request)
        f = Filters.of(request.query)
        may_write = c.may_write(caller)
        rows, shown = await self.rows(request, f, may_write=may_write)
        w = words(c.lang(request))
        head = (
            "".join(
                f'<th scope="col">{e(w[k])}</th>'
                for k in ("id", "severity", "kind", "where", "commune", "state", "since", "notes")
            )
            + f'<th scope="col">{e(w["actions"]) if may_write else ""}</th>'
        )
        read_only = "" if may_write else f'<p class="read-only">{e(w["read_only"])}</p>'
        body = (
            f"<h2>{e(w['alarms'])} <small>({shown})</small></h2>{read_only}"
            f"{filters_form(w, f)}"
            f'<table id="alarms" data-may-write="{"yes" if may_write else "no"}">'
            f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        )
        query = request.query_string
        return c.page(
            request, w["alarms"], body, live="/live/alarms" + (f"?{query}" if query else "")
        )

    async def count(self, request: web.Request) -> web.StreamResponse:
        """How many alarms wait for an acknowledgement (shown on every page)."""
        listed = await self.console.services.operations.ListAlarms(
            control_pb2.ListAlarmsRequest(state="unacknowledged", limit=MAX_COUNT),
            self.console.call(request),
        )
        return web.json_response({"unacknowledged": len(listed.alarms), "max": MAX_COUNT})

    async def act(self, request: web.Request) -> web.StreamResponse:
        c = self.console
        act = request.match_info["act"]
        if act not in ACTIONS:
            raise web.HTTPNotFound()
        try:
            alarm_id = int(request.match_info["alarm_id"])
        except ValueError:
            raise web.HTTPNotFound() from None
        form = await request.post()
        text = str(form.get("text", ""))[:500]
        api, call = c.services.operations, c.call(request)
        if act == "acknowledge":
            await api.AcknowledgeAlarm(
                control_pb2.AcknowledgeAlarmRequest(alarm_id=alarm_id, text=text), call
            )
        elif act == "shelve":
            shelve = control_pb2.ShelveAlarmRequest(alarm_id=alarm_id)
            shelve.until.FromDatetime(shelve_until(str(form.get("until", ""))))
            await api.ShelveAlarm(shelve, call)
        elif act == "assign":
            crew = str(form.get("crew", ""))[:64]
            await api.AssignAlarm(
                control_pb2.AssignAlarmRequest(alarm_id=alarm_id, crew=crew), call
            )
        else:
            await api.CloseAlarm(control_pb2.CloseAlarmRequest(alarm_id=alarm_id, text=text), call)
        raise web.HTTPSeeOther("/alarms")

    async def live(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: each change of an alarm in view, as the row to show (or an
        empty row: the alarm leaves the view)."""
        c = self.console
        caller = await c.caller(request)
        f = Filters.of(request.query)
        may_write, csrf = c.may_write(caller), c.csrf(request)
        w = words(c.lang(request))
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(1000)

        async def pump() -> None:
            feed = c.services.operations.WatchAlarms(
                control_pb2.WatchAlarmsRequest(commune=f.commune), c.call(request)
            )
            async with contextlib.aclosing(feed) as changes:  # type: ignore[type-var]
                async for change in changes:
                    a = change.alarm
                    html = ""
                    if f.matches(a):
                        html = alarm_row(
                            w, a, may_write=may_write, csrf=csrf, child=bool(a.root_id)
                        )
                    with contextlib.suppress(asyncio.QueueFull):
                        queue.put_nowait(
                            {"id": a.alarm_id, "root": a.root_id, "state": a.state, "html": html}
                        )

        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        task = asyncio.create_task(pump(), name="console-live-alarms")
        try:
            await response.write(b": live\n\n")
            while not task.done():
                try:
                    data = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
                payload = json.dumps(data, ensure_ascii=True)
                await response.write(f"event: alarm\ndata: {payload}\n\n".encode())
        except ConnectionResetError:
            pass
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return response


def shelve_until(value: str) -> datetime:
    """A ``datetime-local`` field, read in the site's zone."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise Refused(
            grpc.StatusCode.INVALID_ARGUMENT, "until: a date and time (YYYY-MM-DDTHH:MM)"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=SITE_ZONE)
    return at.astimezone(UTC)
