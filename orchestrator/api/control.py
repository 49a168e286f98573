"""ControlCentre: the admin API the CLI and the dashboard use.

Callers are operators, identified by their client certificate; their role (viewer,
operator, admin) and scope of communes come from the store at every call
(:mod:`orchestrator.access.gate`). Every write lands in the audit log with who, what, where,
when and the result, refused attempts included. Every field of a request is checked, and
a refusal names the field and changes nothing.

Identity administration (revocation, enrollment tokens, the audit log itself) is in
:mod:`orchestrator.identity.admin`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, TypeVar

import grpc
import sqlalchemy as sa

from foundation.errors import FieldError
from orchestrator.access.certificates import Orchestrator
from orchestrator.access.gate import (
    ADMIN,
    OPERATOR,
    SCOPE_RECHECK_S,
    VIEWER,
    Attempt,
    Gatekeeper,
    LiveScope,
)
from orchestrator.fleet.documents import check_document, reported_cards, validate_override
from orchestrator.fleet.overrides import LIVE_STATUSES, active_overrides, unknown_device
from orchestrator.identity import admin as identity_admin
from orchestrator.ingest.checks import (
    MAX_ID,
    MAX_STORED_INT,
    WireError,
    document_message,
    stored_event,
    timestamp,
)
from orchestrator.ingest.devices import current_devices
from orchestrator.ingest.hub import Watcher
from orchestrator.store.database import CommandRecord, Conflict, GatewayRecord, NotFound
from protos.ondijon.v1 import control_pb2, control_pb2_grpc, link_pb2
from provisioning.identity import IdentityError, check_name
from provisioning.tokens import new_token

log = logging.getLogger("ondijon.orchestrator.control")

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]

MAX_COMMAND_TTL = timedelta(days=7)
MAX_COMMAND_ID = 64


class ControlCentreService(control_pb2_grpc.ControlCentreServicer):
    def __init__(self, app: Orchestrator) -> None:
        self.app = app
        self.gate = Gatekeeper(app)

    async def _connected(self) -> dict[str, str]:
        """Gateway id -> replica, for every gateway whose stream some replica holds: the
        store's view, the same whichever replica answers."""
        store, since = self.app.runner.store, self.app.router.live_since()
        return await self.app.runner.read(lambda c: store.live_streams(c, seen_since=since))

    async def _gateway_message(
        self, record: GatewayRecord, connected: dict[str, str] | None = None
    ) -> control_pb2.Gateway:
        store = self.app.runner.store
        if connected is None:
            connected = await self._connected()

        def load(c: sa.Connection) -> tuple[Any, ...]:
            return (
                store.held_for(c, record.gateway_id),
                store.documents_for(c, record.gateway_id),
                store.stored_sequence(c, record.gateway_id),
                store.missing_ranges(c, record.gateway_id),
            )

        held, desired, stored, missing = await self.app.runner.read(load)
        message = control_pb2.Gateway(
            gateway_id=record.gateway_id,
            serial=record.serial,
            commune=record.commune,
            latitude=record.latitude,
            longitude=record.longitude,
            time_zone=record.time_zone,
            tags=list(record.tags),
            connected=record.gateway_id in connected,
            firmware_version=record.firmware_version,
            enrolled=record.enrolled_at is not None,
            held=[
                link_pb2.HeldDocument(kind=h.kind, version=h.version, digest=h.digest) for h in held
            ],
            desired=[
                link_pb2.HeldDocument(kind=d.kind, version=d.version, digest=d.digest)
                for d in desired
            ],
            stored_sequence=stored,
            missing=[link_pb2.SequenceRange(first=a, last=b) for a, b in missing],
        )
        if record.last_seen is not None:
            message.last_seen.CopyFrom(timestamp(record.last_seen))
        return message

    # -- gateways -------------------------------------------------------------------------

    async def AddGateway(
        self, request: control_pb2.AddGatewayRequest, context: Context
    ) -> control_pb2.AddGatewayResponse:
        attempt = Attempt("gateway.add", request.gateway_id, request.commune)
        caller = await self.gate.caller(context, ADMIN, attempt)
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        try:
            _check_new_gateway(request)
        except (WireError, IdentityError) as exc:
            await self.gate.refuse(context, caller, attempt, invalid, str(exc))
        if not caller.in_scope(request.commune):
            await self.gate.refuse(
                context,
                caller,
                attempt,
                grpc.StatusCode.PERMISSION_DENIED,
                f"commune: {request.commune!r} is outside your scope",
            )
        now = self.app.clock.now()
        ttl = timedelta(seconds=request.token_ttl_s or self.app.config.token_ttl_hours * 3600)
        token, digest = new_token()
        store = self.app.runner.store

        def add(c: sa.Connection) -> GatewayRecord:
            record = store.add_gateway(
                c,
                gateway_id=request.gateway_id,
                serial=request.serial,
                commune=request.commune,
                latitude=request.latitude,
                longitude=request.longitude,
                time_zone=request.time_zone,
                tags=list(request.tags),
                now=now,
            )
            store.add_token(
                c,
                token_sha256=digest,
                gateway_id=request.gateway_id,
                serial=request.serial,
                expires_at=now + ttl,
            )
            return record

        try:
            record = await self.app.runner.write(add)
        except Conflict as exc:
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.ALREADY_EXISTS, str(exc)
            )
        await self.gate.done(caller, attempt, f"serial {request.serial}")
        return control_pb2.AddGatewayResponse(
            gateway=await self._gateway_message(record),
            enrollment_token=token,
            token_expires_at=timestamp(now + ttl),
        )

    async def ListGateways(
        self, request: control_pb2.ListGatewaysRequest, context: Context
    ) -> control_pb2.ListGatewaysResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        if len(request.commune) > 128:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "commune: longer than 128 characters"
            )
        store = self.app.runner.store
        records = await self.app.runner.read(lambda c: store.list_gateways(c, request.commune))
        visible = [r for r in records if caller.in_scope(r.commune)]
        connected = await self._connected()
        return control_pb2.ListGatewaysResponse(
            gateways=[await self._gateway_message(r, connected) for r in visible]
        )

    async def GetGateway(
        self, request: control_pb2.GetGatewayRequest, context: Context
    ) -> control_pb2.GetGatewayResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        record = await self.gate.gateway(context, caller, request.gateway_id, None)
        return control_pb2.GetGatewayResponse(gateway=await self._gateway_message(record))

    async def ListDevices(
        self, request: control_pb2.ListDevicesRequest, context: Context
    ) -> control_pb2.ListDevicesResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        await self.gate.gateway(context, caller, request.gateway_id, None)
        store = self.app.runner.store
        devices = await self.app.runner.read(
            lambda c: current_devices(store, c, request.gateway_id)
        )
        return control_pb2.ListDevicesResponse(devices=devices)

    # -- desired state ----------------------------------------------------------------------

    async def PutDesiredState(
        self, request: control_pb2.PutDesiredStateRequest, context: Context
    ) -> control_pb2.PutDesiredStateResponse:
        kind_name = (
            link_pb2.DocumentKind.Name(request.kind)
            if request.kind in link_pb2.DocumentKind.values()
            else str(request.kind)
        )
        attempt = Attempt("desired_state.put", f"{request.gateway_id}/{kind_name}")
        caller = await self.gate.caller(context, OPERATOR, attempt)
        gateway = await self.gate.gateway(context, caller, request.gateway_id, attempt)
        attempt = Attempt(attempt.action, attempt.target, gateway.commune)
        store = self.app.runner.store
        cards = []
        if request.kind == link_pb2.DOCUMENT_KIND_SIGNAL_PLANS:
            # The crossings' safety cards, as the gateway reported them with its state.
            devices = await self.app.runner.read(
                lambda c: current_devices(store, c, request.gateway_id)
            )
            cards = reported_cards(devices)
        try:
            document = check_document(request.kind, request.payload, cards)
        except (FieldError, ValueError) as exc:
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.INVALID_ARGUMENT, str(exc)
            )
        now = self.app.clock.now()
        try:
            record = await self.app.runner.write(
                lambda c: store.put_document(
                    c,
                    gateway_id=request.gateway_id,
                    kind=document.kind.number,
                    digest=document.digest,
                    payload=document.payload,
                    expected_version=request.expected_version,
                    issued_by=caller.actor,
                    now=now,
                )
            )
        except Conflict as exc:
            # A stale expected_version: the operator edited an older version.
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.FAILED_PRECONDITION, str(exc)
            )
        await self.gate.done(caller, attempt, f"version {record.version}")
        # Delivered now by whichever replica holds the gateway's stream (or at its hello).
        await self.app.router.documents_changed(request.gateway_id)
        return control_pb2.PutDesiredStateResponse(document=document_message(record))

    async def GetDesiredState(
        self, request: control_pb2.GetDesiredStateRequest, context: Context
    ) -> control_pb2.GetDesiredStateResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        await self.gate.gateway(context, caller, request.gateway_id, None)
        if request.kind not in link_pb2.DocumentKind.values() or request.kind == 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "kind: unknown document kind")
        store = self.app.runner.store
        record = await self.app.runner.read(
            lambda c: store.get_document(c, request.gateway_id, request.kind)
        )
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "kind: no document of that kind yet")
        return control_pb2.GetDesiredStateResponse(document=document_message(record))

    # -- commands ------------------------------------------------------------------------------

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
        now = self.app.clock.now()
        problem = _check_command(command, now)
        store = self.app.runner.store
        if not problem and command.WhichOneof("action") in ("override", "bollard"):
            devices = await self.app.runner.read(
                lambda c: current_devices(store, c, request.gateway_id)
            )
            problem = unknown_device(command, request.gateway_id, devices)
        if problem:
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.INVALID_ARGUMENT, problem
            )
        try:
            await self.app.runner.write(
                lambda c: store.add_command(
                    c,
                    command_id=command.command_id,
                    gateway_id=request.gateway_id,
                    payload=command.SerializeToString(),
                    expires_at=command.expires_at.ToDatetime(tzinfo=now.tzinfo),
                    status=link_pb2.COMMAND_STATUS_PENDING,
                    created_by=caller.actor,
                    now=now,
                )
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
        await self.app.router.commands_queued(request.gateway_id)
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
        store = self.app.runner.store

        def load(c: sa.Connection) -> tuple[CommandRecord | None, str]:
            record = store.get_command(c, request.command_id)
            try:
                commune = store.get_gateway(c, record.gateway_id if record else "").commune
            except NotFound:
                commune = ""
            return record, commune

        # One read either way, and one answer: a command of a gateway outside the caller's
        # communes is answered exactly like a missing one (its gateway is not named).
        record, commune = await self.app.runner.read(load)
        if record is None or not caller.in_scope(commune):
            await context.abort(grpc.StatusCode.NOT_FOUND, "command_id: no such command")
        return control_pb2.GetCommandResponse(
            command_id=record.command_id,
            gateway_id=record.gateway_id,
            status=record.status,  # type: ignore[arg-type]
            detail=record.detail,
            expires_at=timestamp(record.expires_at),
        )

    # -- events --------------------------------------------------------------------------------

    async def ListEvents(
        self, request: control_pb2.ListEventsRequest, context: Context
    ) -> control_pb2.ListEventsResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        if request.gateway_id:
            await self.gate.gateway(context, caller, request.gateway_id, None)
        if request.after_sequence > MAX_STORED_INT:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"after_sequence: at most {MAX_STORED_INT}"
            )
        problem = _check_event_filters(request)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        store = self.app.runner.store
        limit = min(request.limit or 100, 1000)
        records = await self.app.runner.read(
            lambda c: store.list_events(
                c,
                request.gateway_id,
                after_sequence=request.after_sequence,
                limit=limit,
                newest_first=request.newest_first,
                priorities=list(request.priorities),
                types=list(request.types),
            )
        )
        visible_ids = await self.gate.visible_gateways(caller)
        return control_pb2.ListEventsResponse(
            events=[
                stored_event(r.gateway_id, link_pb2.Event.FromString(r.payload), r.received_at)
                for r in records
                if r.gateway_id in visible_ids
            ]
        )

    async def WatchEvents(
        self, request: control_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[control_pb2.WatchEventsResponse]:
        caller = await self.gate.caller(context, VIEWER, None)
        if request.gateway_id:
            await self.gate.gateway(context, caller, request.gateway_id, None)
        scope = LiveScope(self.gate, caller, VIEWER)
        await scope.refresh(context)
        task = asyncio.current_task()

        def cancel() -> None:
            if task is not None:
                task.cancel()

        # Revoking the operator's certificate ends the feed (Hub.drop_certificate).
        watcher = Watcher(
            gateway_id=request.gateway_id,
            visible=scope.visible,
            cert_serial=caller.peer.serial_hex,
            cancel=cancel,
        )
        self.app.hub.watch(watcher)
        try:
            while True:
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), SCOPE_RECHECK_S)
                except TimeoutError:
                    event = None
                # The operator's communes may have changed since the feed opened: what
                # left its scope stops now, not at the next reconnection.
                if scope.stale:
                    await scope.refresh(context)
                if event is not None and scope.visible(event.gateway_id):
                    yield control_pb2.WatchEventsResponse(event=event)
        finally:
            self.app.hub.unwatch(watcher)

    # -- identities and the audit log (orchestrator.identity.admin) ---------------------------

    async def RevokeGateway(
        self, request: control_pb2.RevokeGatewayRequest, context: Context
    ) -> control_pb2.RevokeGatewayResponse:
        return await identity_admin.revoke_gateway(self.gate, request, context)

    async def IssueEnrollmentToken(
        self, request: control_pb2.IssueEnrollmentTokenRequest, context: Context
    ) -> control_pb2.IssueEnrollmentTokenResponse:
        return await identity_admin.issue_token(self.gate, request, context)

    async def ListAudit(
        self, request: control_pb2.ListAuditRequest, context: Context
    ) -> control_pb2.ListAuditResponse:
        return await identity_admin.list_audit(self.gate, request, context)

    # -- overrides ------------------------------------------------------------------------------

    async def ListOverrides(
        self, request: control_pb2.ListOverridesRequest, context: Context
    ) -> control_pb2.ListOverridesResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        await self.gate.gateway(context, caller, request.gateway_id, None)
        store = self.app.runner.store

        def load(c: sa.Connection) -> tuple[list[CommandRecord], list[Any]]:
            return (
                store.recent_commands(c, request.gateway_id, LIVE_STATUSES, limit=1000),
                current_devices(store, c, request.gateway_id),
            )

        records, devices = await self.app.runner.read(load)
        commands = [(r.command_id, r.status, r.detail, r.created_by, r.payload) for r in records]
        return control_pb2.ListOverridesResponse(
            overrides=active_overrides(commands, devices, self.app.clock.now())
        )


