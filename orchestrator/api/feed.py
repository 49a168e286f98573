"""The admin API's event calls: a page of stored events, and the live feed.

Every role reads, within its communes; the live feed re-reads the caller's scope every
second (:class:`orchestrator.access.gate.LiveScope`) and ends when its certificate is
revoked (:meth:`orchestrator.ingest.hub.Hub.drop_certificate`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import grpc

from orchestrator.access.gate import SCOPE_RECHECK_S, VIEWER, Gatekeeper, LiveScope
from orchestrator.ingest.checks import MAX_STORED_INT, stored_event
from orchestrator.ingest.hub import Hub, Watcher
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import control_pb2, link_pb2

Context = grpc.aio.ServicerContext[Any, Any]


class EventFeed:
    """ListEvents, WatchEvents."""

    def __init__(self, *, runner: StoreRunner, gate: Gatekeeper, hub: Hub) -> None:
        self.runner = runner
        self.gate = gate
        self.hub = hub

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
        store = self.runner.store
        limit = min(request.limit or 100, 1000)
        records = await self.runner.read(
            store.list_events,
            request.gateway_id,
            after_sequence=request.after_sequence,
            limit=limit,
            newest_first=request.newest_first,
            priorities=list(request.priorities),
            types=list(request.types),
        )
        visible_ids = await self.gate.visible_gateways(caller)
        return control_pb2.ListEventsResponse(
            events=[
                stored_event(
                    r.gateway_id, link_pb2.Event.FromString(r.payload), r.received_at, r.copy_of
                )
                for r in records
                if r.gateway_id in visible_ids
            ]
        )

    async def WatchEvents(
        self, request: control_pb2.WatchEventsRequest, context: Context
    ) -> AsyncGenerator[control_pb2.WatchEventsResponse, None]:
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
        self.hub.watch(watcher)
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
            self.hub.unwatch(watcher)


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
