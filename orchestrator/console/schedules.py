"""The schedules screen: a gateway's schedule as the agent holds it (read back as
``ondijon desired get`` does), tonight's switch times at its position computed by the
agents' own engine, and for operators a new schedule put to the gateway
(``ondijon desired put``) or to a commune or the whole city (``ondijon group put``).

The document is written as JSON (protobuf field names). A refusal, the console's parse of
the JSON or the service's check, is shown beside the text with the field named, the text
kept, and nothing stored. A role that may not write is shown no form; a forged put goes to
the service, which refuses and audits it.
"""

from __future__ import annotations

import json
from datetime import UTC
from urllib.parse import urlencode

import grpc
from aiohttp import web
from google.protobuf import json_format

from domain import documents
from domain.schedule.errors import ScheduleEngineError
from domain.schedule.model import Schedule, Site
from domain.schedule.preview import Night, tonight
from foundation.errors import FieldError
from orchestrator.access.peers import Refused
from orchestrator.console.pages import csrf_field, e, local_time
from orchestrator.console.services import Host
from orchestrator.console.words import words
from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2

KIND = documents.kind_of(link_pb2.DOCUMENT_KIND_SCHEDULE)
MAX_TEXT = 200_000
TARGET = web.RequestKey("schedule_target", str)
EXAMPLE = {
    "programs": [
        {
            "id": "nuit",
            "points": [
                {"sun_event": "SUN_EVENT_SUNSET", "lamp_level": 100},
                {"local_time": "23:00", "lamp_level": 50},
                {"local_time": "05:30", "lamp_level": 100},
                {"sun_event": "SUN_EVENT_SUNRISE", "lamp_level": 0},
            ],
        }
    ],
    "rules": [{"program_id": "nuit", "priority": 1}],
}


def point_text(w: dict[str, str], p: schedule_pb2.SwitchPoint) -> tuple[str, str]:
    """When a switch point acts, and what it sets."""
    if p.WhichOneof("at") == "sun_event":
        event = w.get(schedule_pb2.SunEvent.Name(p.sun_event), str(p.sun_event))
        at = event if not p.offset_minutes else f"{event} {p.offset_minutes:+d} min"
    else:
        at = p.local_time
    sets = []
    if p.HasField("lamp_level"):
        sets.append(f"{w['lamps']} {p.lamp_level} %" if p.lamp_level else w["lamps_off"])
    if p.HasField("bollard") and p.bollard.ByteSize():
        sets.append(f"{w['bollards']}: {json_format.MessageToJson(p.bollard, indent=None)}")
    if p.signal_plan:
        sets.append(f"{w['signal_plan']} {p.signal_plan}")
    if p.signal_mode:
        sets.append(schedule_pb2.SignalMode.Name(p.signal_mode).removeprefix("SIGNAL_MODE_"))
    return at, ", ".join(sets) or "—"


def schedule_html(w: dict[str, str], message: schedule_pb2.Schedule) -> str:
    """The programs, their switch points and the calendar, in words."""
    parts = []
    for program in message.programs:
        rows = "".join(
            f"<tr><td>{e(at)}</td><td>{e(sets)}</td></tr>"
            for at, sets in (point_text(w, p) for p in program.points)
        )
        parts.append(
            f'<section class="program" data-program="{e(program.id)}">'
            f"<h4>{e(w['program'])} {e(program.id)}</h4>"
            f'<table><thead><tr><th scope="col">{e(w["switch_at"])}</th>'
            f'<th scope="col">{e(w["sets"])}</th></tr></thead><tbody>{rows}</tbody></table>'
            "</section>"
        )
    rules = []
    for r in message.rules:
        when = []
        if r.weekdays:
            when.append(
                ", ".join(
                    schedule_pb2.Weekday.Name(d).removeprefix("WEEKDAY_").lower()
                    for d in r.weekdays
                )
            )
        if r.day_kind:
            when.append(schedule_pb2.DayKind.Name(r.day_kind).removeprefix("DAY_KIND_").lower())
        if r.start_date or r.end_date:
            when.append(f"{r.start_date or '…'} → {r.end_date or '…'}")
        if r.dates:
            when.append(", ".join(r.dates))
        rules.append(
            f"<li>{e(w['program'])} {e(r.program_id)} ({e(w['priority'])} {r.priority}): "
            f"{e('; '.join(when) or w['every_day'])}</li>"
        )
    level = message.default_lamp_level or 100
    return (
        "".join(parts)
        + f'<h4>{e(w["calendar"])}</h4><ul class="rules">{"".join(rules)}</ul>'
        + f"<p>{e(w['default_level'])}: {level} %</p>"
    )


