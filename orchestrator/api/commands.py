"""The admin API's command calls: queue a command for a gateway (checked field by field,
expiring within a week, never run twice), read its status.

Sending is for operators within their communes and is audited; the command reaches the
gateway through whichever replica holds its stream (:mod:`orchestrator.ingest.routing`).
"""

from __future__ import annotations

import functools
import uuid
from datetime import timedelta
from typing import Any

import grpc

from foundation.clock import Clock
from orchestrator.access.gate import OPERATOR, VIEWER, Attempt, Gatekeeper
from orchestrator.fleet.documents import validate_override
from orchestrator.fleet.overrides import LIVE_STATUSES, active_overrides, unknown_device
from orchestrator.ingest.checks import MAX_ID, WireError, timestamp
from orchestrator.ingest.devices import current_devices
from orchestrator.ingest.routing import Router
from orchestrator.store.connection import Connection
from orchestrator.store.database import CommandRecord, Conflict, NotFound
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import control_pb2, link_pb2, state_pb2

Context = grpc.aio.ServicerContext[Any, Any]

MAX_COMMAND_TTL = timedelta(days=7)
MAX_COMMAND_ID = 64


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
        problem = _check_command(command, now)
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
        try:
            await self.runner.write(
                store.add_command,
                command_id=command.command_id,
                gateway_id=request.gateway_id,
                payload=command.SerializeToString(),
                expires_at=command.expires_at.ToDatetime(tzinfo=now.tzinfo),
                status=link_pb2.COMMAND_STATUS_PENDING,
                created_by=caller.actor,
                now=now,
            )
        except NotFound as exc:
            await self.gate.refuse(context, caller, attempt, grpc.StatusCode.NOT_FOUND, str(exc))
        except Conflict as exc:
            # Command ids are unique: a replayed command is refused, never run twice.
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.ALREADY_EXISTS, str(exc)
            )
        await self.gate.done(caller, attempt, command.WhichOneof("action") or "")
        # Delivered now by whichever replica holds the gateway's stream (or at its hello).
        await self.router.commands_queued(request.gateway_id)
        return control_pb2.SendCommandResponse(command_id=command.command_id)

    async def GetCommand(
        self, request: control_pb2.GetCommandRequest, context: Context
    ) -> control_pb2.GetCommandResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        problem = _check_command_id(request.command_id, "command_id")
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


def _check_command_id(value: str, field: str) -> str:
    if len(value) > MAX_COMMAND_ID or not value.isprintable():
        return f"{field}: at most {MAX_COMMAND_ID} printable characters"
    return ""


def _check_command(command: link_pb2.Command, now: Any) -> str:
    problem = _check_command_envelope(command, now)
    if problem:
        return problem
    action = command.WhichOneof("action")
    if action == "override":
        try:
            validate_override(command.override)
        except WireError as exc:
            return str(exc)
    elif action == "bollard":
        order = command.bollard
        if (
            not order.device_id
            or len(order.device_id) > MAX_ID
            or not order.device_id.isprintable()
        ):
            return f"command.bollard.device_id: 1 to {MAX_ID} printable characters"
        if order.action not in link_pb2.BollardAction.values() or order.action == 0:
            return "command.bollard.action: unknown action"
    elif action == "cancel_override" and (
        not command.cancel_override or len(command.cancel_override) > MAX_ID
    ):
        return f"command.cancel_override: 1 to {MAX_ID} characters (an override id)"
    return ""


def _check_command_envelope(command: link_pb2.Command, now: Any) -> str:
    problem = _check_command_id(command.command_id, "command.command_id")
    if problem:
        return problem
    if not command.HasField("expires_at"):
        return "command.expires_at: required (commands never wait forever)"
    try:
        expires = command.expires_at.ToDatetime(tzinfo=now.tzinfo)
    except (ValueError, OverflowError):
        return "command.expires_at: not a valid instant"
    if expires <= now:
        return "command.expires_at: already past (an expired command is never sent)"
    if expires - now > MAX_COMMAND_TTL:
        return "command.expires_at: more than 7 days ahead"
    if command.WhichOneof("action") is None:
        return "command.action: missing"
    return ""
