"""The city map's data: every asset of the register at its position (lamps, cabinets,
crossings, bollard sites), coloured by state, in one compact answer the browser clusters.

At the city's scale the state comes from what is known without asking each cabinet: its
link (offline) and the open alarms (in alarm). Zoomed in, the page follows the devices'
own state of the cabinets on screen (lit, dimmed, off, failed), pushed on its live feed
(:mod:`orchestrator.console.live`); ``/devices.json`` answers the same for a script.
Everything is read through the admin API's services, within the operator's communes.
"""

from __future__ import annotations

from typing import Any

import grpc
from aiohttp import web

from orchestrator.access.peers import Refused
from orchestrator.console.pages import device_code
from orchestrator.console.services import Host
from protos.ondijon.v1 import control_pb2

PAGE = 1000
MAX_GATEWAYS = 50
MAX_UNPLACED = 200
# AssetKind -> the one letter the page keys its colours and shapes on.
KIND = {
    control_pb2.ASSET_KIND_LAMP: "l",
    control_pb2.ASSET_KIND_CABINET: "c",
    control_pb2.ASSET_KIND_CROSSING: "x",
    control_pb2.ASSET_KIND_BOLLARD_SITE: "b",
}


def gateway_list(value: str) -> list[str]:
    ids = [g for g in value.split(",") if g][: MAX_GATEWAYS + 1]
    if len(ids) > MAX_GATEWAYS:
        raise Refused(
            grpc.StatusCode.INVALID_ARGUMENT, f"gateways: at most {MAX_GATEWAYS} at a time"
        )
    return ids


class CityMap:
    def __init__(self, console: Host) -> None:
        self.console = console

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/city.json", self.city)
        router.add_get("/devices.json", self.devices)

    async def city(self, request: web.Request) -> web.StreamResponse:
        """``gateways``: id -> [lat, lon, connected, commune]; ``assets``: [kind, lat, lon,
        gateway index, device id, state] with state ``a`` (in alarm), ``o`` (offline) or
        ``""`` (its own state not asked yet)."""
        c = self.console
        call = c.call(request)
        services = c.services
        # The fleet a page at a time (the unpaged listing reads every gateway's documents).
        index: dict[str, int] = {}
        gateways: list[list[Any]] = []
        page_token = ""
        while True:
            fleet = await services.city.ListFleet(
                control_pb2.ListFleetRequest(page_token=page_token, page_size=PAGE), call
            )
            for g in fleet.gateways:
                index[g.gateway_id] = len(gateways)
                gateways.append([g.gateway_id, 0.0, 0.0, g.connected, g.commune])
            page_token = fleet.next_page_token
            if not page_token:
                break
        in_alarm: set[tuple[str, str]] = set()
        after = 0
        while True:
            alarms = await services.operations.ListAlarms(
                control_pb2.ListAlarmsRequest(include_grouped=True, after_id=after, limit=1000),
                call,
            )
            in_alarm.update((a.gateway_id, a.device_id) for a in alarms.alarms)
            if len(alarms.alarms) < 1000:
                break
            after = alarms.next_after_id
        assets: list[list[Any]] = []
        token = ""
        while True:
            page = await services.city.ListAssets(
                control_pb2.ListAssetsRequest(page_token=token, page_size=PAGE), call
            )
            for a in page.assets:
                n = index.get(a.gateway_id)
                if n is None or not (a.latitude or a.longitude):
                    continue
                if a.kind == control_pb2.ASSET_KIND_CABINET:
                    gateways[n][1:3] = [round(a.latitude, 6), round(a.longitude, 6)]
                if (a.gateway_id, a.device_id) in in_alarm or (
                    a.kind == control_pb2.ASSET_KIND_CABINET and (a.gateway_id, "") in in_alarm
                ):
                    state = "a"
                elif not gateways[n][3]:
                    state = "o"
                else:
                    state = ""
                assets.append(
                    [
                        KIND.get(a.kind, "l"),
                        round(a.latitude, 6),
                        round(a.longitude, 6),
                        n,
                        a.device_id,
                        state,
                    ]
                )
            token = page.next_page_token
            if not token:
                break
        # A cabinet missing from the register still has the position it was registered with.
        unplaced = [row for row in gateways if not (row[1] or row[2])][:MAX_UNPLACED]
        for row in unplaced:
            found = await services.control.GetGateway(
                control_pb2.GetGatewayRequest(gateway_id=row[0]), call
            )
            row[1:3] = [round(found.gateway.latitude, 6), round(found.gateway.longitude, 6)]
        return web.json_response({"gateways": gateways, "assets": assets})

    async def devices(self, request: web.Request) -> web.StreamResponse:
        """The devices' own state (lit, dimmed, off, failed) of a few cabinets."""
        c = self.console
        call = c.call(request)
        found: dict[str, dict[str, str]] = {}
        for gateway_id in gateway_list(request.query.get("gateways", "")):
            listed = await c.services.control.ListDevices(
                control_pb2.ListDevicesRequest(gateway_id=gateway_id), call
            )
            found[gateway_id] = {d.device_id: device_code(d) for d in listed.devices}
        return web.json_response({"gateways": found})