def _check_new_gateway(request: control_pb2.AddGatewayRequest) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    check_name("gateway_id", request.gateway_id)
    if not request.serial or len(request.serial) > 128 or not request.serial.isprintable():
        raise WireError("serial", "1 to 128 printable characters")
    if not request.commune or len(request.commune) > 128 or not request.commune.isprintable():
        raise WireError("commune", "1 to 128 printable characters")
    if request.commune == "*":
        raise WireError("commune", "'*' means every commune in a scope, it is not a commune")
    if not -90 <= request.latitude <= 90:
        raise WireError("latitude", "must be between -90 and 90")
    if not -180 <= request.longitude <= 180:
        raise WireError("longitude", "must be between -180 and 180")
    if len(request.time_zone) > 64:
        raise WireError("time_zone", "longer than 64 characters")
    try:
        ZoneInfo(request.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise WireError("time_zone", f"{request.time_zone!r} is not an IANA time zone") from None
    if len(request.tags) > 32:
        raise WireError("tags", "more than 32 tags")
    for i, tag in enumerate(request.tags):
        if not tag or len(tag) > 64 or not tag.isprintable():
            raise WireError(f"tags[{i}]", "1 to 64 printable characters")
    if request.token_ttl_s > 30 * 86400:
        raise WireError("token_ttl_s", "at most 30 days")


def _check_event_filters(request: control_pb2.ListEventsRequest) -> str:
    for index, priority in enumerate(request.priorities):
        if priority not in link_pb2.EventPriority.values() or priority == 0:
            return f"priorities[{index}]: unknown event priority {priority}"
    if len(request.types) > 16:
        return "types: at most 16"
    for index, kind in enumerate(request.types):
        if not kind or len(kind) > 128 or not kind.isprintable():
            return f"types[{index}]: 1 to 128 printable characters"
    return ""


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
