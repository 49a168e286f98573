"""The admin API's command calls: queue a command for a gateway (checked field by field,
expiring within a week, never run twice), read its status.

Sending is for operators within their communes and is audited; the command reaches the
gateway through whichever replica holds its stream (:mod:`orchestrator.ingest.routing`).
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

import grpc

from foundation.clock import Clock
from orchestrator.access.gate import OPERATOR, VIEWER, Attempt, Gatekeeper
from orchestrator.fleet.commands import check_command, check_command_id
from orchestrator.fleet.overrides import LIVE_STATUSES, active_overrides, unknown_device
from orchestrator.ingest.checks import timestamp
from orchestrator.ingest.devices import current_devices
from orchestrator.ingest.routing import Router
from orchestrator.store.connection import Connection
from orchestrator.store.database import CommandRecord, Conflict, NotFound
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import control_pb2, link_pb2, state_pb2

Context = grpc.aio.ServicerContext[Any, Any]


class CommandsApi:
    """SendCommand, GetCommand, ListOverrides."""

    def __init__(
        self, *, runner: StoreRunner, clock: Clock, gate: Gatekeeper, router: Router
    ) -> None:
        self.runner = runner
        self.clock = clock
        self.gate = gate
        self.router = router

    async def SendCommand(
        self, request: control_pb2.SendCommandRequest, context: Context
    ) -> control_pb2.SendCommandResponse:
        command = link_pb2.Command()
        command.CopyFrom(request.command)
        if not command.command_id:
            command.command_id = uuid.uuid4().hex
        attempt = Attempt("command.send", f"{request.gateway_id}/{command.command_id}")
        caller = await self.gate.caller(context, OPERATOR, attempt)
        gateway = await self.gate.gateway(context, caller, request.gateway_id, attempt)
        attempt = Attempt(attempt.action, attempt.target, gateway.commune)
        now = self.clock.now()
        problem = check_command(command, now)
        store = self.runner.store
        if not problem and command.WhichOneof("action") in ("override", "bollard"):
            # A device the gateway does not report having: refused now, not stored,
            # delivered and reported done while changing nothing.
            devices = await self.runner.read(
                functools.partial(current_devices, store), request.gateway_id
            )
            problem = unknown_device(command, request.gateway_id, devices)
        if problem:
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.INVALID_ARGUMENT, problem
            )

        def queue(conn: Connection) -> None:
            store.add_command(
                conn,
                command_id=command.command_id,
                gateway_id=request.gateway_id,
                payload=command.SerializeToString(),
                expires_at=command.expires_at.ToDatetime(tzinfo=now.tzinfo),
                status=link_pb2.COMMAND_STATUS_PENDING,
                created_by=caller.actor,
                now=now,
            )
            # With its audit entry, in one commit: a command is on its way to the street
            # one commit sooner, and never queued without its entry.
            self.gate.done_in(conn, caller, attempt, command.WhichOneof("action") or "")

        try:
            await self.runner.write(queue)
        except NotFound as exc:
            await self.gate.refuse(context, caller, attempt, grpc.StatusCode.NOT_FOUND, str(exc))
        except Conflict as exc:
            # Command ids are unique: a replayed command is refused, never run twice.
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.ALREADY_EXISTS, str(exc)
            )
        # Delivered now by whichever replica holds the gateway's stream (or at its hello).
        await self.router.commands_queued(request.gateway_id)
        return control_pb2.SendCommandResponse(command_id=command.command_id)

    async def GetCommand(
        self, request: control_pb2.GetCommandRequest, context: Context
    ) -> control_pb2.GetCommandResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        problem = check_command_id(request.command_id, "command_id")
        if problem or not request.command_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, problem or "command_id: must not be empty"
            )
        store = self.runner.store

        def load(c: Connection) -> tuple[CommandRecord | None, str]:
            record = store.get_command(c, request.command_id)
            try:
                commune = store.get_gateway(c, record.gateway_id if record else "").commune
            except NotFound:
                commune = ""
            return record, commune

        # One read either way, and one answer: a command of a gateway outside the caller's
        # communes is answered exactly like a missing one (its gateway is not named).
        record, commune = await self.runner.read(load)
        if record is None or not caller.in_scope(commune):
            await context.abort(grpc.StatusCode.NOT_FOUND, "command_id: no such command")
        return control_pb2.GetCommandResponse(
            command_id=record.command_id,
            gateway_id=record.gateway_id,
            status=record.status,  # type: ignore[arg-type]
            detail=record.detail,
            expires_at=timestamp(record.expires_at),
        )

    async def ListOverrides(
        self, request: control_pb2.ListOverridesRequest, context: Context
    ) -> control_pb2.ListOverridesResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        await self.gate.gateway(context, caller, request.gateway_id, None)
        store = self.runner.store

        def load(c: Connection) -> tuple[list[CommandRecord], list[state_pb2.DeviceState]]:
            return (
                store.recent_commands(c, request.gateway_id, LIVE_STATUSES, limit=1000),
                current_devices(store, c, request.gateway_id),
            )

        records, devices = await self.runner.read(load)
        commands = [(r.command_id, r.status, r.detail, r.created_by, r.payload) for r in records]
        return control_pb2.ListOverridesResponse(
            overrides=active_overrides(commands, devices, self.clock.now())
        )
