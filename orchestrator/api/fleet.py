"""The admin API's fleet calls: register gateways, list and read them, list their devices.

Registering is for admins within their communes and is audited; reading is for every role,
within its communes (:mod:`orchestrator.access.gate`).
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc

from foundation.clock import Clock
from orchestrator.access.gate import ADMIN, VIEWER, Attempt, Gatekeeper
from orchestrator.ingest.checks import WireError, timestamp
from orchestrator.ingest.devices import current_devices
from orchestrator.ingest.routing import Router
from orchestrator.store import groups as group_sql
from orchestrator.store.connection import Connection
from orchestrator.store.database import (
    Conflict,
    DocumentRecord,
    GatewayRecord,
    HeldRecord,
)
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import control_pb2, link_pb2
from provisioning.identity import IdentityError, check_name
from provisioning.tokens import new_token

Context = grpc.aio.ServicerContext[Any, Any]


class FleetApi:
    """AddGateway, ListGateways, GetGateway, ListDevices."""

    def __init__(
        self,
        *,
        runner: StoreRunner,
        clock: Clock,
        gate: Gatekeeper,
        router: Router,
        token_ttl_hours: float,
    ) -> None:
        self.runner = runner
        self.clock = clock
        self.gate = gate
        self.router = router
        self.token_ttl_hours = token_ttl_hours

    async def _connected(self) -> dict[str, str]:
        """Gateway id -> replica, for every gateway whose stream some replica holds: the
        store's view, the same whichever replica answers."""
        store, since = self.runner.store, self.router.live_since()
        return await self.runner.read(store.live_streams, seen_since=since)

    async def _gateway_message(
        self, record: GatewayRecord, connected: dict[str, str] | None = None
    ) -> control_pb2.Gateway:
        return (await self._gateway_messages([record], connected))[0]

    async def _gateway_messages(
        self, records: list[GatewayRecord], connected: dict[str, str] | None = None
    ) -> list[control_pb2.Gateway]:
        """The messages of ``records``, their documents and sequences read at once (a
        listing of the whole city is a few queries, not a few per gateway)."""
        store = self.runner.store
        if connected is None:
            connected = await self._connected()
        ids = [r.gateway_id for r in records]

        def load(c: Connection) -> tuple[Any, ...]:
            return (
                store.held_of(c, ids),
                store.documents_of(c, ids),
                store.stored_sequences(c, ids),
                store.missing_ranges_of(c, ids),
            )

        held, desired, stored, missing = await self.runner.read(load)
        return [
            _message(r, connected, held[g], desired[g], stored[g], missing[g])
            for r, g in zip(records, ids, strict=True)
        ]

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
        now = self.clock.now()
        ttl = timedelta(seconds=request.token_ttl_s or self.token_ttl_hours * 3600)
        token, digest = new_token()
        store = self.runner.store

        def add(c: Connection) -> GatewayRecord:
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
            # A new gateway gets the group documents covering it (city, its commune, ...),
            # sent at its first hello.
            for kind in link_pb2.DocumentKind.values():
                group_sql.reconcile(c, kind, now=now, only=[request.gateway_id])
            return record

        try:
            record = await self.runner.write(add)
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
        store = self.runner.store
        records = await self.runner.read(store.list_gateways, request.commune)
        visible = [r for r in records if caller.in_scope(r.commune)]
        return control_pb2.ListGatewaysResponse(gateways=await self._gateway_messages(visible))

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
        store = self.runner.store
        devices = await self.runner.read(
            functools.partial(current_devices, store), request.gateway_id
        )
        return control_pb2.ListDevicesResponse(devices=devices)


def _message(
    record: GatewayRecord,
    connected: dict[str, str],
    held: list[HeldRecord],
    desired: list[DocumentRecord],
    stored: int,
    missing: list[tuple[int, int]],
) -> control_pb2.Gateway:
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
        held=[_held(h.kind, h.version, h.digest) for h in held],
        desired=[_held(d.kind, d.version, d.digest) for d in desired],
        stored_sequence=stored,
        missing=[link_pb2.SequenceRange(first=a, last=b) for a, b in missing],
    )
    if record.last_seen is not None:
        message.last_seen.CopyFrom(timestamp(record.last_seen))
    return message


def _held(kind: int, version: int, digest: bytes) -> link_pb2.HeldDocument:
    return link_pb2.HeldDocument(kind=kind, version=version, digest=digest)  # type: ignore[arg-type]


def _check_new_gateway(request: control_pb2.AddGatewayRequest) -> None:
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
