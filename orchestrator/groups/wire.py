"""Targets on the wire (``control_pb2.Target``) and in the domain (:class:`Target`)."""

from __future__ import annotations

from domain.city.targets import Level, Target, TargetError, check_target
from protos.ondijon.v1 import control_pb2


def target_from_proto(message: control_pb2.Target) -> Target:
    """The target a request names, checked; :class:`TargetError` names the field."""
    which = message.WhichOneof("target")
    if which is None:
        raise TargetError("target", "required: city, commune, tag, list or area")
    if which == "city":
        if not message.city:
            raise TargetError("target.city", "must be true")
        target = Target(Level.CITY)
    elif which == "commune":
        target = Target(Level.COMMUNE, message.commune)
    elif which == "tag":
        target = Target(Level.TAG, message.tag)
    elif which == "list":
        target = Target(Level.LIST, message.list.name, gateway_ids=tuple(message.list.gateway_ids))
    else:
        polygon = tuple((p.latitude, p.longitude) for p in message.area.polygon)
        target = Target(Level.AREA, message.area.name, polygon=polygon)
    return check_target(target)


def target_to_proto(target: Target) -> control_pb2.Target:
    if target.level is Level.CITY:
        return control_pb2.Target(city=True)
    if target.level is Level.COMMUNE:
        return control_pb2.Target(commune=target.name)
    if target.level is Level.TAG:
        return control_pb2.Target(tag=target.name)
    if target.level is Level.LIST:
        return control_pb2.Target(
            list=control_pb2.GatewayList(name=target.name, gateway_ids=list(target.gateway_ids))
        )
    return control_pb2.Target(
        area=control_pb2.Area(
            name=target.name,
            polygon=[control_pb2.GeoPoint(latitude=a, longitude=b) for a, b in target.polygon],
        )
    )