def night_html(w: dict[str, str], night: Night, zone: str) -> str:
    rows = "".join(
        f'<tr><td>{e(local_time(s.at, zone))}</td><td class="level">'
        f"{e(f'{s.level} %' if s.level else w['lamps_off'])}</td><td>{e(s.source)}</td></tr>"
        for s in night.switches
    )
    return (
        f'<table id="tonight"><caption>{e(w["tonight"])} ({e(zone)})</caption><thead><tr>'
        f'<th scope="col">{e(w["switch_at"])}</th><th scope="col">{e(w["lamps"])}</th>'
        f'<th scope="col">{e(w["decided_by"])}</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def document_form(
    w: dict[str, str], action: str, csrf: str, text: str, error: str, hidden: str = ""
) -> str:
    described = ' aria-describedby="document-error" aria-invalid="true"' if error else ""
    shown = f'<p class="error" id="document-error" role="alert">{e(error)}</p>' if error else ""
    return (
        f'<form method="post" action="{e(action)}" class="schedule-form">{csrf_field(csrf)}'
        f'{hidden}<label for="document">{e(w["schedule_json"])}</label>{shown}'
        f'<textarea id="document" name="document" rows="16" cols="80"{described}>{e(text)}'
        f'</textarea><p><button type="submit" name="do" value="preview">{e(w["preview"])}'
        f'</button> <button type="submit" name="do" value="put" id="put-schedule">'
        f"{e(w['put_schedule'])}</button></p></form>"
    )


