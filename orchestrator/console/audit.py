"""The audit log screen: the entries the admin API's ListAudit gives the signed-in
operator (admins, within their communes), filtered by actor, action and time (the site's
zone), a page at a time. Every text is escaped; the service refuses anyone else."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import grpc
from aiohttp import web

from orchestrator.access.peers import Refused
from orchestrator.console.pages import e, local_time
from orchestrator.console.services import Host
from orchestrator.console.words import words
from protos.ondijon.v1 import control_pb2

PAGE = 50
ZONE = "Europe/Paris"


def instant(text: str, field: str) -> datetime | None:
    """A ``datetime-local`` value, read in the site's zone; Refused naming the field."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(ZONE)).astimezone(UTC)
    except ValueError:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: not a date and time") from None


class AuditScreen:
    def __init__(self, console: Host) -> None:
        self.console = console

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/audit", self.page)

    async def page(self, request: web.Request) -> web.StreamResponse:
        c = self.console
        await c.caller(request)
        w = words(c.lang(request))
        q = request.query
        filters = {k: q.get(k, "")[:128] for k in ("actor", "action", "since", "until")}
        try:
            after = int(q.get("after", "0") or 0)
        except ValueError:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "after: not an entry id") from None
        asked = control_pb2.ListAuditRequest(
            actor=filters["actor"], action=filters["action"], after_id=after, limit=PAGE
        )
        since = instant(filters["since"], "since")
        until = instant(filters["until"], "until")
        if since:
            asked.since.FromDatetime(since)
        if until:
            asked.until.FromDatetime(until)
        listed = await c.services.control.ListAudit(asked, c.call(request))
        rows = "".join(
            f'<tr data-entry="{x.id}"><td>{e(local_time(x.at.ToDatetime(tzinfo=UTC), ZONE))}</td>'
            f"<td>{e(x.actor)}</td><td>{e(x.action)}</td><td>{e(x.target)}</td>"
            f"<td>{e(x.commune or '—')}</td>"
            f'<td class="result-{e(x.result)}">{e(x.result)}</td><td>{e(x.detail)}</td></tr>'
            for x in listed.entries
        )
        inputs = "".join(
            f'<label for="f-{k}">{e(w[label])}</label> '
            f'<input id="f-{k}" name="{k}" type="{kind}" value="{e(filters[k])}"> '
            for k, label, kind in (
                ("actor", "actor", "text"),
                ("action", "audit_action", "text"),
                ("since", "since", "datetime-local"),
                ("until", "until", "datetime-local"),
            )
        )
        head = "".join(
            f'<th scope="col">{e(w[k])}</th>'
            for k in ("at", "actor", "audit_action", "target_col", "commune", "result", "detail")
        )
        paging = ""
        kept = {k: v for k, v in filters.items() if v}
        if after:
            paging += f'<a href="/audit?{e(urlencode(kept))}">{e(w["first_page"])}</a> '
        if len(listed.entries) == PAGE:
            more = urlencode(kept | {"after": listed.next_after_id})
            paging += f'<a href="/audit?{e(more)}" id="next-page">{e(w["next_page"])}</a>'
        empty = "" if listed.entries else f"<p>{e(w['no_entries'])}</p>"
        body = (
            f"<h2>{e(w['audit'])}</h2>"
            f'<form method="get" action="/audit" class="filters">{inputs}'
            f'<button type="submit">{e(w["filter"])}</button></form>'
            f'<table id="audit"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
            f"{empty}<p>{paging}</p>"
        )
        return c.page(request, w["audit"], body)
