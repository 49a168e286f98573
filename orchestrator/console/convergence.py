"""The convergence screen: for each kind of document, how many gateways hold the version
they should (the effective one, from their groups), which lag and why (offline since when,
refused and the agent's reason, pending, never connected). The City service's
``GetConvergence``, within the operator's communes."""

from __future__ import annotations

from datetime import UTC

from aiohttp import web

from orchestrator.console.pages import e, local_time
from orchestrator.console.services import Host
from orchestrator.console.words import words
from protos.ondijon.v1 import control_pb2, link_pb2

KINDS = [k for k in link_pb2.DocumentKind.values() if k]
MAX_LAGGING = 200


def kind_name(kind: int) -> str:
    return link_pb2.DocumentKind.Name(kind).removeprefix("DOCUMENT_KIND_").lower()  # type: ignore[arg-type]


class ConvergenceScreen:
    def __init__(self, console: Host) -> None:
        self.console = console

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/convergence", self.page)

    async def page(self, request: web.Request) -> web.StreamResponse:
        c = self.console
        await c.caller(request)
        w = words(c.lang(request))
        chosen = request.query.get("kind", kind_name(KINDS[0]))
        call, api = c.call(request), c.services.city
        summary, detail = [], None
        for kind in KINDS:
            answer = await api.GetConvergence(
                control_pb2.GetConvergenceRequest(kind=kind, max_lagging=MAX_LAGGING),
                call,
            )
            name = kind_name(kind)
            if name == chosen:
                detail = answer
            css = "ok" if answer.lagging_total == 0 else "warn"
            summary.append(
                f'<tr data-kind="{e(name)}"><td><a href="/convergence?kind={e(name)}">'
                f"{e(w.get('doc_' + name, name))}</a></td><td>{answer.gateways}</td>"
                f'<td class="{css}">{answer.converged}</td><td>{answer.lagging_total}</td>'
                f"<td>{answer.offline}</td><td>{answer.refused}</td><td>{answer.pending}</td>"
                f"<td>{answer.without_document}</td></tr>"
            )
        head = "".join(
            f'<th scope="col">{e(w[k])}</th>'
            for k in (
                "documents",
                "gateways",
                "converged",
                "lagging",
                "offline",
                "refused_n",
                "pending",
                "without_document",
            )
        )
        lag_rows = ""
        if detail is not None:
            for lag in detail.lagging:
                since = (
                    local_time(lag.offline_since.ToDatetime(tzinfo=UTC), "Europe/Paris")
                    if lag.HasField("offline_since")
                    else ""
                )
                why = w.get("why_" + lag.reason.replace("-", "_"), lag.reason)
                extra = lag.refusal or (f"{w['since']} {since}" if since else "")
                lag_rows += (
                    f'<tr data-gateway="{e(lag.gateway_id)}"><td><a href="/gateways/'
                    f'{e(lag.gateway_id)}">{e(lag.gateway_id)}</a></td><td>{e(lag.commune)}</td>'
                    f"<td>{lag.desired_version}</td><td>{lag.held_version or '—'}</td>"
                    f'<td class="reason">{e(why)}</td><td>{e(extra)}</td></tr>'
                )
        lag_head = "".join(
            f'<th scope="col">{e(w[k])}</th>'
            for k in ("gateway", "commune", "desired", "held", "reason", "detail")
        )
        title = w.get("doc_" + chosen, chosen)
        body = (
            f"<h2>{e(w['convergence'])}</h2>"
            f'<table id="convergence"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(summary)}</tbody></table>"
            f"<h3>{e(w['lagging_gateways'])} — {e(title)}</h3>"
            f'<table id="lagging"><thead><tr>{lag_head}</tr></thead><tbody>{lag_rows}</tbody>'
            "</table>"
        )
        return c.page(request, w["convergence"], body)
