"""Live updates for open pages: server-sent events from the admin API's event feed (which
sees every replica's events, within the operator's communes, re-checked every second),
and, for a cabinet page or a map zoomed in, the followed cabinets' device states as they
change, pushed from :class:`orchestrator.console.states.LiveStates` (at most one ``states``
frame every quarter second, only what changed; nothing is polled per console).

The followed cabinets are checked against the operator's scope when the feed opens (an
unknown or out-of-scope cabinet refuses the feed, as its page would), and every second
after: a commune leaving the scope stops that cabinet's states at once, a disabled or
demoted operator's feed ends (``event: end``).

The handler owns what it starts: the feed's pump task ends with the request (the browser
leaving, the feed refusing, the console stopping). The connection is looked at every
second, and a comment line every :data:`HEARTBEAT_S` finds a browser gone away without a
word. A browser that reads slowly slows only its own feed: events wait in a bounded queue
(the newest dropped when it is full), states as the latest per device.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from orchestrator.access.gate import SCOPE_RECHECK_S, VIEWER, Gatekeeper, LiveScope
from orchestrator.access.peers import Refused
from orchestrator.console.citymap import gateway_list
from orchestrator.console.pages import event_item
from orchestrator.console.services import Context, ControlCalls
from orchestrator.console.states import Frame, LiveStates
from protos.ondijon.v1 import control_pb2

HEARTBEAT_S = 15.0
QUEUE_SIZE = 1000


async def live_feed(
    request: web.Request,
    control: ControlCalls,
    gate: Gatekeeper,
    states: LiveStates,
    call: Context,
) -> web.StreamResponse:
    gateway_id = request.query.get("gateway", "")
    # The cabinet page follows its cabinet; the map, the cabinets on screen.
    watched = [gateway_id] if gateway_id else gateway_list(request.query.get("gateways", ""))
    for watched_id in watched:
        # The same scope check as the page: an unknown or out-of-scope cabinet is refused.
        await control.GetGateway(control_pb2.GetGatewayRequest(gateway_id=watched_id), call)
    # The followed cabinets' states are offered within this feed's own scope, read again
    # every second (the event feed keeps its own).
    scope = None
    if watched:
        scope = LiveScope(gate, await gate.caller(call, VIEWER, None), VIEWER)
        await scope.refresh(call)
    zone = request.query.get("zone", "Europe/Paris")
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(QUEUE_SIZE)
    wake = asyncio.Event()

    def offer(kind: str, data: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a browser that cannot keep up
            queue.put_nowait((kind, data))
        wake.set()

    async def pump_events() -> None:
        feed = control.WatchEvents(control_pb2.WatchEventsRequest(gateway_id=gateway_id), call)
        async with contextlib.aclosing(feed) as responses:  # type: ignore[type-var]
            async for response in responses:
                ev = response.event
                offer(
                    "event",
                    {
                        "gateway": ev.gateway_id,
                        "sequence": ev.event.sequence,
                        "type": ev.event.type,
                        "device": ev.event.device_id,
                        "html": event_item(ev, zone),
                    },
                )

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    # The followed cabinets' frames wake the writer as an event does.
    follower = states.follow(watched, scope.visible, wake) if scope is not None else None
    tasks = [asyncio.create_task(pump_events(), name="console-live-events")]
    loop = asyncio.get_running_loop()
    try:
        await response.write(b": live\n\n")
        written = loop.time()
        while not any(t.done() for t in tasks):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), SCOPE_RECHECK_S)
            wake.clear()
            transport = request.transport
            if transport is None or transport.is_closing():
                break  # the browser went away (noticed within a second, not at a heartbeat)
            if scope is not None and follower is not None and scope.stale:
                # Read again before anything more is written (raises Refused if the
                # operator may no longer watch): what left the scope is withheld from now.
                await scope.refresh(call)
                states.rescope(follower)
            chunks = []
            while not queue.empty():
                kind, data = queue.get_nowait()
                chunks.append(_message(kind, data))
            frame = follower.take() if follower is not None else {}
            if frame:
                chunks.append(_message("states", {"gateways": _frame_json(frame)}))
            if chunks:
                await response.write(b"".join(chunks))
                written = loop.time()
            elif loop.time() - written >= HEARTBEAT_S:
                await response.write(b": heartbeat\n\n")
                written = loop.time()
    except ConnectionResetError:
        pass  # the browser went away
    except Refused:
        # The operator lost the right to watch (disabled, demoted): the page stops.
        with contextlib.suppress(ConnectionResetError):
            await response.write(b"event: end\ndata: {}\n\n")
    finally:
        if follower is not None:
            states.unfollow(follower)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Refused):
            # The event feed refused (the operator disabled, its certificate revoked).
            with contextlib.suppress(ConnectionResetError):
                await response.write(b"event: end\ndata: {}\n\n")
    return response


def _message(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=True)}\n\n".encode()


def _frame_json(frame: Frame) -> dict[str, dict[str, list[str]]]:
    """cabinet -> device -> [text, colour code]."""
    return {
        gateway_id: {device_id: [text, code] for device_id, (text, code) in devices.items()}
        for gateway_id, devices in frame.items()
    }
