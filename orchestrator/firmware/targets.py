"""From an operator's campaign request to the plan the pure core takes, and back from storage.

A campaign targets gateways of the registry matching any of the given communes, any of the
given tags, or listed by id, all within the operator's scope of communes. The target is
resolved once, when the campaign is created, and kept in the plan: a gateway registered
later is not pulled into a running rollout. Whether a gateway drives lamps (which keeps it
from updating at night) comes from the devices it last reported; a gateway that never
reported is assumed to drive lamps, the safe side.

The plan is stored as JSON (:func:`plan_to_json` / :func:`plan_from_json`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from orchestrator.firmware.rollout import (
    DEFAULT_WAVES,
    CampaignError,
    CampaignPlan,
    TargetGateway,
    Wave,
    Window,
)
from orchestrator.ingest.devices import current_devices
from orchestrator.store.connection import Connection
from orchestrator.store.database import GatewayRecord, Store
from protos.ondijon.v1 import firmware_pb2, schedule_pb2

_CAMPAIGN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_BALENA_TAG = "balena:"
NATIVE, BALENA = "native", "balena"


class OutOfScope(CampaignError):
    """The target reaches communes outside the operator's scope."""


@dataclass(frozen=True)
class Target:
    """Who a campaign is for: gateways in any of ``communes``, with any of ``tags``, or
    listed in ``gateway_ids``."""

    communes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    gateway_ids: tuple[str, ...] = ()


def check_campaign_id(campaign_id: str) -> str:
    """Return ``campaign_id`` if it is usable (letters, digits, ``.``, ``_``, ``-``).

    Raises:
        CampaignError: field ``campaign_id``.
    """
    if not _CAMPAIGN_ID.fullmatch(campaign_id):
        raise CampaignError(
            "campaign_id", f"{campaign_id!r} must be 1-64 letters, digits, '.', '_' or '-'"
        )
    return campaign_id


def resolve_target(
    store: Store, conn: Connection, target: Target, scope: Collection[str]
) -> list[GatewayRecord]:
    """The registered gateways ``target`` names, in the operator's ``scope`` of communes.

    Raises:
        CampaignError: the target is empty, names an unknown gateway, or reaches outside
            the scope (``target.gateway_ids[i]``, ``target.communes[i]``).
    """
    if not (target.communes or target.tags or target.gateway_ids):
        raise CampaignError("target", "give communes, tags or gateway ids")
    everyone = "*" in scope
    for index, commune in enumerate(target.communes):
        if not everyone and commune not in scope:
            raise OutOfScope(f"target.communes[{index}]", f"{commune!r} is outside your scope")
    registry = {g.gateway_id: g for g in store.list_gateways(conn)}
    chosen: dict[str, GatewayRecord] = {}
    for index, gateway_id in enumerate(target.gateway_ids):
        gateway = registry.get(gateway_id)
        if gateway is None or not (everyone or gateway.commune in scope):
            # Same answer for both: the scope must not reveal what exists elsewhere.
            raise CampaignError(f"target.gateway_ids[{index}]", f"no gateway {gateway_id!r}")
        chosen[gateway_id] = gateway
    tags = set(target.tags)
    for gateway in registry.values():
        if not (everyone or gateway.commune in scope):
            continue
        if gateway.commune in target.communes or tags & set(gateway.tags):
            chosen[gateway.gateway_id] = gateway
    if not chosen:
        raise CampaignError("target", "no gateway matches")
    return [chosen[k] for k in sorted(chosen)]


def drives_lamps(store: Store, conn: Connection, gateway_id: str) -> bool:
    """Whether the gateway drives lamps, from its last reported devices (``True`` if it
    never reported any)."""
    devices = current_devices(store, conn, gateway_id)
    if not devices:
        return True
    return any(d.kind == schedule_pb2.DEVICE_KIND_LAMP for d in devices)


def target_gateway(record: GatewayRecord, has_lamps: bool) -> TargetGateway:
    return TargetGateway(
        id=record.gateway_id,
        commune=record.commune,
        latitude=record.latitude,
        longitude=record.longitude,
        time_zone=record.time_zone,
        has_lamps=has_lamps,
        tags=frozenset(record.tags),
    )


