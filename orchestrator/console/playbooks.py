"""The crisis playbooks screen: the playbooks, their runs, start (a confirmation step
here, then, when asked, a second person's confirmation in the Operations service), the
progress of each device's command, and the end of a run (the schedules resume).

Only the admin and crisis roles are shown the controls; the service refuses and audits
anyone else's forged request.
"""

from __future__ import annotations

from datetime import UTC

from aiohttp import web

from orchestrator.access.gate import ADMIN, CRISIS, Caller
from orchestrator.console.pages import confirm_page, csrf_field, e, local_time
from orchestrator.console.services import Host
from orchestrator.console.words import words
from protos.ondijon.v1 import control_pb2


def may_run(caller: Caller) -> bool:
    return caller.operator.role in (ADMIN, CRISIS)


def progress(run: control_pb2.GetPlaybookRunResponse) -> str:
    done = sum(1 for s in run.steps if s.status == "DONE")
    return f"{done}/{len(run.steps)}"


def run_rows(w: dict[str, str], runs: list[control_pb2.GetPlaybookRunResponse]) -> str:
    rows = []
    for r in runs:
        at = r.started_at if r.HasField("started_at") else None
        rows.append(
            f'<tr data-run="{e(r.run_id)}" class="run-{e(r.status)}">'
            f'<td><a href="/playbooks/runs/{e(r.run_id)}">{e(r.run_id)}</a></td>'
            f"<td>{e(r.name)} v{r.version}</td>"
            f'<td class="run-status">{e(w.get("run_" + r.status, r.status))}</td>'
            f"<td>{e(r.requested_by)}</td><td>{e(r.confirmed_by or '—')}</td>"
            f"<td>{e(local_time(at.ToDatetime(tzinfo=UTC), 'Europe/Paris') if at else '—')}</td>"
            f"<td>{e(progress(r))}</td></tr>"
        )
    return "".join(rows)


def step_rows(w: dict[str, str], run: control_pb2.GetPlaybookRunResponse) -> str:
    return "".join(
        f'<tr data-step="{n}"><td><a href="/gateways/{e(s.gateway_id)}">{e(s.gateway_id)}</a>'
        f"</td><td>{e(s.commune)}</td><td>{e(s.action)}</td>"
        f"<td>{e(', '.join(s.device_ids) or w['every_device'])}</td>"
        f'<td class="step-status">{e(s.status or "—")}</td><td>{e(s.detail or "")}</td></tr>'
        for n, s in enumerate(run.steps)
    )


