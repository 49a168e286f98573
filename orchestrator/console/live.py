"""Live updates for open pages: server-sent events from the admin API's event feed (which
sees every replica's events, within the operator's communes, re-checked every second),
and, for a cabinet page, its devices' state whenever it changes.

The handler owns what it starts: the feed's pump task ends with the request (the browser
leaving, the feed refusing, the console stopping). A comment line every
:data:`HEARTBEAT_S` finds a browser gone away without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from orchestrator.access.peers import Refused
from orchestrator.console.citymap import gateway_list
from orchestrator.console.pages import device_code, device_summary, event_item
from orchestrator.console.services import Context, ControlCalls
from protos.ondijon.v1 import control_pb2

HEARTBEAT_S = 15.0
DEVICE_POLL_S = 0.5
QUEUE_SIZE = 1000


async def live_feed(
    request: web.Request, control: ControlCalls, call: Context
) -> web.StreamResponse:
    gateway_id = request.query.get("gateway", "")
    # The cabinet page follows its cabinet; the map, the cabinets on screen.
    watched = [gateway_id] if gateway_id else gateway_list(request.query.get("gateways", ""))
    for watched_id in watched:
        # The same scope check as the page: an unknown or out-of-scope cabinet is refused.
        await control.GetGateway(control_pb2.GetGatewayRequest(gateway_id=watched_id), call)
    zone = request.query.get("zone", "Europe/Paris")
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(QUEUE_SIZE)

    def offer(kind: str, data: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a browser that cannot keep up
            queue.put_nowait((kind, data))

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

    async def pump_devices() -> None:
        seen: dict[str, dict[str, str]] = {}
        while True:
            for watched_id in watched:
                listed = await control.ListDevices(
                    control_pb2.ListDevicesRequest(gateway_id=watched_id), call
                )
                now = {d.device_id: device_summary(d) for d in listed.devices}
                before = seen.get(watched_id, {})
                changed = {k: v for k, v in now.items() if before.get(k) != v}
                if changed:
                    codes = {d.device_id: device_code(d) for d in listed.devices}
                    offer(
                        "devices",
                        {
                            "gateway": watched_id,
                            "devices": changed,
                            "codes": {k: codes[k] for k in changed},
                        },
                    )
                    seen[watched_id] = now
            await asyncio.sleep(DEVICE_POLL_S)

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    tasks = [asyncio.create_task(pump_events(), name="console-live-events")]
    if watched:
        tasks.append(asyncio.create_task(pump_devices(), name="console-live-devices"))
    try:
        await response.write(b": live\n\n")
        while not any(t.done() for t in tasks):
            try:
                kind, data = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                await response.write(b": heartbeat\n\n")
                continue
            payload = json.dumps(data, ensure_ascii=True)
            await response.write(f"event: {kind}\ndata: {payload}\n\n".encode())
    except ConnectionResetError:
        pass  # the browser went away
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Refused):
            # The operator lost the right to watch (disabled, revoked): the page stops.
            with contextlib.suppress(ConnectionResetError):
                await response.write(b"event: end\ndata: {}\n\n")
    return response