class ScheduleScreen:
    def __init__(self, console: Host) -> None:
        self.console = console

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/schedules", self.index)
        router.add_post("/schedules/group", self.put_group)
        router.add_get("/schedules/{gateway_id}", self.gateway)
        router.add_post("/schedules/{gateway_id}", self.put_gateway)

    async def index(
        self, request: web.Request, text: str = "", error: str = "", status: int = 200
    ) -> web.Response:
        c = self.console
        caller = await c.caller(request)
        w = words(c.lang(request))
        wanted = request.query.get("gateway", "").strip()[:64]
        if wanted:
            raise web.HTTPSeeOther(f"/schedules/{wanted}")
        communes = sorted({commune for commune in caller.operator.communes if commune != "*"})
        notice = ""
        if request.query.get("changed"):
            notice = (
                f'<p class="notice" role="status" id="put-result">'
                f"{e(w['group_put_done'])}: {e(request.query.get('target', ''))} — "
                f"{e(request.query['changed'])} {e(w['gateways_changed'])} / "
                f"{e(request.query.get('covered', ''))} {e(w['gateways_covered'])}</p>"
            )
        body = (
            f"<h2>{e(w['schedules'])}</h2>{notice}"
            f'<form method="get" action="/schedules" class="filters">'
            f'<label for="gateway">{e(w["gateway"])}</label> '
            f'<input id="gateway" name="gateway" required maxlength="64"> '
            f'<button type="submit">{e(w["open"])}</button></form>'
        )
        if c.may_write(caller):
            if "*" in caller.operator.communes:
                targets = f'<option value="city">{e(w["whole_city"])}</option>'
                fleet = await c.services.city.ListFleet(
                    control_pb2.ListFleetRequest(page_size=1000), c.call(request)
                )
                communes = sorted({g.commune for g in fleet.gateways} | set(communes))
            else:
                targets = ""
            targets += "".join(f'<option value="commune:{e(n)}">{e(n)}</option>' for n in communes)
            chosen = request.get(TARGET, "")
            if chosen:
                targets = targets.replace(f'value="{e(chosen)}"', f'value="{e(chosen)}" selected')
            picker = (
                f'<label for="target">{e(w["send_to"])}</label> '
                f'<select id="target" name="target">{targets}</select>'
            )
            body += f"<h3>{e(w['group_put'])}</h3>" + document_form(
                w,
                "/schedules/group",
                c.csrf(request),
                text or json.dumps(EXAMPLE, indent=2, ensure_ascii=False),
                error,
                picker,
            )
        else:
            body += f'<p class="read-only">{e(w["read_only"])}</p>'
        return c.page(request, w["schedules"], body, status=status)

    async def gateway(
        self,
        request: web.Request,
        text: str | None = None,
        error: str = "",
        preview: Schedule | None = None,
        status: int = 200,
    ) -> web.Response:
        c = self.console
        caller = await c.caller(request)
        w = words(c.lang(request))
        gateway_id = request.match_info["gateway_id"]
        call = c.call(request)
        gateway = (
            await c.services.control.GetGateway(
                control_pb2.GetGatewayRequest(gateway_id=gateway_id), call
            )
        ).gateway
        held: link_pb2.DesiredDocument | None = None
        schedule: Schedule | None = None
        message = schedule_pb2.Schedule()
        try:
            held = (
                await c.services.control.GetDesiredState(
                    control_pb2.GetDesiredStateRequest(gateway_id=gateway_id, kind=KIND.number),
                    call,
                )
            ).document
        except Refused as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
        if held is not None:
            message = documents.message_of(KIND, held.payload)  # type: ignore[assignment]
            schedule = documents.parse(KIND.number, held.payload).value  # type: ignore[assignment]
        zone = gateway.time_zone or "Europe/Paris"
        try:
            site = Site(gateway.latitude, gateway.longitude, zone)
        except ScheduleEngineError:
            site = None
        if held is not None:
            issued = held.issued_at.ToDatetime(tzinfo=UTC) if held.HasField("issued_at") else None
            current = (
                f'<p id="held-version" data-version="{held.version}">{e(w["version"])} '
                f"{held.version} · {e(local_time(issued, zone))}</p>{schedule_html(w, message)}"
            )
        else:
            current = f'<p id="held-version" data-version="0">{e(w["no_schedule"])}</p>'
        nights = ""
        if site is not None:
            now = c.clock.now()
            nights = night_html(w, tonight(schedule, site, now), zone)
            if preview is not None:
                nights += night_html(
                    {**w, "tonight": w["tonight_preview"]}, tonight(preview, site, now), zone
                ).replace('id="tonight"', 'id="tonight-preview"')
        form = ""
        if c.may_write(caller):
            shown = text
            if shown is None:
                shown = json.dumps(
                    json_format.MessageToDict(message, preserving_proto_field_name=True)
                    if held is not None
                    else EXAMPLE,
                    indent=2,
                    ensure_ascii=False,
                )
            version = held.version if held is not None else 0
            form = f"<h3>{e(w['put_schedule'])}</h3>" + document_form(
                w,
                f"/schedules/{gateway_id}",
                c.csrf(request),
                shown,
                error,
                f'<input type="hidden" name="expected_version" value="{version}">',
            )
        notice = ""
        if request.query.get("put"):
            notice = (
                f'<p class="notice" role="status" id="put-result">{e(w["schedule_put"])} '
                f"{e(request.query['put'])}</p>"
            )
        body = (
            f'<h2>{e(w["schedules"])} — <a href="/gateways/{e(gateway_id)}">{e(gateway_id)}</a>'
            f" ({e(gateway.commune)})</h2>{notice}{current}{nights}{form}"
        )
        return c.page(request, f"{w['schedules']} {gateway_id}", body, status=status)

    async def _payload(self, request: web.Request) -> tuple[str, bytes | None, str, bool]:
        """The text sent, its payload (None: refused here), the refusal, and whether only
        a preview was asked."""
        form = await request.post()
        text = str(form.get("document", ""))
        if len(text) > MAX_TEXT:
            return text[:MAX_TEXT], None, f"document: longer than {MAX_TEXT} characters", False
        try:
            return (
                text,
                documents.payload_from_json(KIND, text, source="document"),
                "",
                (form.get("do") == "preview"),
            )
        except FieldError as exc:
            return text, None, str(exc), False

    async def put_gateway(self, request: web.Request) -> web.StreamResponse:
        c = self.console
        caller = await c.caller(request)
        gateway_id = request.match_info["gateway_id"]
        form = await request.post()
        text, payload, error, preview = await self._payload(request)
        try:
            expected = int(str(form.get("expected_version", "0")) or 0)
        except ValueError:
            expected = 0
        if not c.may_write(caller):
            payload, preview = payload or b"", False  # the service refuses and audits it
        if payload is None:
            return await self.gateway(request, text, error, status=400)
        if preview:
            try:
                value = documents.parse(KIND.number, payload).value
            except (FieldError, ValueError) as exc:
                return await self.gateway(request, text, str(exc), status=400)
            return await self.gateway(request, text, preview=value)  # type: ignore[arg-type]
        try:
            put = await c.services.control.PutDesiredState(
                control_pb2.PutDesiredStateRequest(
                    gateway_id=gateway_id,
                    kind=KIND.number,
                    payload=payload,
                    expected_version=expected,
                ),
                c.call(request),
            )
        except Refused as exc:
            if exc.code not in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION,
            ):
                raise
            return await self.gateway(request, text, exc.message, status=400)
        raise web.HTTPSeeOther(f"/schedules/{gateway_id}?put={put.document.version}")

    async def put_group(self, request: web.Request) -> web.StreamResponse:
        c = self.console
        caller = await c.caller(request)
        form = await request.post()
        chosen = str(form.get("target", ""))
        request[TARGET] = chosen
        text, payload, error, _ = await self._payload(request)
        target = control_pb2.Target()
        if chosen == "city":
            target.city = True
        elif chosen.startswith("commune:"):
            target.commune = chosen.removeprefix("commune:")
        elif c.may_write(caller):
            return await self.index(request, text, "target: choose the city or a commune", 400)
        if not c.may_write(caller):
            payload = payload or b""  # the service refuses and audits it
        if payload is None:
            return await self.index(request, text, error, 400)
        try:
            put = await c.services.city.PutGroupDocument(
                control_pb2.PutGroupDocumentRequest(
                    target=target, kind=KIND.number, payload=payload
                ),
                c.call(request),
            )
        except Refused as exc:
            if exc.code != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            return await self.index(request, text, exc.message, 400)
        where = "city" if target.city else target.commune
        query = urlencode(
            {"target": where, "changed": put.gateways_changed, "covered": put.gateways_covered}
        )
        raise web.HTTPSeeOther(f"/schedules?{query}")