class PlaybookScreen:
    def __init__(self, console: Host) -> None:
        self.console = console

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/playbooks", self.page)
        router.add_post("/playbooks/{name}/start", self.start)
        router.add_get("/playbooks/runs/{run_id}", self.run)
        router.add_post("/playbooks/runs/{run_id}/{act}", self.act)

    async def page(self, request: web.Request) -> web.StreamResponse:
        c = self.console
        caller = await c.caller(request)
        call, api = c.call(request), c.services.operations
        books = await api.ListPlaybooks(control_pb2.ListPlaybooksRequest(), call)
        runs = await api.ListPlaybookRuns(control_pb2.ListPlaybookRunsRequest(), call)
        w = words(c.lang(request))
        runner = may_run(caller)
        rows = []
        for p in books.playbooks:
            start = ""
            if runner:
                start = (
                    f'<form method="post" action="/playbooks/{e(p.name)}/start" class="inline">'
                    f"{csrf_field(c.csrf(request))}"
                    f'<input type="hidden" name="version" value="{p.version}">'
                    f'<label><input type="checkbox" name="second" value="yes" checked> '
                    f"{e(w['second_person'])}</label> "
                    f'<button type="submit">{e(w["start"])}</button></form>'
                )
            rows.append(
                f'<tr data-playbook="{e(p.name)}"><td>{e(p.name)}</td><td>v{p.version}</td>'
                f"<td>{e(p.title)}</td><td>{start}</td></tr>"
            )
        read_only = "" if runner else f'<p class="read-only">{e(w["crisis_only"])}</p>'
        head = "".join(
            f'<th scope="col">{e(w[k])}</th>' for k in ("name", "version", "pb_title", "actions")
        )
        run_head = "".join(
            f'<th scope="col">{e(w[k])}</th>'
            for k in ("run", "playbook", "status", "requested_by", "confirmed_by", "since", "done")
        )
        body = (
            f"<h2>{e(w['playbooks'])}</h2>{read_only}"
            f'<table id="playbooks"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
            f"</tbody></table><h3>{e(w['runs'])}</h3>"
            f'<table id="runs"><thead><tr>{run_head}</tr></thead>'
            f"<tbody>{run_rows(w, list(runs.runs))}</tbody></table>"
        )
        return c.page(request, w["playbooks"], body)

    async def start(self, request: web.Request) -> web.StreamResponse:
        c = self.console
        caller = await c.caller(request)
        name = request.match_info["name"]
        form = await request.post()
        try:
            version = int(str(form.get("version", "0")) or 0)
        except ValueError:
            version = 0
        second = form.get("second") == "yes"
        w = words(c.lang(request))
        # A role that may not run playbooks skips the confirmation: the service refuses it.
        if form.get("confirmed") != "yes" and may_run(caller):
            fields = {"version": str(version)} | ({"second": "yes"} if second else {})
            summary = f"{name} v{version or '?'}" + (f" — {w['second_person']}" if second else "")
            body = confirm_page(w, request.path, fields, summary, c.csrf(request))
            return c.page(request, w["confirm_title"], body)
        run = await c.services.operations.StartPlaybook(
            control_pb2.StartPlaybookRequest(
                name=name, version=version, require_confirmation=second
            ),
            c.call(request),
        )
        raise web.HTTPSeeOther(f"/playbooks/runs/{run.run_id}")

    async def run(self, request: web.Request) -> web.StreamResponse:
        c = self.console
        caller = await c.caller(request)
        run_id = request.match_info["run_id"]
        as_json = run_id.endswith(".json")
        run = await c.services.operations.GetPlaybookRun(
            control_pb2.GetPlaybookRunRequest(run_id=run_id.removesuffix(".json")),
            c.call(request),
        )
        w = words(c.lang(request))
        if as_json:
            return web.json_response(
                {
                    "status": run.status,
                    "status_text": w.get("run_" + run.status, run.status),
                    "done": progress(run),
                    "steps": [{"status": s.status, "detail": s.detail} for s in run.steps],
                }
            )
        controls = ""
        if may_run(caller) and run.status != "ended":
            token = c.csrf(request)
            if run.status == "awaiting_confirmation":
                controls += (
                    f'<form method="post" action="/playbooks/runs/{e(run.run_id)}/confirm" '
                    f'class="inline">{csrf_field(token)}<button type="submit" id="confirm-run">'
                    f"{e(w['confirm_run'])}</button></form> "
                )
            controls += (
                f'<form method="post" action="/playbooks/runs/{e(run.run_id)}/end" '
                f'class="inline">{csrf_field(token)}<button type="submit" id="end-run">'
                f"{e(w['end_run'])}</button></form>"
            )
        head = "".join(
            f'<th scope="col">{e(w[k])}</th>'
            for k in ("gateway", "commune", "action", "devices", "status", "detail")
        )
        ends = (
            local_time(run.ends_at.ToDatetime(tzinfo=UTC), "Europe/Paris")
            if run.HasField("ends_at")
            else "—"
        )
        body = (
            f"<h2>{e(w['run'])} {e(run.run_id)} — {e(run.name)} v{run.version}</h2>"
            f'<p>{e(w["status"])}: <strong id="run-status" data-run="{e(run.run_id)}">'
            f"{e(w.get('run_' + run.status, run.status))}</strong> · {e(w['done'])} "
            f'<span id="run-done">{e(progress(run))}</span> · {e(w["requested_by"])} '
            f"{e(run.requested_by)} · {e(w['confirmed_by'])} {e(run.confirmed_by or '—')} · "
            f"{e(w['ends_at'])} {e(ends)}</p>{controls}"
            f'<table id="steps"><thead><tr>{head}</tr></thead>'
            f"<tbody>{step_rows(w, run)}</tbody></table>"
        )
        return c.page(request, f"{w['run']} {run.run_id}", body)

    async def act(self, request: web.Request) -> web.StreamResponse:
        c = self.console
        run_id, act = request.match_info["run_id"], request.match_info["act"]
        api, call = c.services.operations, c.call(request)
        caller = await c.caller(request)
        form = await request.post()
        if act == "end" and form.get("confirmed") != "yes" and may_run(caller):
            w = words(c.lang(request))
            summary = f"{w['end_run']}: {run_id}"
            body = confirm_page(w, request.path, {}, summary, c.csrf(request))
            return c.page(request, w["confirm_title"], body)
        if act == "confirm":
            await api.ConfirmPlaybook(control_pb2.ConfirmPlaybookRequest(run_id=run_id), call)
        elif act == "end":
            await api.EndPlaybook(control_pb2.EndPlaybookRequest(run_id=run_id), call)
        else:
            raise web.HTTPNotFound()
        raise web.HTTPSeeOther(f"/playbooks/runs/{run_id}")
