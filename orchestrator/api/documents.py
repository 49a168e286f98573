"""The admin API's desired-state calls: put a document (checked once, by the shared
domain, against the crossings' safety cards the gateway reported), read it back.

Putting is for operators within their communes and is audited; the document reaches the
gateway through whichever replica holds its stream (:mod:`orchestrator.ingest.routing`).
"""

from __future__ import annotations

import functools
from typing import Any

import grpc

from foundation.clock import Clock
from foundation.errors import FieldError
from orchestrator.access.gate import OPERATOR, VIEWER, Attempt, Gatekeeper
from orchestrator.fleet.documents import check_document, reported_cards
from orchestrator.ingest.checks import document_message
from orchestrator.ingest.devices import current_devices
from orchestrator.ingest.routing import Router
from orchestrator.store.database import Conflict
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import control_pb2, link_pb2

Context = grpc.aio.ServicerContext[Any, Any]


class DocumentsApi:
    """PutDesiredState, GetDesiredState."""

    def __init__(
        self, *, runner: StoreRunner, clock: Clock, gate: Gatekeeper, router: Router
    ) -> None:
        self.runner = runner
        self.clock = clock
        self.gate = gate
        self.router = router

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
        store = self.runner.store
        cards = []
        if request.kind == link_pb2.DOCUMENT_KIND_SIGNAL_PLANS:
            # The crossings' safety cards, as the gateway reported them with its state.
            devices = await self.runner.read(
                functools.partial(current_devices, store), request.gateway_id
            )
            cards = reported_cards(devices)
        try:
            document = check_document(request.kind, request.payload, cards)
        except (FieldError, ValueError) as exc:
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.INVALID_ARGUMENT, str(exc)
            )
        now = self.clock.now()
        try:
            record = await self.runner.write(
                store.put_document,
                gateway_id=request.gateway_id,
                kind=document.kind.number,
                digest=document.digest,
                payload=document.payload,
                expected_version=request.expected_version,
                issued_by=caller.actor,
                now=now,
            )
        except Conflict as exc:
            # A stale expected_version: the operator edited an older version.
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.FAILED_PRECONDITION, str(exc)
            )
        await self.gate.done(caller, attempt, f"version {record.version}")
        # Delivered now by whichever replica holds the gateway's stream (or at its hello).
        await self.router.documents_changed(request.gateway_id)
        return control_pb2.PutDesiredStateResponse(document=document_message(record))

    async def GetDesiredState(
        self, request: control_pb2.GetDesiredStateRequest, context: Context
    ) -> control_pb2.GetDesiredStateResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        await self.gate.gateway(context, caller, request.gateway_id, None)
        if request.kind not in link_pb2.DocumentKind.values() or request.kind == 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "kind: unknown document kind")
        store = self.runner.store
        record = await self.runner.read(store.get_document, request.gateway_id, request.kind)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "kind: no document of that kind yet")
        return control_pb2.GetDesiredStateResponse(document=document_message(record))