def balena_devices(gateways: Sequence[TargetGateway], given: Mapping[str, str]) -> dict[str, str]:
    """Balena device uuid of each gateway: from ``given``, else its ``balena:<uuid>`` tag.

    Raises:
        CampaignError: a gateway has none (field ``balena_devices.<id>``).
    """
    devices: dict[str, str] = {}
    for gateway in gateways:
        uuid = given.get(gateway.id) or next(
            (t[len(_BALENA_TAG) :] for t in sorted(gateway.tags) if t.startswith(_BALENA_TAG)),
            "",
        )
        if not uuid:
            raise CampaignError(
                f"balena_devices.{gateway.id}",
                f"no balena device for this gateway (give one, or tag it {_BALENA_TAG}<uuid>)",
            )
        devices[gateway.id] = uuid
    return devices


def plan_from_request(
    request: firmware_pb2.CreateCampaignRequest,
    campaign_id: str,
    gateways: Sequence[TargetGateway],
) -> CampaignPlan:
    """The plan of a CreateCampaign request (validated further by ``start_campaign``).

    Raises:
        CampaignError: naming the field at fault.
    """
    waves = tuple(
        Wave(
            percent=w.percent,
            success_threshold=w.success_threshold if w.HasField("success_threshold") else 0.9,
            error_threshold=w.error_threshold if w.HasField("error_threshold") else 0.1,
        )
        for w in request.waves
    )
    site_windows = {}
    for gateway_id, text in sorted(request.site_windows.items()):
        try:
            site_windows[gateway_id] = Window.parse(text)
        except CampaignError as exc:
            raise CampaignError(f"site_windows.{gateway_id}", exc.reason) from None
    margin = timedelta(hours=1)
    if request.HasField("daylight_margin"):
        margin = request.daylight_margin.ToTimedelta()
    return CampaignPlan(
        campaign_id=campaign_id,
        version=request.version,
        gateways=tuple(gateways),
        waves=waves or DEFAULT_WAVES,
        window=Window.parse(request.window) if request.window else None,
        site_windows=site_windows,
        daylight_only=not request.allow_night,
        daylight_margin=margin,
        canary_tag=request.canary_tag or "canary",
    )


def plan_to_json(plan: CampaignPlan) -> dict[str, Any]:
    """The plan as stored."""
    return {
        "campaign_id": plan.campaign_id,
        "version": plan.version,
        "gateways": [
            {
                "id": g.id,
                "commune": g.commune,
                "latitude": g.latitude,
                "longitude": g.longitude,
                "time_zone": g.time_zone,
                "has_lamps": g.has_lamps,
                "tags": sorted(g.tags),
            }
            for g in plan.gateways
        ],
        "waves": [
            {
                "percent": w.percent,
                "success_threshold": w.success_threshold,
                "error_threshold": w.error_threshold,
            }
            for w in plan.waves
        ],
        "window": None if plan.window is None else str(plan.window),
        "site_windows": {k: str(v) for k, v in plan.site_windows.items()},
        "daylight_only": plan.daylight_only,
        "daylight_margin_s": plan.daylight_margin.total_seconds(),
        "canary_tag": plan.canary_tag,
    }


def plan_from_json(data: Mapping[str, Any]) -> CampaignPlan:
    """The plan stored by :func:`plan_to_json`."""
    return CampaignPlan(
        campaign_id=data["campaign_id"],
        version=data["version"],
        gateways=tuple(
            TargetGateway(
                id=g["id"],
                commune=g["commune"],
                latitude=float(g["latitude"]),
                longitude=float(g["longitude"]),
                time_zone=g["time_zone"],
                has_lamps=bool(g["has_lamps"]),
                tags=frozenset(g["tags"]),
            )
            for g in data["gateways"]
        ),
        waves=tuple(
            Wave(float(w["percent"]), float(w["success_threshold"]), float(w["error_threshold"]))
            for w in data["waves"]
        ),
        window=Window.parse(data["window"]) if data["window"] else None,
        site_windows={k: Window.parse(v) for k, v in data["site_windows"].items()},
        daylight_only=bool(data["daylight_only"]),
        daylight_margin=timedelta(seconds=float(data["daylight_margin_s"])),
        canary_tag=data["canary_tag"],
    )
