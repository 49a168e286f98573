"""The playbook service: versions, runs, the commands they send, progress per device.

A run is planned against the gateways in the caller's communes (their positions, and the
signal plans of the SignalPlans document each holds), every override checked by the
agent's parser (:func:`domain.playbooks.plan`); a refusal names the action and the field
and nothing is sent. With ``require_confirmation`` the run waits for a second person
(another admin or crisis operator) before its commands are queued. Ending a run sends
``cancel_override`` for each of its overrides; the schedule resumes at once. Each step's
progress is its command's status (PENDING until the gateway answers, then DONE, REFUSED or
EXPIRED). Start, confirmation and end are audited.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format

from domain import documents
from domain import playbooks as core
from domain.playbooks import PlaybookError
from foundation.clock import Clock
from orchestrator.access.gate import Attempt, Caller, Gatekeeper
from orchestrator.ingest.checks import timestamp
from orchestrator.ingest.routing import Router
from orchestrator.store import playbooks as sql
from orchestrator.store.database import Store
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2

Context = grpc.aio.ServicerContext[Any, Any]
Connection = Any
# The four answers that carry a run: the same fields under each RPC's own message name.
RunMessage = TypeVar(
    "RunMessage",
    control_pb2.StartPlaybookResponse,
    control_pb2.ConfirmPlaybookResponse,
    control_pb2.EndPlaybookResponse,
    control_pb2.GetPlaybookRunResponse,
)

AWAITING, RUNNING, ENDED = "awaiting_confirmation", "running", "ended"
# How long an end-of-run cancellation waits for an offline gateway (its override expires
# by itself anyway).
CANCEL_TTL = timedelta(days=7)


def _status_name(status: int) -> str:
    return link_pb2.CommandStatus.Name(status).removeprefix("COMMAND_STATUS_")  # type: ignore[arg-type]


class PlaybookService:
    def __init__(self, *, runner: StoreRunner, clock: Clock, router: Router) -> None:
        self.runner = runner
        self.clock = clock
        self.router = router

    @property
    def store(self) -> Store:
        return self.runner.store

    async def put(
        self,
        gate: Gatekeeper,
        caller: Caller,
        attempt: Attempt,
        request: control_pb2.PutPlaybookRequest,
        context: Context,
    ) -> control_pb2.PutPlaybookResponse:
        try:
            playbook = core.parse(request.body)
        except PlaybookError as exc:
            await gate.refuse(context, caller, attempt, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        body = json.loads(request.body)
        now = self.clock.now()
        version = await self.runner.write(sql.put, playbook.name, body, caller.actor, now)
        await gate.done(caller, Attempt(attempt.action, f"playbook/{playbook.name}"), f"v{version}")
        return control_pb2.PutPlaybookResponse(name=playbook.name, version=version)

    async def catalogue(self) -> control_pb2.ListPlaybooksResponse:
        found = await self.runner.read(sql.latest_all)
        return control_pb2.ListPlaybooksResponse(
            playbooks=[
                control_pb2.PlaybookSummary(
                    name=p.name,
                    version=p.version,
                    title=str(p.body.get("title", "")),
                    body=core.to_json(p.body),
                )
                for p in found
            ]
        )

    def _sites(self, conn: Connection, caller: Caller) -> list[core.Site]:
        sites = []
        for g in self.store.list_gateways(conn):
            if not caller.in_scope(g.commune):
                continue
            plan_ids: frozenset[str] = frozenset()
            held = self.store.get_document(conn, g.gateway_id, link_pb2.DOCUMENT_KIND_SIGNAL_PLANS)
            if held is not None:
                try:
                    doc = documents.parse(held.kind, held.payload)
                    plan_ids = frozenset(p.id for p in getattr(doc.value, "plans", ()))
                except Exception:
                    plan_ids = frozenset()
            sites.append(core.Site(g.gateway_id, g.commune, g.latitude, g.longitude, plan_ids))
        return sites

    async def start(
        self,
        gate: Gatekeeper,
        caller: Caller,
        attempt: Attempt,
        request: control_pb2.StartPlaybookRequest,
        context: Context,
    ) -> control_pb2.StartPlaybookResponse:
        found = await self.runner.read(sql.get, request.name, request.version)
        if found is None:
            await gate.refuse(
                context,
                caller,
                attempt,
                grpc.StatusCode.NOT_FOUND,
                f"name: no playbook {request.name!r}"
                + (f" version {request.version}" if request.version else ""),
            )
        playbook = core.parse(json.dumps(found.body))
        run_id = uuid.uuid4().hex[:16]
        now = self.clock.now()
        sites = await self.runner.read(self._sites, caller)
        try:
            steps = core.plan(playbook, run_id, sites, now)
        except PlaybookError as exc:
            await gate.refuse(
                context, caller, attempt, grpc.StatusCode.FAILED_PRECONDITION, str(exc)
            )
        step_rows = [
            {
                "gateway_id": s.gateway_id,
                "commune": s.commune,
                "action": s.description,
                "devices": list(s.override.device_ids),
                "override": json_format.MessageToDict(s.override),
                "command_id": "",
            }
            for s in steps
        ]
        run = sql.Run(
            run_id=run_id,
            name=found.name,
            version=found.version,
            status=AWAITING if request.require_confirmation else RUNNING,
            requested_by=caller.actor,
            confirmed_by="",
            requested_at=now,
            started_at=None,
            ends_at=None,
            ended_at=None,
            ended_by="",
            steps=step_rows,
        )
        where = Attempt(attempt.action, f"playbook-run/{run_id}")
        if request.require_confirmation:
            await self.runner.write(sql.add_run, run)
            await gate.done(caller, where, f"{found.name} v{found.version}: awaiting confirmation")
            return await self._message(run, control_pb2.StartPlaybookResponse)
        await self.runner.write(sql.add_run, run)
        run = await self._send(run, caller.actor, now, playbook.duration)
        await gate.done(
            caller, where, f"{found.name} v{found.version}: {len(run.steps)} command(s) sent"
        )
        return await self._message(run, control_pb2.StartPlaybookResponse)

    async def _send(self, run: sql.Run, actor: str, now: datetime, duration: timedelta) -> sql.Run:
        """Queue the run's overrides (the overrides start now: the run's clock starts at
        the confirmation, not at the request)."""
        store = self.store
        ends = now + duration
        steps = []
        for step in run.steps:
            override = json_format.ParseDict(step["override"], schedule_pb2.Override())
            override.start.FromDatetime(now)
            override.expiry.FromDatetime(ends)
            command = link_pb2.Command(command_id=uuid.uuid4().hex, override=override)
            command.expires_at.FromDatetime(ends)
            steps.append(
                step
                | {
                    "command_id": command.command_id,
                    "override": json_format.MessageToDict(override),
                }
            )
            step["_command"] = command
        started = replace(run, status=RUNNING, started_at=now, ends_at=ends, steps=steps)

        def write(c: Connection) -> None:
            for step in run.steps:
                command = step.pop("_command")
                store.add_command(
                    c,
                    command_id=command.command_id,
                    gateway_id=step["gateway_id"],
                    payload=command.SerializeToString(),
                    expires_at=ends,
                    status=link_pb2.COMMAND_STATUS_PENDING,
                    created_by=actor[:64],
                    now=now,
                )
            sql.save_run(c, started)

        await self.runner.write(write)
        for gateway_id in sorted({s["gateway_id"] for s in steps}):
            await self.router.commands_queued(gateway_id)
        return started

    async def _run(
        self,
        gate: Gatekeeper | None,
        caller: Caller,
        attempt: Attempt | None,
        run_id: str,
        context: Context,
    ) -> sql.Run:
        run = await self.runner.read(sql.get_run, run_id) if run_id else None
        if run is None or not all(caller.in_scope(s["commune"]) for s in run.steps):
            missing = f"run_id: no playbook run {run_id!r}"
            if gate is None or attempt is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, missing)
            await gate.refuse(context, caller, attempt, grpc.StatusCode.NOT_FOUND, missing)
        assert run is not None
        return run

    async def confirm(
        self,
        gate: Gatekeeper,
        caller: Caller,
        attempt: Attempt,
        request: control_pb2.ConfirmPlaybookRequest,
        context: Context,
    ) -> control_pb2.ConfirmPlaybookResponse:
        run = await self._run(gate, caller, attempt, request.run_id, context)
        if run.status != AWAITING:
            await gate.refuse(
                context,
                caller,
                attempt,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"run_id: the run is {run.status}, not awaiting confirmation",
            )
        if run.requested_by == caller.actor:
            await gate.refuse(
                context,
                caller,
                attempt,
                grpc.StatusCode.PERMISSION_DENIED,
                "run_id: a second person must confirm (not the one who started it)",
            )
        found = await self.runner.read(sql.get, run.name, run.version)
        assert found is not None
        playbook = core.parse(json.dumps(found.body))
        now = self.clock.now()
        confirmed = replace(run, confirmed_by=caller.actor)
        started = await self._send(confirmed, run.requested_by, now, playbook.duration)
        await gate.done(caller, attempt, f"{run.name} v{run.version}: confirmed, sent")
        return await self._message(started, control_pb2.ConfirmPlaybookResponse)

    async def end(
        self,
        gate: Gatekeeper,
        caller: Caller,
        attempt: Attempt,
        request: control_pb2.EndPlaybookRequest,
        context: Context,
    ) -> control_pb2.EndPlaybookResponse:
        run = await self._run(gate, caller, attempt, request.run_id, context)
        if run.status == ENDED:
            await gate.refuse(
                context,
                caller,
                attempt,
                grpc.StatusCode.FAILED_PRECONDITION,
                "run_id: the run has already ended",
            )
        now = self.clock.now()
        store = self.store
        ended = replace(run, status=ENDED, ended_at=now, ended_by=caller.actor)
        cancels = []
        if run.status == RUNNING:
            for step in run.steps:
                command = link_pb2.Command(
                    command_id=uuid.uuid4().hex, cancel_override=step["override"]["id"]
                )
                command.expires_at.FromDatetime(now + CANCEL_TTL)
                cancels.append((step["gateway_id"], command))

        def write(c: Connection) -> None:
            for gateway_id, command in cancels:
                store.add_command(
                    c,
                    command_id=command.command_id,
                    gateway_id=gateway_id,
                    payload=command.SerializeToString(),
                    expires_at=now + CANCEL_TTL,
                    status=link_pb2.COMMAND_STATUS_PENDING,
                    created_by=caller.actor[:64],
                    now=now,
                )
            sql.save_run(c, ended)

        await self.runner.write(write)
        for gateway_id in sorted({g for g, _ in cancels}):
            await self.router.commands_queued(gateway_id)
        await gate.done(caller, attempt, f"{run.name} v{run.version}: ended, schedules resume")
        return await self._message(ended, control_pb2.EndPlaybookResponse)

    async def get(
        self, caller: Caller, request: control_pb2.GetPlaybookRunRequest, context: Context
    ) -> control_pb2.GetPlaybookRunResponse:
        run = await self._run(None, caller, None, request.run_id, context)
        return await self._message(run, control_pb2.GetPlaybookRunResponse)

    async def runs(
        self, caller: Caller, request: control_pb2.ListPlaybookRunsRequest
    ) -> control_pb2.ListPlaybookRunsResponse:
        """Open runs, then the latest ended, whose every step is in the caller's communes."""
        limit = min(request.ended_limit or 20, 200)
        found = await self.runner.read(lambda c: sql.list_runs(c, limit))
        mine = [r for r in found if all(caller.in_scope(s["commune"]) for s in r.steps)]
        return control_pb2.ListPlaybookRunsResponse(
            runs=[await self._message(r, control_pb2.GetPlaybookRunResponse) for r in mine]
        )

    async def _message(self, run: sql.Run, answer: type[RunMessage]) -> RunMessage:
        store = self.store
        ids = [s["command_id"] for s in run.steps if s.get("command_id")]

        def statuses(c: Connection) -> dict[str, tuple[int, str]]:
            found = {}
            for command_id in ids:
                record = store.get_command(c, command_id)
                if record is not None:
                    found[command_id] = (record.status, record.detail)
            return found

        known = await self.runner.read(statuses) if ids else {}
        message = answer(
            run_id=run.run_id,
            name=run.name,
            version=run.version,
            status=run.status,
            requested_by=run.requested_by,
            confirmed_by=run.confirmed_by,
        )
        for name in ("started_at", "ends_at", "ended_at"):
            value = getattr(run, name)
            if value is not None:
                getattr(message, name).CopyFrom(timestamp(value))
        for s in run.steps:
            status, detail = known.get(s.get("command_id", ""), (0, ""))
            message.steps.append(
                control_pb2.PlaybookStep(
                    gateway_id=s["gateway_id"],
                    commune=s["commune"],
                    action=s["action"],
                    device_ids=s["devices"],
                    command_id=s.get("command_id", ""),
                    status=_status_name(status) if status else "NOT_SENT",
                    detail=detail,
                )
            )
        return message
