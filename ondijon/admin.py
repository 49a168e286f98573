"""The CLI's admin commands: calls to the ControlCentre API with an operator profile."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from domain import documents
from foundation.clock import Clock
from foundation.errors import FieldError
from foundation.escaping import escape
from protos.ondijon.v1 import (
    control_pb2,
    control_pb2_grpc,
    link_pb2,
    schedule_pb2,
)
from provisioning.profile import Profile


class AdminError(FieldError):
    """A command's input is refused, or the orchestrator refused the call (``status`` set)."""


def _ts(when: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


def lamp_override(
    level: int, minutes: float, priority: int, devices: list[str], *, clock: Clock | None = None
) -> link_pb2.Command:
    """An override of lamps for ``minutes`` from now on ``clock``, the street's (the
    profile's: a demo's simulated clock). The command's delivery deadline is checked by
    the orchestrator on its own clock and by the agent on the street's: it is the later of
    the override's end on each, so the command arrives alive on both."""
    real = datetime.now(UTC)
    now = clock.now() if clock is not None else real
    end = now + timedelta(minutes=minutes)
    deliver_by = max(end, real + timedelta(minutes=minutes))
    override = schedule_pb2.Override(
        id=uuid.uuid4().hex[:12],
        start=_ts(now),
        expiry=_ts(end),
        priority=priority,
        kind=schedule_pb2.DEVICE_KIND_LAMP,
        device_ids=devices,
        lamp_level=level,
    )
    return link_pb2.Command(
        command_id=uuid.uuid4().hex, expires_at=_ts(deliver_by), override=override
    )


def show(message: Message) -> str:
    # JSON with ensure_ascii: every control, C1 and bidi character is a \u escape already.
    return json_format.MessageToJson(
        message, indent=2, preserving_proto_field_name=True, ensure_ascii=True
    )


def event_line(stored: control_pb2.StoredEvent) -> str:
    """One line of ``ondijon events``: the gateway's words escaped, so an event can neither
    add lines nor send escape sequences to the operator's terminal."""
    e = stored.event
    text = " ".join(escape(part) for part in (e.type, e.device_id, e.message) if part)
    return f"{e.at.ToDatetime():%Y-%m-%d %H:%M:%S} {escape(stored.gateway_id)} #{e.sequence} {text}"


async def call(profile: Profile, method: str, request: Message) -> Message:
    async with profile.channel() as channel:
        stub = control_pb2_grpc.ControlCentreStub(channel)
        try:
            result: Message = await getattr(stub, method)(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            raise AdminError.answered(exc.code().name, exc.details() or "") from None
        return result


async def watch(profile: Profile, gateway_id: str) -> None:
    async with profile.channel() as channel:
        stub = control_pb2_grpc.ControlCentreStub(channel)
        try:
            async for item in stub.WatchEvents(
                control_pb2.WatchEventsRequest(gateway_id=gateway_id)
            ):
                print(event_line(item.event), flush=True)
        except grpc.aio.AioRpcError as exc:
            raise AdminError.answered(exc.code().name, exc.details() or "") from None


def _instant(text: str | None, field: str) -> timestamp_pb2.Timestamp | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise AdminError(field, f"{text!r} is not an ISO 8601 instant") from None
    return _ts(when if when.tzinfo else when.replace(tzinfo=UTC))


def export_audit(profile: Profile, args: argparse.Namespace) -> int:
    """``ondijon audit export``: every matching entry to ``--output`` or stdout."""
    import sys

    from ondijon.audit import export

    query = control_pb2.ListAuditRequest(
        actor=args.actor,
        action=args.action,
        gateway_id=args.gateway,
        commune=args.commune,
        result=args.result,
    )
    for field in ("since", "until"):
        instant = _instant(getattr(args, field), f"--{field}")
        if instant is not None:
            getattr(query, field).CopyFrom(instant)
    if args.output is None:
        count = asyncio.run(export(profile, query, sys.stdout, args.format))
    else:
        with args.output.open("w", encoding="utf-8", newline="") as out:
            count = asyncio.run(export(profile, query, out, args.format))
    print(f"{count} audit entries exported", file=sys.stderr)
    return 0


def run_admin(args: argparse.Namespace) -> int:
    """Dispatch ``ondijon gateway|desired|command|events`` sub-commands."""
    profile = Profile.load(args.profile)
    what = args.admin
    request: Message
    if what == "gateway-add":
        request = control_pb2.AddGatewayRequest(
            gateway_id=args.gateway_id,
            serial=args.serial,
            commune=args.commune,
            latitude=args.latitude,
            longitude=args.longitude,
            time_zone=args.time_zone,
            tags=args.tag or [],
            token_ttl_s=int(args.token_hours * 3600),
        )
        response = asyncio.run(call(profile, "AddGateway", request))
        assert isinstance(response, control_pb2.AddGatewayResponse)
        print(
            f"gateway {escape(response.gateway.gateway_id)} registered in "
            f"{escape(response.gateway.commune)}"
        )
        expires = response.token_expires_at.ToDatetime()
        print(f"enrollment token (one-time, expires {expires:%Y-%m-%d %H:%M} UTC):")
        print(response.enrollment_token)
        return 0
    if what == "gateway-list":
        response = asyncio.run(
            call(profile, "ListGateways", control_pb2.ListGatewaysRequest(commune=args.commune))
        )
        assert isinstance(response, control_pb2.ListGatewaysResponse)
        for g in response.gateways:
            state = "online " if g.connected else "offline"
            print(
                f"{escape(g.gateway_id):24} {state} {escape(g.commune):16} "
                f"fw={escape(g.firmware_version) or '-'}"
            )
        return 0
    if what == "gateway-show":
        response = asyncio.run(
            call(profile, "GetGateway", control_pb2.GetGatewayRequest(gateway_id=args.gateway_id))
        )
        print(show(response))
        return 0
    if what == "gateway-revoke":
        response = asyncio.run(
            call(
                profile,
                "RevokeGateway",
                control_pb2.RevokeGatewayRequest(gateway_id=args.gateway_id, reason=args.reason),
            )
        )
        assert isinstance(response, control_pb2.RevokeGatewayResponse)
        serials = ", ".join(response.revoked_serials) or "none was live"
        print(f"gateway {escape(args.gateway_id)} revoked: certificates {serials}")
        print(
            f"{response.streams_closed} open stream(s) closed here; CRL {response.crl_number}; "
            "to bring it back: ondijon gateway token, then ondijon edge enroll"
        )
        return 0
    if what == "gateway-token":
        response = asyncio.run(
            call(
                profile,
                "IssueEnrollmentToken",
                control_pb2.IssueEnrollmentTokenRequest(
                    gateway_id=args.gateway_id, token_ttl_s=int(args.token_hours * 3600)
                ),
            )
        )
        assert isinstance(response, control_pb2.IssueEnrollmentTokenResponse)
        expires = response.token_expires_at.ToDatetime()
        print(f"enrollment token (one-time, expires {expires:%Y-%m-%d %H:%M} UTC):")
        print(response.enrollment_token)
        return 0
    if what == "audit":
        return export_audit(profile, args)
    if what == "devices":
        response = asyncio.run(
            call(profile, "ListDevices", control_pb2.ListDevicesRequest(gateway_id=args.gateway_id))
        )
        print(show(response))
        return 0
    if what == "desired-put":
        kind = documents.kind_named(args.kind)
        try:
            text = args.file.read_text()
        except OSError as exc:
            raise AdminError(str(args.file), str(exc)) from None
        request = control_pb2.PutDesiredStateRequest(
            gateway_id=args.gateway_id,
            kind=kind.number,
            payload=documents.payload_from_json(kind, text, source=str(args.file)),
            expected_version=args.expected_version,
        )
        response = asyncio.run(call(profile, "PutDesiredState", request))
        assert isinstance(response, control_pb2.PutDesiredStateResponse)
        print(
            f"{args.kind} for {escape(args.gateway_id)} is now version {response.document.version}"
        )
        return 0
    if what == "override":
        command = lamp_override(
            args.level, args.minutes, args.priority, args.device or [], clock=profile.clock
        )
        response = asyncio.run(
            call(
                profile,
                "SendCommand",
                control_pb2.SendCommandRequest(gateway_id=args.gateway_id, command=command),
            )
        )
        assert isinstance(response, control_pb2.SendCommandResponse)
        print(f"command {escape(response.command_id)} sent")
        return 0
    if what == "events":
        if args.watch:
            asyncio.run(watch(profile, args.gateway_id))
            return 0
        response = asyncio.run(
            call(
                profile,
                "ListEvents",
                control_pb2.ListEventsRequest(
                    gateway_id=args.gateway_id, after_sequence=args.after, limit=args.limit
                ),
            )
        )
        assert isinstance(response, control_pb2.ListEventsResponse)
        for e in response.events:
            print(event_line(e))
        return 0
    raise AssertionError(what)
