"""The admin API's command calls: queue a command for a gateway (checked field by field,
expiring within a week, never run twice), read its status.

Sending is for operators within their communes and is audited; the command reaches the
gateway through whichever replica holds its stream (:mod:`orchestrator.ingest.routing`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc

from foundation.clock import Clock
from orchestrator.access.gate import OPERATOR, VIEWER, Attempt, Caller, Gatekeeper
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


@dataclass(frozen=True)
class _Queued:
    """What SendCommand's transaction found: the gateway (``None``: there is none), and
    either why the command is refused or what the gateway is owed, the command queued."""

    gateway: GatewayRecord | None
    refused: grpc.StatusCode | None = None
    why: str = ""
    owed: list[CommandRecord] = field(default_factory=list)


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
        now = self.clock.now()
        problem = check_command(command, now)
        # A device the gateway does not report having is refused now, not stored,
        # delivered and reported done while changing nothing.
        checks_devices = command.WhichOneof("action") in ("override", "bollard")

        def queue(conn: Connection, caller: Caller) -> _Queued:
            # Checked and queued in one transaction, the caller's registration read in it.
            gateway = gate.read_gateway(conn, gateway_id)
            if gateway is None or not caller.in_scope(gateway.commune):
                return _Queued(gateway)  # refused below, as the gate refuses
            found = problem
            if not found and checks_devices:
                devices = current_devices(store, conn, gateway_id)
                found = unknown_device(command, gateway_id, devices)
            if found:
                return _Queued(gateway, grpc.StatusCode.INVALID_ARGUMENT, found)
            try:
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
            except Conflict as exc:
                # Command ids are unique: a replayed command is refused, never run twice.
                return _Queued(gateway, grpc.StatusCode.ALREADY_EXISTS, str(exc))
            # With its audit entry, in one commit: a command is on its way to the street
            # one commit sooner, and never queued without its entry.
            done = Attempt(attempt.action, attempt.target, gateway.commune)
            gate.done_in(conn, caller, done, command.WhichOneof("action") or "")
            return _Queued(gateway, owed=router.commands_queued_in(conn, gateway_id))

        # One write of the store's first lane, ahead of the ingest's queued writes: an
        # operator is waiting, and the command is on its way once it returns.
        caller, queued = await gate.caller_writing(context, OPERATOR, attempt, queue)
        gateway = await gate.gateway_found(context, caller, gateway_id, queued.gateway, attempt)
        if queued.refused is not None:
            attempt = Attempt(attempt.action, attempt.target, gateway.commune)
            await gate.refuse(context, caller, attempt, queued.refused, queued.why)
        # Sent now if this replica holds the gateway's stream (the others were told on
        # commit; a gateway not connected is sent it at its hello).
        await router.send_commands(gateway_id, queued.owed)
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

        # One read with the caller's registration, and one answer: a command of a gateway
        # outside the caller's communes is answered exactly like a missing one (its
        # gateway is not named).
        caller, (record, commune) = await self.gate.caller_reading(context, VIEWER, None, load)
        if problem or not request.command_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, problem or "command_id: must not be empty"
            )
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
