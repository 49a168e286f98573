"""ControlCentre: the admin API the CLI and the dashboard use.

Callers are operators, identified by their client certificate; their role (viewer,
operator, admin) and scope of communes come from the store. Every write lands in the
audit log with who, what, where, when and the result, refused attempts included.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

import grpc
import sqlalchemy as sa

from orchestrator.app import Orchestrator
from orchestrator.auth import AuthError, Peer, peer_of, require_role
from orchestrator.devices import current_devices
from orchestrator.hub import Watcher
from orchestrator.link import send_newer_documents
from orchestrator.store.store import (
    Conflict,
    GatewayRecord,
    NotFound,
    OperatorRecord,
    StoreError,
)
from orchestrator.validation import validate_document, validate_override
from orchestrator.wire import WireError, document_message, stored_event, timestamp
from protos.ondijon.v1 import control_pb2, control_pb2_grpc, link_pb2
from provisioning.identity import IdentityError, Role, check_name
from provisioning.tokens import new_token

log = logging.getLogger("ondijon.orchestrator.control")

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
_RANK = {VIEWER: 0, OPERATOR: 1, ADMIN: 2}
MAX_COMMAND_TTL = timedelta(days=7)


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ControlCentreService(control_pb2_grpc.ControlCentreServicer):
    def __init__(self, app: Orchestrator) -> None:
        self.app = app

    # -- who may do what ---------------------------------------------------------------

    async def _operator(self, context: Context, needed: str) -> tuple[Peer, OperatorRecord]:
        try:
            peer = peer_of(context)
            require_role(peer, Role.OPERATOR)
            await self.app.check_certificate(peer)
        except AuthError as exc:
            await context.abort(exc.code, str(exc))
        store = self.app.runner.store
        record = await self.app.runner.read(lambda c: store.get_operator(c, peer.identity.name))
        if record is None or record.disabled:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "operator is not registered")
        if _RANK.get(record.role, -1) < _RANK[needed]:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"role {record.role} may not do this (needs {needed})",
            )
        return peer, record

    @staticmethod
    def _in_scope(operator: OperatorRecord, commune: str) -> bool:
        return "*" in operator.communes or commune in operator.communes

    async def _gateway(
        self, context: Context, operator: OperatorRecord, gateway_id: str
    ) -> GatewayRecord:
        store = self.app.runner.store
        try:
            gateway = await self.app.runner.read(lambda c: store.get_gateway(c, gateway_id))
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        if not self._in_scope(operator, gateway.commune):
            # Same answer as a missing gateway: scope must not leak what exists elsewhere.
            await context.abort(grpc.StatusCode.NOT_FOUND, f"gateway_id: no gateway {gateway_id!r}")
        return gateway

    async def _audit(
        self,
        peer: Peer,
        action: str,
        target: str,
        commune: str,
        result: str,
        detail: str = "",
    ) -> None:
        store = self.app.runner.store
        now = self.app.clock.now()
        await self.app.runner.write(
            lambda c: store.audit(
                c,
                at=now,
                actor=str(peer.identity),
                action=action,
                target=target,
                commune=commune,
                result=result,
                detail=detail,
            )
        )

    async def _refuse(
        self,
        context: Context,
        peer: Peer,
        action: str,
        target: str,
        commune: str,
        code: grpc.StatusCode,
        message: str,
    ) -> NoReturn:
        await self._audit(peer, action, target, commune, "refused", message)
        await context.abort(code, message)
        raise AssertionError("unreachable")

    async def _gateway_message(self, record: GatewayRecord) -> control_pb2.Gateway:
        store = self.app.runner.store

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
            connected=self.app.hub.connected(record.gateway_id),
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
        peer, operator = await self._operator(context, ADMIN)
        action, target = "gateway.add", request.gateway_id
        try:
            _check_new_gateway(request)
        except (WireError, IdentityError) as exc:
            await self._refuse(
                context,
                peer,
                action,
                target,
                request.commune,
                grpc.StatusCode.INVALID_ARGUMENT,
                str(exc),
            )
        if not self._in_scope(operator, request.commune):
            await self._refuse(
                context,
                peer,
                action,
                target,
                request.commune,
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
            await self._refuse(
                context,
                peer,
                action,
                target,
                request.commune,
                grpc.StatusCode.ALREADY_EXISTS,
                str(exc),
            )
        await self._audit(peer, action, target, request.commune, "ok", f"serial {request.serial}")
        return control_pb2.AddGatewayResponse(
            gateway=await self._gateway_message(record),
            enrollment_token=token,
            token_expires_at=timestamp(now + ttl),
        )

    async def ListGateways(
        self, request: control_pb2.ListGatewaysRequest, context: Context
    ) -> control_pb2.ListGatewaysResponse:
        _, operator = await self._operator(context, VIEWER)
        store = self.app.runner.store
        records = await self.app.runner.read(lambda c: store.list_gateways(c, request.commune))
        visible = [r for r in records if self._in_scope(operator, r.commune)]
        return control_pb2.ListGatewaysResponse(
            gateways=[await self._gateway_message(r) for r in visible]
        )

    async def GetGateway(
        self, request: control_pb2.GetGatewayRequest, context: Context
    ) -> control_pb2.GetGatewayResponse:
        _, operator = await self._operator(context, VIEWER)
        record = await self._gateway(context, operator, request.gateway_id)
        return control_pb2.GetGatewayResponse(gateway=await self._gateway_message(record))

    async def ListDevices(
        self, request: control_pb2.ListDevicesRequest, context: Context
    ) -> control_pb2.ListDevicesResponse:
        _, operator = await self._operator(context, VIEWER)
        await self._gateway(context, operator, request.gateway_id)
        store = self.app.runner.store
        devices = await self.app.runner.read(
            lambda c: current_devices(store, c, request.gateway_id)
        )
        return control_pb2.ListDevicesResponse(devices=devices)

    # -- desired state ----------------------------------------------------------------------

    async def PutDesiredState(
        self, request: control_pb2.PutDesiredStateRequest, context: Context
    ) -> control_pb2.PutDesiredStateResponse:
        peer, operator = await self._operator(context, OPERATOR)
        gateway = await self._gateway(context, operator, request.gateway_id)
        kind_name = (
            link_pb2.DocumentKind.Name(request.kind)
            if request.kind in link_pb2.DocumentKind.values()
            else str(request.kind)
        )
        action, target = "desired_state.put", f"{request.gateway_id}/{kind_name}"
        try:
            validate_document(request.kind, request.payload)
        except (WireError, ValueError) as exc:
            await self._refuse(
                context,
                peer,
                action,
                target,
                gateway.commune,
                grpc.StatusCode.INVALID_ARGUMENT,
                str(exc),
            )
        digest = hashlib.sha256(request.payload).digest()
        now = self.app.clock.now()
        store = self.app.runner.store
        try:
            record = await self.app.runner.write(
                lambda c: store.put_document(
                    c,
                    gateway_id=request.gateway_id,
                    kind=request.kind,
                    digest=digest,
                    payload=request.payload,
                    expected_version=request.expected_version,
                    issued_by=str(peer.identity),
                    now=now,
                )
            )
        except Conflict as exc:
            await self._refuse(
                context,
                peer,
                action,
                target,
                gateway.commune,
                grpc.StatusCode.FAILED_PRECONDITION,
                str(exc),
            )
        await self._audit(peer, action, target, gateway.commune, "ok", f"version {record.version}")
        session = self.app.hub.session(request.gateway_id)
        if session is not None:
            held = await self.app.runner.read(lambda c: store.held_for(c, request.gateway_id))
            await send_newer_documents(self.app, session, {h.kind: h for h in held})
        return control_pb2.PutDesiredStateResponse(document=document_message(record))

    async def GetDesiredState(
        self, request: control_pb2.GetDesiredStateRequest, context: Context
    ) -> control_pb2.GetDesiredStateResponse:
        _, operator = await self._operator(context, VIEWER)
        await self._gateway(context, operator, request.gateway_id)
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
        peer, operator = await self._operator(context, OPERATOR)
        gateway = await self._gateway(context, operator, request.gateway_id)
        command = link_pb2.Command()
        command.CopyFrom(request.command)
        if not command.command_id:
            command.command_id = uuid.uuid4().hex
        action, target = "command.send", f"{request.gateway_id}/{command.command_id}"
        now = self.app.clock.now()
        problem = _check_command(command, now)
        if problem:
            await self._refuse(
                context,
                peer,
                action,
                target,
                gateway.commune,
                grpc.StatusCode.INVALID_ARGUMENT,
                problem,
            )
        store = self.app.runner.store
        session = self.app.hub.session(request.gateway_id)
        status = link_pb2.COMMAND_STATUS_PENDING
        try:
            await self.app.runner.write(
                lambda c: store.add_command(
                    c,
                    command_id=command.command_id,
                    gateway_id=request.gateway_id,
                    payload=command.SerializeToString(),
                    expires_at=command.expires_at.ToDatetime(tzinfo=now.tzinfo),
                    status=status,
                    created_by=str(peer.identity),
                    now=now,
                )
            )
        except (Conflict, StoreError) as exc:
            await self._refuse(
                context,
                peer,
                action,
                target,
                gateway.commune,
                grpc.StatusCode.ALREADY_EXISTS,
                str(exc),
            )
        await self._audit(
            peer, action, target, gateway.commune, "ok", command.WhichOneof("action") or ""
        )
        if session is not None:
            session.send(link_pb2.ConnectResponse(command=command))
            await self.app.runner.write(
                lambda c: store.set_command_status(
                    c,
                    command.command_id,
                    status=link_pb2.COMMAND_STATUS_DELIVERED,
                    detail="",
                    now=now,
                )
            )
        return control_pb2.SendCommandResponse(command_id=command.command_id)

    async def GetCommand(
        self, request: control_pb2.GetCommandRequest, context: Context
    ) -> control_pb2.GetCommandResponse:
        _, operator = await self._operator(context, VIEWER)
        store = self.app.runner.store
        record = await self.app.runner.read(lambda c: store.get_command(c, request.command_id))
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "command_id: no such command")
        await self._gateway(context, operator, record.gateway_id)
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
        _, operator = await self._operator(context, VIEWER)
        if request.gateway_id:
            await self._gateway(context, operator, request.gateway_id)
        store = self.app.runner.store
        limit = min(request.limit or 100, 1000)
        records = await self.app.runner.read(
            lambda c: store.list_events(
                c, request.gateway_id, after_sequence=request.after_sequence, limit=limit
            )
        )
        visible_ids = await self._visible_gateways(operator)
        return control_pb2.ListEventsResponse(
            events=[
                stored_event(r.gateway_id, link_pb2.Event.FromString(r.payload), r.received_at)
                for r in records
                if r.gateway_id in visible_ids
            ]
        )

    async def _visible_gateways(self, operator: OperatorRecord) -> set[str]:
        store = self.app.runner.store
        records = await self.app.runner.read(lambda c: store.list_gateways(c))
        return {r.gateway_id for r in records if self._in_scope(operator, r.commune)}

    async def WatchEvents(
        self, request: control_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[control_pb2.WatchEventsResponse]:
        _, operator = await self._operator(context, VIEWER)
        if request.gateway_id:
            await self._gateway(context, operator, request.gateway_id)
        visible = await self._visible_gateways(operator)
        watcher = Watcher(gateway_id=request.gateway_id, visible=visible.__contains__)
        self.app.hub.watch(watcher)
        try:
            while True:
                event = await watcher.queue.get()
                yield control_pb2.WatchEventsResponse(event=event)
        except asyncio.CancelledError:
            raise
        finally:
            self.app.hub.unwatch(watcher)


def _check_new_gateway(request: control_pb2.AddGatewayRequest) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    check_name("gateway_id", request.gateway_id)
    if not request.serial or len(request.serial) > 128:
        raise WireError("serial", "1 to 128 characters")
    if not request.commune or len(request.commune) > 128:
        raise WireError("commune", "1 to 128 characters")
    if not -90 <= request.latitude <= 90:
        raise WireError("latitude", "must be between -90 and 90")
    if not -180 <= request.longitude <= 180:
        raise WireError("longitude", "must be between -180 and 180")
    try:
        ZoneInfo(request.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise WireError("time_zone", f"{request.time_zone!r} is not an IANA time zone") from None
    if request.token_ttl_s > 30 * 86400:
        raise WireError("token_ttl_s", "at most 30 days")


def _check_command(command: link_pb2.Command, now: Any) -> str:
    problem = _check_command_envelope(command, now)
    if problem:
        return problem
    if command.WhichOneof("action") == "override":
        try:
            validate_override(command.override)
        except WireError as exc:
            return str(exc)
    return ""


def _check_command_envelope(command: link_pb2.Command, now: Any) -> str:
    if len(command.command_id) > 64 or not command.command_id.isprintable():
        return "command.command_id: at most 64 printable characters"
    if not command.HasField("expires_at"):
        return "command.expires_at: required (commands never wait forever)"
    expires = command.expires_at.ToDatetime(tzinfo=now.tzinfo)
    if expires <= now:
        return "command.expires_at: already past"
    if expires - now > MAX_COMMAND_TTL:
        return "command.expires_at: more than 7 days ahead"
    if command.WhichOneof("action") is None:
        return "command.action: missing"
    return ""
