"""The admin API's command calls: queue a command for a gateway (checked field by field,
expiring within a week, never run twice), read its status, at once or once the gateway
answered (``wait_ms``: the answer wakes the call, on whichever replica it lands).

Sending is for operators within their communes and is audited; the command reaches the
gateway through whichever replica holds its stream (:mod:`orchestrator.ingest.routing`).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from orchestrator.store.database import CommandRecord, Conflict, GatewayRecord, NotFound
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import control_pb2, link_pb2, state_pb2

Context = grpc.aio.ServicerContext[Any, Any]
# The longest a GetCommand waits for the gateway's answer: well within a unary call's
# server-side deadline (orchestrator.access.limits, call_timeout_s).
MAX_WAIT_MS = 20_000


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
        gate, router, store = self.gate, self.router, self.runner.store
        gateway_id = request.gateway_id
        # A device the gateway does not report having is refused now, not stored,
        # delivered and reported done while changing nothing.
        checks_devices = command.WhichOneof("action") in ("override", "bollard")

        def look(conn: Connection) -> tuple[GatewayRecord | None, list[state_pb2.DeviceState]]:
            # What the checks need, read with the caller's registration (one trip).
            gateway = gate.read_gateway(conn, gateway_id)
            if gateway is None or not checks_devices:
                return gateway, []
            return gateway, current_devices(store, conn, gateway_id)

        caller, (found, devices) = await gate.caller_reading(context, OPERATOR, attempt, look)
        gateway = await gate.gateway_found(context, caller, gateway_id, found, attempt)
        attempt = Attempt(attempt.action, attempt.target, gateway.commune)
        now = self.clock.now()
        problem = check_command(command, now)
        if not problem and checks_devices:
            problem = unknown_device(command, gateway_id, devices)
        if problem:
            await gate.refuse(context, caller, attempt, grpc.StatusCode.INVALID_ARGUMENT, problem)

        def queue(conn: Connection) -> list[CommandRecord]:
            store.add_command(
                conn,
                command_id=command.command_id,
                gateway_id=gateway_id,
                payload=command.SerializeToString(),
                expires_at=command.expires_at.ToDatetime(tzinfo=now.tzinfo),
                status=link_pb2.COMMAND_STATUS_PENDING,
                created_by=caller.actor,
                now=now,
            )
            # With its audit entry, in one commit: a command is on its way to the street
            # one commit sooner, and never queued without its entry.
            gate.done_in(conn, caller, attempt, command.WhichOneof("action") or "")
            return router.commands_queued_in(conn, gateway_id)

        try:
            # Ahead of the ingest's queued writes: an operator is waiting.
            owed = await self.runner.write_first(queue)
        except NotFound as exc:
            await gate.refuse(context, caller, attempt, grpc.StatusCode.NOT_FOUND, str(exc))
        except Conflict as exc:
            # Command ids are unique: a replayed command is refused, never run twice.
            await gate.refuse(context, caller, attempt, grpc.StatusCode.ALREADY_EXISTS, str(exc))
        # Sent now if this replica holds the gateway's stream (the others were told on
        # commit; a gateway not connected is sent it at its hello).
        await router.send_commands(gateway_id, owed)
        return control_pb2.SendCommandResponse(command_id=command.command_id)

    async def GetCommand(
        self, request: control_pb2.GetCommandRequest, context: Context
    ) -> control_pb2.GetCommandResponse:
        problem = check_command_id(request.command_id, "command_id")
        store = self.runner.store

        def load(c: Connection) -> tuple[CommandRecord | None, str]:
            if problem or not request.command_id:
                return None, ""
            record = store.get_command(c, request.command_id)
            try:
                commune = store.get_gateway(c, record.gateway_id if record else "").commune
            except NotFound:
                commune = ""
            return record, commune

        if request.wait_ms > MAX_WAIT_MS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"wait_ms: at most {MAX_WAIT_MS} (20 s)"
            )
        with (
            self.router.awaiting_answer(request.command_id)
            if request.wait_ms and not problem
            else contextlib.nullcontext(asyncio.Event())
        ) as answered:
            # One read with the caller's registration, and one answer: a command of a
            # gateway outside the caller's communes is answered exactly like a missing one
            # (its gateway is not named).
            caller, (record, commune) = await self.gate.caller_reading(context, VIEWER, None, load)
            if problem or not request.command_id:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, problem or "command_id: must not be empty"
                )
            if record is None or not caller.in_scope(commune):
                await context.abort(grpc.StatusCode.NOT_FOUND, "command_id: no such command")
            if request.wait_ms and record.status == link_pb2.COMMAND_STATUS_PENDING:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(request.wait_ms / 1000):
                        await answered.wait()
                record = await self.runner.read(store.get_command, request.command_id) or record
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
