"""Operations: the control room's work over the city (alarms, energy, crisis playbooks).

Same callers, roles, scope of communes and audit as ControlCentre
(:mod:`orchestrator.api.control`): viewers read, operators act on alarms, admins and the
crisis role run playbooks. An alarm of a commune outside the caller's scope is answered
exactly like a missing one. Every action lands in the audit log, refused ones included.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import grpc

from domain import alarms as core
from domain.alarms import Alarm, AlarmError
from foundation.clock import Clock
from orchestrator.access.gate import (
    ADMIN,
    CRISIS,
    OPERATOR,
    VIEWER,
    Attempt,
    Caller,
    Gatekeeper,
)
from orchestrator.alarms.service import AlarmService
from orchestrator.energy.service import EnergyError, EnergyService
from orchestrator.ingest.checks import timestamp
from orchestrator.playbooks.service import PlaybookService
from orchestrator.store.alarms import AlarmQuery, StoredAlarm
from protos.ondijon.v1 import control_pb2, control_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]

WATCH_POLL_S = 0.5
OPEN_VIEWS = {"unacknowledged", "acknowledged", "cleared", "shelved"}
MAX_NAME = 128


def alarm_record(stored: StoredAlarm, now: datetime) -> control_pb2.AlarmRecord:
    a = stored.alarm
    record = control_pb2.AlarmRecord(
        alarm_id=stored.id,
        gateway_id=a.gateway_id,
        device_id=a.device_id,
        type=a.type,
        commune=stored.commune,
        severity=int(a.severity),
        state=core.view_state(a, now).value,
        active=a.active,
        acknowledged=a.acknowledged,
        count=a.count,
        first_at=timestamp(a.first_at),
        last_at=timestamp(a.last_at),
        message=a.message,
        acknowledged_by=a.acknowledged_by,
        comment=a.comment,
        assigned_to=a.assigned_to,
        repair_note=a.repair_note,
        reminders=a.reminders,
        root_id=a.root_id or 0,
        grouped=stored.grouped,
    )
    for name in ("cleared_at", "shelved_until", "closed_at"):
        value = getattr(a, name)
        if value is not None:
            getattr(record, name).CopyFrom(timestamp(value))
    repair = a.repair_time()
    if repair is not None:
        record.repair_seconds = repair.total_seconds()
    return record


def _scope(caller: Caller) -> list[str] | None:
    communes = caller.operator.communes
    return None if "*" in communes else list(communes)


class OperationsService(control_pb2_grpc.OperationsServicer):
    def __init__(
        self,
        *,
        clock: Clock,
        gate: Gatekeeper,
        alarms: AlarmService,
        energy: EnergyService,
        playbooks: PlaybookService,
    ) -> None:
        self.clock = clock
        self.gate = gate
        self.alarms = alarms
        self.energy = energy
        self.playbooks = playbooks

    # -- alarms ------------------------------------------------------------------------

    async def ListAlarms(
        self, request: control_pb2.ListAlarmsRequest, context: Context
    ) -> control_pb2.ListAlarmsResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        state = request.state or "open"
        if state not in {"open", "closed", "all"} | OPEN_VIEWS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "state: one of open, closed, all, unacknowledged, acknowledged, cleared, shelved",
            )
        if request.min_severity > 4:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "min_severity: 0 to 4")
        for name in ("commune", "type", "gateway_id"):
            if len(getattr(request, name)) > MAX_NAME:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{name}: at most {MAX_NAME} characters"
                )
        limit = min(request.limit or 100, 1000)
        query = AlarmQuery(
            communes=_scope(caller),
            commune=request.commune,
            type=request.type,
            gateway_id=request.gateway_id,
            min_severity=request.min_severity,
            status="open" if state in OPEN_VIEWS else state,
            include_grouped=request.include_grouped,
            root_id=request.root_id,
            after_id=request.after_id,
            limit=limit,
        )
        now = self.clock.now()
        records: list[control_pb2.AlarmRecord] = []
        last = 0
        # A view state is a filter over open alarms, computed by the core at `now`.
        while len(records) < limit:
            page = await self.alarms.page(query)
            for stored in page:
                last = stored.id
                record = alarm_record(stored, now)
                if state in OPEN_VIEWS and record.state != state:
                    continue
                if state == "open" and record.state == "shelved" and not request.include_grouped:
                    continue  # shelved: out of the list until its time (ask for "shelved")
                records.append(record)
                if len(records) == limit:
                    break
            if len(page) < query.limit:
                break
            query = AlarmQuery(**{**query.__dict__, "after_id": last})
        return control_pb2.ListAlarmsResponse(
            alarms=records, next_after_id=records[-1].alarm_id if records else 0
        )

    async def WatchAlarms(
        self, request: control_pb2.WatchAlarmsRequest, context: Context
    ) -> AsyncIterator[control_pb2.WatchAlarmsResponse]:
        caller = await self.gate.caller(context, VIEWER, None)
        since = self.clock.now()
        sent: dict[int, datetime] = {}
        while True:
            caller = await self.gate.registration(context, caller, VIEWER)
            changed = await self.alarms.changed_since(since, _scope(caller))
            now = self.clock.now()
            for stored in changed:
                if request.commune and stored.commune != request.commune:
                    continue
                if sent.get(stored.id) == stored.updated_at:
                    continue  # seen on the previous poll (the bound is inclusive)
                sent[stored.id] = stored.updated_at
                yield control_pb2.WatchAlarmsResponse(alarm=alarm_record(stored, now))
            if changed:
                since = max(s.updated_at for s in changed)
                sent = {k: v for k, v in sent.items() if v >= since}
            await asyncio.sleep(WATCH_POLL_S)

    async def _act(
        self,
        context: Context,
        alarm_id: int,
        action: str,
        change: Callable[[Alarm, datetime], Alarm],
        detail: str,
    ) -> control_pb2.AlarmRecord:
        """Apply ``change`` to alarm ``alarm_id`` for an operator in its scope; the record
        as it now is."""
        attempt = Attempt(f"alarm.{action}", f"alarm/{alarm_id}")
        caller = await self.gate.caller(context, OPERATOR, attempt)
        missing = f"alarm_id: no alarm {alarm_id}"
        found = await self.alarms.find(alarm_id) if alarm_id else None
        if found is None:
            await self.gate.refuse(context, caller, attempt, grpc.StatusCode.NOT_FOUND, missing)
        where = Attempt(attempt.action, f"{found.alarm.gateway_id}/alarm/{alarm_id}", found.commune)
        if not caller.in_scope(found.commune):
            await self.gate.refuse(
                context,
                caller,
                where,
                grpc.StatusCode.NOT_FOUND,
                missing,
                detail="the alarm's commune is outside the caller's communes",
            )
        try:
            stored = await self.alarms.act(alarm_id, change)
        except AlarmError as exc:
            await self.gate.refuse(
                context,
                caller,
                where,
                grpc.StatusCode.FAILED_PRECONDITION
                if exc.field == "alarm_id"
                else grpc.StatusCode.INVALID_ARGUMENT,
                str(exc),
            )
        assert stored is not None
        await self.gate.done(caller, where, detail)
        return alarm_record(stored, self.clock.now())

    async def AcknowledgeAlarm(
        self, request: control_pb2.AcknowledgeAlarmRequest, context: Context
    ) -> control_pb2.AcknowledgeAlarmResponse:
        actor = await self._actor(context)
        record = await self._act(
            context,
            request.alarm_id,
            "acknowledge",
            lambda a, now: core.acknowledge(a, by=actor, comment=request.text, now=now),
            request.text,
        )
        return control_pb2.AcknowledgeAlarmResponse(alarm=record)

    async def ShelveAlarm(
        self, request: control_pb2.ShelveAlarmRequest, context: Context
    ) -> control_pb2.ShelveAlarmResponse:
        until = (
            request.until.ToDatetime(tzinfo=UTC)
            if request.HasField("until")
            else datetime.min.replace(tzinfo=UTC)
        )
        record = await self._act(
            context,
            request.alarm_id,
            "shelve",
            lambda a, now: core.shelve(a, until=until, now=now),
            f"until {until:%Y-%m-%d %H:%M} UTC",
        )
        return control_pb2.ShelveAlarmResponse(alarm=record)

    async def AssignAlarm(
        self, request: control_pb2.AssignAlarmRequest, context: Context
    ) -> control_pb2.AssignAlarmResponse:
        record = await self._act(
            context,
            request.alarm_id,
            "assign",
            lambda a, now: core.assign(a, crew=request.crew),
            f"crew {request.crew}",
        )
        return control_pb2.AssignAlarmResponse(alarm=record)

    async def CloseAlarm(
        self, request: control_pb2.CloseAlarmRequest, context: Context
    ) -> control_pb2.CloseAlarmResponse:
        actor = await self._actor(context)
        record = await self._act(
            context,
            request.alarm_id,
            "close",
            lambda a, now: core.close(a, by=actor, note=request.text, now=now),
            request.text,
        )
        return control_pb2.CloseAlarmResponse(alarm=record)

    async def _actor(self, context: Context) -> str:
        from orchestrator.access.peers import AuthError, peer_of

        try:
            return peer_of(context).identity.name
        except AuthError:
            return ""

    # -- energy ------------------------------------------------------------------------------

    async def EnergyReport(
        self, request: control_pb2.EnergyReportRequest, context: Context
    ) -> control_pb2.EnergyReportResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        try:
            return await self.energy.report(request, _scope(caller))
        except EnergyError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable") from None

    # -- playbooks ---------------------------------------------------------------------------

    async def _crisis(self, context: Context, attempt: Attempt) -> Caller:
        caller = await self.gate.caller(context, OPERATOR, attempt)
        if caller.operator.role not in (ADMIN, CRISIS):
            await self.gate.refuse(
                context,
                caller,
                attempt,
                grpc.StatusCode.PERMISSION_DENIED,
                f"role {caller.operator.role} may not run playbooks (needs admin or crisis)",
            )
        return caller

    async def PutPlaybook(
        self, request: control_pb2.PutPlaybookRequest, context: Context
    ) -> control_pb2.PutPlaybookResponse:
        attempt = Attempt("playbook.put", "playbook")
        caller = await self._crisis(context, attempt)
        return await self.playbooks.put(self.gate, caller, attempt, request, context)

    async def ListPlaybooks(
        self, request: control_pb2.ListPlaybooksRequest, context: Context
    ) -> control_pb2.ListPlaybooksResponse:
        await self.gate.caller(context, VIEWER, None)
        return await self.playbooks.catalogue()

    async def StartPlaybook(
        self, request: control_pb2.StartPlaybookRequest, context: Context
    ) -> control_pb2.StartPlaybookResponse:
        attempt = Attempt("playbook.start", f"playbook/{request.name}")
        caller = await self._crisis(context, attempt)
        return await self.playbooks.start(self.gate, caller, attempt, request, context)

    async def ConfirmPlaybook(
        self, request: control_pb2.ConfirmPlaybookRequest, context: Context
    ) -> control_pb2.ConfirmPlaybookResponse:
        attempt = Attempt("playbook.confirm", f"playbook-run/{request.run_id}")
        caller = await self._crisis(context, attempt)
        return await self.playbooks.confirm(self.gate, caller, attempt, request, context)

    async def EndPlaybook(
        self, request: control_pb2.EndPlaybookRequest, context: Context
    ) -> control_pb2.EndPlaybookResponse:
        attempt = Attempt("playbook.end", f"playbook-run/{request.run_id}")
        caller = await self._crisis(context, attempt)
        return await self.playbooks.end(self.gate, caller, attempt, request, context)

    async def ListPlaybookRuns(
        self, request: control_pb2.ListPlaybookRunsRequest, context: Context
    ) -> control_pb2.ListPlaybookRunsResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        return await self.playbooks.runs(caller, request)

    async def GetPlaybookRun(
        self, request: control_pb2.GetPlaybookRunRequest, context: Context
    ) -> control_pb2.GetPlaybookRunResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        return await self.playbooks.get(caller, request, context)
