"""Assets on the wire (``control_pb2.Asset``) and in the domain (:class:`Asset`)."""

from __future__ import annotations

from domain.city.inventory import Asset, AssetKind, InventoryError
from protos.ondijon.v1 import control_pb2

KINDS = {
    control_pb2.ASSET_KIND_LAMP: AssetKind.LAMP,
    control_pb2.ASSET_KIND_CABINET: AssetKind.CABINET,
    control_pb2.ASSET_KIND_CROSSING: AssetKind.CROSSING,
    control_pb2.ASSET_KIND_BOLLARD_SITE: AssetKind.BOLLARD_SITE,
}
NUMBERS = {v: k for k, v in KINDS.items()}


def asset_from_proto(message: control_pb2.Asset, where: str) -> Asset:
    kind = KINDS.get(message.kind)
    if kind is None:
        raise InventoryError(f"{where}, kind", "unknown asset kind")
    return Asset(
        kind=kind,
        asset_id=message.asset_id,
        gateway_id=message.asset_id if kind is AssetKind.CABINET else message.gateway_id,
        device_id="" if kind is AssetKind.CABINET else message.device_id,
        commune=message.commune,
        latitude=message.latitude,
        longitude=message.longitude,
        channel=message.channel,
        power_w=message.power_w,
        colour_temperature_k=message.colour_temperature_k,
        luminous_flux_lm=message.luminous_flux_lm,
        upward_light_ratio=message.upward_light_ratio,
        lantern_height_m=message.lantern_height_m,
        install_date=message.install_date,
        serial=message.serial,
        tags=tuple(message.tags),
        name=message.name,
        bollards=message.bollards,
    )


def asset_to_proto(asset: Asset) -> control_pb2.Asset:
    return control_pb2.Asset(
        kind=NUMBERS[asset.kind],
        asset_id=asset.asset_id,
        gateway_id=asset.gateway_id,
        device_id=asset.device_id,
        commune=asset.commune,
        latitude=asset.latitude,
        longitude=asset.longitude,
        channel=asset.channel,
        power_w=asset.power_w,
        colour_temperature_k=asset.colour_temperature_k,
        luminous_flux_lm=asset.luminous_flux_lm,
        upward_light_ratio=asset.upward_light_ratio,
        lantern_height_m=asset.lantern_height_m,
        install_date=asset.install_date,
        serial=asset.serial,
        tags=list(asset.tags),
        name=asset.name,
        bollards=asset.bollards,
    )
