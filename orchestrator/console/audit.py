"""The audit log screen: the entries the admin API's ListAudit gives the signed-in
operator (admins, within their communes), filtered by actor, action and time (the site's
zone), a page at a time, and the same filtered entries as a CSV download (every cell
that starts like a formula neutralised). Every text is escaped; the service refuses
anyone else."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import grpc
from aiohttp import web

from foundation.escaping import csv_cell
from orchestrator.access.peers import Refused
from orchestrator.console.pages import e, local_time
from orchestrator.console.services import Host
from orchestrator.console.words import words
from orchestrator.store.audit import MAX_PAGE
from protos.ondijon.v1 import control_pb2

PAGE = 50
ZONE = "Europe/Paris"
FILTERS = ("actor", "action", "since", "until")
COLUMNS = ("id", "at", "actor", "action", "target", "commune", "result", "detail")


def instant(text: str, field: str) -> datetime | None:
    """A ``datetime-local`` value, read in the site's zone; Refused naming the field."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(ZONE)).astimezone(UTC)
    except ValueError:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: not a date and time") from None


def audit_request(
    filters: Mapping[str, str], after: int, limit: int
) -> control_pb2.ListAuditRequest:
    """The ListAudit request of the screen's filters (Refused naming a bad field)."""
    asked = control_pb2.ListAuditRequest(
        actor=filters["actor"], action=filters["action"], after_id=after, limit=limit
    )
    since = instant(filters["since"], "since")
    until = instant(filters["until"], "until")
    if since:
        asked.since.FromDatetime(since)
    if until:
        asked.until.FromDatetime(until)
    return asked


def csv_rows(entries: list[control_pb2.AuditEntry], *, header: bool) -> bytes:
    """Entries as RFC 4180 CSV lines (UTF-8, ``\\r\\n``), times in ISO 8601 in the site's
    zone, every cell that starts like a formula neutralised."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(COLUMNS)
    for x in entries:
        at = x.at.ToDatetime(tzinfo=UTC).astimezone(ZoneInfo(ZONE)).isoformat()
        cells = (x.actor, x.action, x.target, x.commune, x.result, x.detail)
        writer.writerow([str(x.id), at, *(csv_cell(c) for c in cells)])
    return out.getvalue().encode("utf-8")


class AuditScreen:
    def __init__(self, console: Host) -> None:
        self.console = console

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/audit", self.page)
        router.add_get("/audit.csv", self.export)

    @staticmethod
    def filters(request: web.Request) -> dict[str, str]:
        return {k: request.query.get(k, "")[:128] for k in FILTERS}

    async def export(self, request: web.Request) -> web.StreamResponse:
        """Every entry the filters select (not only a page), oldest first, streamed a
        ListAudit page at a time; refused before any byte if the service refuses."""
        c = self.console
        filters = self.filters(request)
        listed = await c.services.control.ListAudit(
            audit_request(filters, 0, MAX_PAGE), c.call(request)
        )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8; header=present",
                "Content-Disposition": 'attachment; filename="ondijon-audit.csv"',
                "Cache-Control": "no-store",
            }
        )
        await response.prepare(request)
        await response.write(csv_rows(list(listed.entries), header=True))
        while len(listed.entries) == MAX_PAGE:
            listed = await c.services.control.ListAudit(
                audit_request(filters, listed.next_after_id, MAX_PAGE), c.call(request)
            )
            await response.write(csv_rows(list(listed.entries), header=False))
        await response.write_eof()
        return response

    async def page(self, request: web.Request) -> web.StreamResponse:
        c = self.console
        await c.caller(request)
        w = words(c.lang(request))
        q = request.query
        filters = self.filters(request)
        try:
            after = int(q.get("after", "0") or 0)
        except ValueError:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "after: not an entry id") from None
        asked = audit_request(filters, after, PAGE)
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
        export = f"/audit.csv?{urlencode(kept)}" if kept else "/audit.csv"
        paging += f' <a href="{e(export)}" id="export" download>{e(w["export_csv"])}</a>'
        body = (
            f"<h2>{e(w['audit'])}</h2>"
            f'<form method="get" action="/audit" class="filters">{inputs}'
            f'<button type="submit">{e(w["filter"])}</button></form>'
            f'<table id="audit"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
            f"{empty}<p>{paging}</p>"
        )
        return c.page(request, w["audit"], body)
