"""The CLI's admin commands: the admin API (:class:`ondijon.client.AdminClient`) with an
operator profile.

    ondijon gateway add|list|show|revoke|token     the fleet registry
    ondijon devices GATEWAY                         current device states
    ondijon desired put|get GATEWAY KIND ...        desired-state documents
    ondijon command override GATEWAY --level N      lamps to a level for a while
    ondijon bollard ACTION GATEWAY BOLLARD          lower, raise, auto, reset, emergency
    ondijon signal flash|plan GATEWAY ...           a crossing to flashing amber or a plan
    ondijon override list|cancel GATEWAY ...        the overrides in force, and ending one
    ondijon events [GATEWAY]                        newest first, filtered; --watch
    ondijon audit export                            the audit log

Every listing is a table with a header, or JSON with ``--json``. Every refusal, the
orchestrator's or the gateway's, is one line naming the field (``ondijon: error: ...``,
exit 2) and changes nothing. A command waits up to ``--wait`` seconds for the gateway's
answer: done, refused (an error), or still queued for an offline gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import json_format, timestamp_pb2

from domain import documents
from domain.documents import KINDS
from foundation.clock import Clock
from foundation.errors import split_field
from foundation.escaping import escape
from ondijon.client import AdminClient, AdminError
from ondijon.tables import ago, as_json, table, to_dict, when
from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2, state_pb2
from provisioning.profile import Profile

Handler = Callable[[AdminClient, argparse.Namespace], Awaitable[int]]
if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

MAX_OVERRIDE_MINUTES = 7 * 24 * 60
PRIORITIES = {
    "alarm": link_pb2.EVENT_PRIORITY_ALARM,
    "event": link_pb2.EVENT_PRIORITY_EVENT,
    "metering": link_pb2.EVENT_PRIORITY_METERING,
}
_PRIORITY_NAME = {v: k for k, v in PRIORITIES.items()}
BOLLARD_ACTIONS = {
    "lower": link_pb2.BOLLARD_ACTION_HOLD_DOWN,
    "raise": link_pb2.BOLLARD_ACTION_HOLD_UP,
    "auto": link_pb2.BOLLARD_ACTION_AUTOMATIC,
    "emergency-lower": link_pb2.BOLLARD_ACTION_EMERGENCY_LOWER,
    "release-emergency": link_pb2.BOLLARD_ACTION_RELEASE_EMERGENCY,
    "reset": link_pb2.BOLLARD_ACTION_RESET,
}
_BOLLARD_DONE = {
    "lower": "held down until `ondijon bollard auto`",
    "raise": "held up until `ondijon bollard auto` (it never rises on an occupied loop)",
    "auto": "back to its schedule and access list",
    "emergency-lower": "lowered for the emergency services until `release-emergency`",
    "release-emergency": "emergency lowering released",
    "reset": "lockout and faults cleared",
}


# -- the command line ------------------------------------------------------------------------


def add_commands(sub: Subparsers) -> None:
    """Add the admin commands to the ``ondijon`` command line."""

    def command(
        parent: Subparsers, name: str, help_text: str, handler: Handler
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(admin=handler)
        p.add_argument("--profile", type=Path, help="operator profile dir ($ONDIJON_PROFILE)")
        return p

    def wait_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--wait", type=float, default=10, help="seconds to wait for the gateway's answer"
        )

    gateway = sub.add_parser("gateway", help="the fleet registry")
    g = gateway.add_subparsers(dest="gateway_command", required=True)
    p = command(g, "add", "register a gateway; prints its one-time enrollment token", gateway_add)
    p.add_argument("gateway_id")
    p.add_argument("--serial", required=True)
    p.add_argument("--commune", required=True)
    p.add_argument("--latitude", type=float, required=True)
    p.add_argument("--longitude", type=float, required=True)
    p.add_argument("--time-zone", default="Europe/Paris")
    p.add_argument("--tag", action="append")
    p.add_argument("--token-hours", type=float, default=0)
    p = command(g, "list", "list gateways", gateway_list)
    p.add_argument("--commune", default="")
    p.add_argument("--json", action="store_true")
    p = command(g, "show", "one gateway in detail", gateway_show)
    p.add_argument("gateway_id")
    p = command(
        g,
        "revoke",
        "revoke every certificate of a gateway: new streams are refused and its open stream "
        "is closed at once (within seconds on other orchestrator replicas); the CRL is "
        "re-published. The way back is `ondijon gateway token` then `ondijon edge enroll`",
        gateway_revoke,
    )
    p.add_argument("gateway_id")
    p.add_argument(
        "--reason",
        default="",
        help="kept in the audit log; start it with key-compromise, cessation-of-operation, "
        "superseded, affiliation-changed or privilege-withdrawn to set the CRL reason code",
    )
    p = command(
        g,
        "token",
        "a fresh one-time enrollment token for a registered gateway (to re-enroll after a "
        "revocation, an expired certificate or a replaced cabinet computer); earlier unused "
        "tokens of the gateway stop working",
        gateway_token,
    )
    p.add_argument("gateway_id")
    p.add_argument("--token-hours", type=float, default=0, help="0: the server default")

    p = command(sub, "devices", "current device states of a gateway", devices)
    p.add_argument("gateway_id")
    p.add_argument("--json", action="store_true")

    desired = sub.add_parser("desired", help="desired-state documents")
    d = desired.add_subparsers(dest="desired_command", required=True)
    p = command(d, "put", "push a document (JSON, protobuf field names)", desired_put)
    p.add_argument("gateway_id")
    p.add_argument("kind", choices=[kind.name for kind in KINDS])
    p.add_argument("file", type=Path)
    p.add_argument("--expected-version", type=int, default=0)
    p = command(
        d,
        "get",
        "the document the gateway should hold, as JSON on stdout (ready to edit and put "
        "back); its version on stderr",
        desired_get,
    )
    p.add_argument("gateway_id")
    p.add_argument("kind", choices=[kind.name for kind in KINDS])

    commands = sub.add_parser("command", help="commands to a gateway")
    c = commands.add_subparsers(dest="command_command", required=True)
    p = command(c, "override", "force lamps to a level for a while", lamp_override_command)
    p.add_argument("gateway_id")
    p.add_argument("--level", type=int, required=True, help="0 (off) to 100 %%")
    _override_options(p, "lamp id (default: every lamp)")
    wait_option(p)

    bollard = command(
        sub,
        "bollard",
        "lower or raise a retractable bollard (held until `auto`), lower it for the "
        "emergency services, or clear a lockout (`reset`)",
        bollard_command,
    )
    bollard.add_argument("action", choices=list(BOLLARD_ACTIONS))
    bollard.add_argument("gateway_id")
    bollard.add_argument("bollard_id")
    bollard.add_argument(
        "--within", type=float, default=10, help="minutes the order may wait for delivery"
    )
    wait_option(bollard)

    signal = sub.add_parser("signal", help="a crossing's signal controller")
    s = signal.add_subparsers(dest="signal_command", required=True)
    p = command(s, "flash", "a crossing to flashing amber for a while", signal_flash)
    p.add_argument("gateway_id")
    _override_options(p, "signal controller id (default: every crossing of the gateway)")
    wait_option(p)
    p = command(s, "plan", "a crossing to one of its timing plans for a while", signal_plan)
    p.add_argument("gateway_id")
    p.add_argument("plan", help="a plan id of the gateway's signal-plans document")
    _override_options(p, "signal controller id (default: every crossing of the gateway)")
    wait_option(p)

    override = sub.add_parser("override", help="the overrides in force on a gateway")
    o = override.add_subparsers(dest="override_command", required=True)
    p = command(o, "list", "overrides running or waiting to run", override_list)
    p.add_argument("gateway_id")
    p.add_argument("--json", action="store_true")
    p = command(o, "cancel", "end an override now; the schedule resumes", override_cancel)
    p.add_argument("gateway_id")
    p.add_argument("override_id")
    wait_option(p)

    p = command(sub, "events", "event history, newest first, or --watch the live feed", events)
    p.add_argument("gateway_id", nargs="?", default="")
    p.add_argument("--watch", action="store_true")
    p.add_argument("--after", type=int, default=0, help="only sequences above this")
    p.add_argument("--limit", type=int, default=100, help="at most this many (up to 1000)")
    p.add_argument("--oldest-first", action="store_true")
    p.add_argument(
        "--priority", action="append", choices=list(PRIORITIES), help="repeat for several"
    )
    p.add_argument(
        "--type", action="append", help="event type, or a prefix ending with '.' (lamp.)"
    )
    p.add_argument("--json", action="store_true")

    audit = sub.add_parser("audit", help="the audit log (admins)")
    a = audit.add_subparsers(dest="audit_command", required=True)
    p = command(a, "export", "write the audit log, oldest first, to a file or stdout", audit_export)
    p.add_argument("--format", choices=["csv", "jsonl"], default="jsonl")
    p.add_argument("--output", type=Path, help="file to write (default: stdout)")
    p.add_argument("--since", help="ISO 8601 instant, inclusive (UTC if no offset)")
    p.add_argument("--until", help="ISO 8601 instant, exclusive")
    p.add_argument("--actor", default="", help="identity URI of the caller")
    p.add_argument("--action", default="", help="e.g. command.send, or gateway. (prefix)")
    p.add_argument("--gateway", default="", help="entries about this gateway")
    p.add_argument("--commune", default="")
    p.add_argument("--result", default="", choices=["", "ok", "refused", "error"])


def _override_options(p: argparse.ArgumentParser, device_help: str) -> None:
    p.add_argument("--minutes", type=float, default=60, help="how long (the schedule resumes)")
    p.add_argument("--priority", type=int, default=10, help="higher wins over other overrides")
    p.add_argument("--device", action="append", help=device_help)


def run_admin(args: argparse.Namespace) -> int:
    """Run one admin command (errors are FieldErrors: one line, exit 2)."""
    handler: Handler = args.admin
    profile = Profile.load(args.profile)

    async def run() -> int:
        async with AdminClient(profile) as client:
            return await handler(client, args)

    return asyncio.run(run())


# -- the fleet ---------------------------------------------------------------------------------


async def gateway_add(client: AdminClient, args: argparse.Namespace) -> int:
    response = await client.add_gateway(
        control_pb2.AddGatewayRequest(
            gateway_id=args.gateway_id,
            serial=args.serial,
            commune=args.commune,
            latitude=args.latitude,
            longitude=args.longitude,
            time_zone=args.time_zone,
            tags=args.tag or [],
            token_ttl_s=int(args.token_hours * 3600),
        )
    )
    print(
        f"gateway {escape(response.gateway.gateway_id)} registered in "
        f"{escape(response.gateway.commune)}"
    )
    expires = response.token_expires_at.ToDatetime()
    print(f"enrollment token (one-time, expires {expires:%Y-%m-%d %H:%M} UTC):")
    print(response.enrollment_token)
    return 0


def _sync(gateway: control_pb2.Gateway) -> str:
    """``in sync``, or which documents the gateway does not hold yet."""
    held = {(h.kind, h.version) for h in gateway.held}
    behind = [
        f"{documents.kind_of(d.kind).name} v{d.version}"
        for d in gateway.desired
        if (d.kind, d.version) not in held
    ]
    return "waits for " + ", ".join(behind) if behind else "in sync"


async def gateway_list(client: AdminClient, args: argparse.Namespace) -> int:
    response = await client.list_gateways(control_pb2.ListGatewaysRequest(commune=args.commune))
    if args.json:
        print(as_json([to_dict(g) for g in response.gateways]))
        return 0
    now = datetime.now(UTC)
    rows = [
        [
            g.gateway_id,
            "online" if g.connected else "offline",
            g.commune,
            g.firmware_version or "-",
            ago(g.last_seen, now),
            _sync(g) if g.enrolled else "not enrolled",
        ]
        for g in response.gateways
    ]
    headers = ["GATEWAY", "STATE", "COMMUNE", "FIRMWARE", "LAST SEEN", "DOCUMENTS"]
    print(table(headers, rows))
    return 0


async def gateway_show(client: AdminClient, args: argparse.Namespace) -> int:
    response = await client.get_gateway(control_pb2.GetGatewayRequest(gateway_id=args.gateway_id))
    print(as_json(to_dict(response.gateway)))
    return 0


async def gateway_revoke(client: AdminClient, args: argparse.Namespace) -> int:
    response = await client.revoke_gateway(
        control_pb2.RevokeGatewayRequest(gateway_id=args.gateway_id, reason=args.reason)
    )
    serials = ", ".join(response.revoked_serials) or "none was live"
    print(f"gateway {escape(args.gateway_id)} revoked: certificates {serials}")
    print(
        f"{response.streams_closed} open stream(s) closed here; CRL {response.crl_number}; "
        "to bring it back: ondijon gateway token, then ondijon edge enroll"
    )
    return 0


async def gateway_token(client: AdminClient, args: argparse.Namespace) -> int:
    response = await client.issue_enrollment_token(
        control_pb2.IssueEnrollmentTokenRequest(
            gateway_id=args.gateway_id, token_ttl_s=int(args.token_hours * 3600)
        )
    )
    expires = response.token_expires_at.ToDatetime()
    print(f"enrollment token (one-time, expires {expires:%Y-%m-%d %H:%M} UTC):")
    print(response.enrollment_token)
    return 0


def device_summary(device: state_pb2.DeviceState) -> str:
    """What a device is doing, in a few words."""
    detail = device.WhichOneof("detail")
    faults: list[str] = []
    if detail == "lamp":
        lamp = device.lamp
        text = f"lit {lamp.level} %  {lamp.active_power_w:.0f} W" if lamp.lit else "off"
        faults = list(lamp.faults)
    elif detail == "bollard":
        b = device.bollard
        motion = state_pb2.BollardMotion.Name(b.motion).removeprefix("BOLLARD_MOTION_")
        mode = state_pb2.BollardMode.Name(b.mode).removeprefix("BOLLARD_MODE_")
        text = f"{motion.lower()}, {mode.lower().replace('_', ' ')}"
        text += ", loop occupied" if b.loop_occupied else ""
        text += ", EMERGENCY" if b.emergency else ""
        faults = list(b.faults)
    elif detail == "signal":
        sig = device.signal
        mode = schedule_pb2.SignalMode.Name(sig.mode).removeprefix("SIGNAL_MODE_")
        text = f"{mode.lower().replace('_', ' ')}, plan {sig.plan or '-'}"
        text += " (unconfirmed)" if sig.unconfirmed else ""
        faults = list(sig.faults)
    elif detail == "cabinet":
        cab = device.cabinet
        text = f"door {'open' if cab.door_open else 'closed'}, {cab.temperature_c:.0f} °C"
        text += ", ON BATTERY" if cab.on_battery else ""
    else:
        text = "-"
    return text + (f"  faults: {', '.join(faults)}" if faults else "")


async def devices(client: AdminClient, args: argparse.Namespace) -> int:
    response = await client.list_devices(control_pb2.ListDevicesRequest(gateway_id=args.gateway_id))
    if args.json:
        print(as_json([to_dict(d) for d in response.devices]))
        return 0
    now = datetime.now(UTC)
    rows = [
        [
            d.device_id,
            schedule_pb2.DeviceKind.Name(d.kind).removeprefix("DEVICE_KIND_").lower(),
            device_summary(d),
            d.source or "-",
            ago(d.observed_at, now),
        ]
        for d in response.devices
    ]
    print(table(["DEVICE", "KIND", "STATE", "DECIDED BY", "OBSERVED"], rows))
    return 0


# -- desired state -----------------------------------------------------------------------------


async def desired_put(client: AdminClient, args: argparse.Namespace) -> int:
    kind = documents.kind_named(args.kind)
    try:
        text = args.file.read_text()
    except OSError as exc:
        raise AdminError(str(args.file), str(exc)) from None
    response = await client.put_desired_state(
        control_pb2.PutDesiredStateRequest(
            gateway_id=args.gateway_id,
            kind=kind.number,
            payload=documents.payload_from_json(kind, text, source=str(args.file)),
            expected_version=args.expected_version,
        )
    )
    print(f"{args.kind} for {escape(args.gateway_id)} is now version {response.document.version}")
    return 0


async def desired_get(client: AdminClient, args: argparse.Namespace) -> int:
    kind = documents.kind_named(args.kind)
    response = await client.get_desired_state(
        control_pb2.GetDesiredStateRequest(
            gateway_id=args.gateway_id,
            kind=kind.number,
        )
    )
    document = response.document
    value = documents.message_of(kind, document.payload)
    print(
        f"{args.kind} for {escape(args.gateway_id)}: version {document.version}, "
        f"issued {when(document.issued_at)}",
        file=sys.stderr,
    )
    print(as_json(to_dict(value)))
    return 0


# -- commands --------------------------------------------------------------------------------


def _ts(instant: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(instant)
    return stamp


def _minutes(value: float) -> timedelta:
    if not 0 < value <= MAX_OVERRIDE_MINUTES:
        raise AdminError("--minutes", f"must be more than 0 and at most 7 days, got {value:g}")
    return timedelta(minutes=value)


def override_command(
    kind: int,
    minutes: float,
    priority: int,
    devices: list[str],
    *,
    lamp_level: int | None = None,
    signal_mode: int = 0,
    signal_plan: str = "",
    now: datetime | None = None,
    clock: Clock | None = None,
) -> link_pb2.Command:
    """A command carrying a new override of ``kind`` devices, ending after ``minutes``.

    The override is timed on ``clock``, the street's (the profile's: a demo's simulated
    clock). The command's delivery deadline is checked by the orchestrator on its own clock
    and by the agent on the street's: it is the later of the override's end on each, so the
    command arrives alive on both."""
    real = now or datetime.now(UTC)
    start = clock.now() if clock is not None else real
    end = start + _minutes(minutes)
    deliver_by = max(end, real + _minutes(minutes))
    override = schedule_pb2.Override(
        id=uuid.uuid4().hex[:12],
        start=_ts(start),
        expiry=_ts(end),
        priority=priority,
        kind=kind,  # type: ignore[arg-type]
        device_ids=devices,
        lamp_level=lamp_level,
        signal_mode=signal_mode,  # type: ignore[arg-type]
        signal_plan=signal_plan,
    )
    return link_pb2.Command(
        command_id=uuid.uuid4().hex, expires_at=_ts(deliver_by), override=override
    )


def lamp_override(
    level: int, minutes: float, priority: int, devices: list[str], *, clock: Clock | None = None
) -> link_pb2.Command:
    """A command forcing ``devices`` (every lamp when empty) to ``level`` % for ``minutes``."""
    if not 0 <= level <= 100:
        raise AdminError("--level", f"must be 0 (off) to 100 %, got {level}")
    return override_command(
        schedule_pb2.DEVICE_KIND_LAMP, minutes, priority, devices, lamp_level=level, clock=clock
    )


async def send(client: AdminClient, gateway_id: str, command: link_pb2.Command, wait: float) -> str:
    """Send ``command`` and wait up to ``wait`` s for the gateway's answer; returns
    ``"done"`` or a sentence saying it is still queued.

    Raises:
        AdminError: the orchestrator or the gateway refused it (``field: reason``), or it
            expired before the gateway took it.
    """
    sent = await client.send_command(
        control_pb2.SendCommandRequest(gateway_id=gateway_id, command=command)
    )
    deadline = time.monotonic() + max(wait, 0)
    while True:
        # The orchestrator answers as soon as the gateway did (up to 20 s a call).
        asked = min(max(deadline - time.monotonic(), 0), 20)
        began = time.monotonic()
        answer = await client.get_command(
            control_pb2.GetCommandRequest(command_id=sent.command_id, wait_ms=int(asked * 1000))
        )
        if answer.status == link_pb2.COMMAND_STATUS_DONE:
            return "done"
        if answer.status == link_pb2.COMMAND_STATUS_REFUSED:
            field, reason = split_field(answer.detail)
            raise AdminError(field or "command", f"{gateway_id} refused it: {reason}")
        if answer.status == link_pb2.COMMAND_STATUS_EXPIRED:
            raise AdminError("command", f"expired before {gateway_id} took it")
        if time.monotonic() >= deadline:
            until = f"{answer.expires_at.ToDatetime():%Y-%m-%d %H:%M} UTC"
            return (
                f"queued: {gateway_id} has not answered yet; it takes it when it "
                f"reconnects before {until} (see `ondijon override list`)"
            )
        if time.monotonic() - began < asked / 2:
            await asyncio.sleep(0.2)  # an orchestrator that does not wait: poll gently


def _targets(devices: list[str] | None, every: str) -> str:
    return ", ".join(devices) if devices else every


async def lamp_override_command(client: AdminClient, args: argparse.Namespace) -> int:
    command = lamp_override(
        args.level, args.minutes, args.priority, args.device or [], clock=client.profile.clock
    )
    outcome = await send(client, args.gateway_id, command, args.wait)
    print(
        f"override {command.override.id} on {escape(args.gateway_id)}: "
        f"{escape(_targets(args.device, 'every lamp'))} at {args.level} % until "
        f"{when(command.override.expiry)}: {escape(outcome)}"
    )
    return 0


async def bollard_command(client: AdminClient, args: argparse.Namespace) -> int:
    if not 0 < args.within <= MAX_OVERRIDE_MINUTES:
        raise AdminError("--within", f"must be more than 0 and at most 7 days, got {args.within:g}")
    # Checked by the orchestrator on its clock and by the agent on the street's (a demo's).
    expires = max(datetime.now(UTC), client.profile.clock.now()) + timedelta(minutes=args.within)
    command = link_pb2.Command(
        command_id=uuid.uuid4().hex,
        expires_at=_ts(expires),
        bollard=link_pb2.BollardCommand(
            device_id=args.bollard_id, action=BOLLARD_ACTIONS[args.action]
        ),
    )
    outcome = await send(client, args.gateway_id, command, args.wait)
    said = _BOLLARD_DONE[args.action] if outcome == "done" else outcome
    print(f"bollard {escape(args.bollard_id)} on {escape(args.gateway_id)}: {escape(said)}")
    return 0


async def _signal_override(
    client: AdminClient, args: argparse.Namespace, what: str, *, mode: int, plan: str = ""
) -> int:
    command = override_command(
        schedule_pb2.DEVICE_KIND_SIGNAL,
        args.minutes,
        args.priority,
        args.device or [],
        signal_mode=mode,
        signal_plan=plan,
        clock=client.profile.clock,
    )
    outcome = await send(client, args.gateway_id, command, args.wait)
    print(
        f"override {command.override.id} on {escape(args.gateway_id)}: "
        f"{escape(_targets(args.device, 'every crossing'))} {escape(what)} until "
        f"{when(command.override.expiry)}: {escape(outcome)}"
    )
    return 0


async def signal_flash(client: AdminClient, args: argparse.Namespace) -> int:
    return await _signal_override(
        client, args, "flashing amber", mode=schedule_pb2.SIGNAL_MODE_FLASHING_AMBER
    )


async def signal_plan(client: AdminClient, args: argparse.Namespace) -> int:
    if not args.plan:
        raise AdminError("plan", "must not be empty")
    return await _signal_override(
        client,
        args,
        f"on plan {args.plan}",
        plan=args.plan,
        mode=schedule_pb2.SIGNAL_MODE_NORMAL,
    )


def _override_sets(override: schedule_pb2.Override) -> str:
    parts = []
    if override.HasField("lamp_level"):
        parts.append(f"lamps {override.lamp_level} %")
    if override.HasField("bollard"):
        position = schedule_pb2.BollardPosition.Name(override.bollard.position)
        parts.append(position.removeprefix("BOLLARD_POSITION_").lower())
    if override.signal_mode:
        mode = schedule_pb2.SignalMode.Name(override.signal_mode).removeprefix("SIGNAL_MODE_")
        parts.append(mode.lower().replace("_", " "))
    if override.signal_plan:
        parts.append(f"plan {override.signal_plan}")
    return ", ".join(parts) or "-"


async def override_list(client: AdminClient, args: argparse.Namespace) -> int:
    response = await client.list_overrides(
        control_pb2.ListOverridesRequest(gateway_id=args.gateway_id)
    )
    if args.json:
        print(as_json([to_dict(o) for o in response.overrides]))
        return 0
    rows = []
    for entry in response.overrides:
        o = entry.override
        status = link_pb2.CommandStatus.Name(entry.status).removeprefix("COMMAND_STATUS_")
        rows.append(
            [
                o.id,
                schedule_pb2.DeviceKind.Name(o.kind).removeprefix("DEVICE_KIND_").lower(),
                ", ".join(o.device_ids) or "all",
                _override_sets(o),
                str(o.priority),
                when(o.expiry),
                status.lower(),
                ", ".join(entry.following) or "-",
                entry.issued_by.rsplit("/", 1)[-1],
            ]
        )
    headers = [
        "OVERRIDE", "KIND", "DEVICES", "SETS", "PRIORITY", "UNTIL", "STATUS", "FOLLOWED BY", "BY"
    ]  # fmt: skip
    print(table(headers, rows))
    return 0


async def override_cancel(client: AdminClient, args: argparse.Namespace) -> int:
    live = await client.list_overrides(control_pb2.ListOverridesRequest(gateway_id=args.gateway_id))
    if all(o.override.id != args.override_id for o in live.overrides):
        raise AdminError(
            "override_id",
            f"no override {args.override_id!r} in force on {args.gateway_id} "
            "(see `ondijon override list`)",
        )
    command = link_pb2.Command(
        command_id=uuid.uuid4().hex,
        expires_at=_ts(datetime.now(UTC) + timedelta(hours=1)),
        cancel_override=args.override_id,
    )
    outcome = await send(client, args.gateway_id, command, args.wait)
    said = "cancelled; the schedule resumes" if outcome == "done" else outcome
    print(f"override {escape(args.override_id)} on {escape(args.gateway_id)}: {escape(said)}")
    return 0


# -- events and the audit log ---------------------------------------------------------------


EVENT_HEADERS = ["TIME", "GATEWAY", "SEQ", "PRIORITY", "TYPE", "DEVICE", "MESSAGE"]


def event_row(stored: control_pb2.StoredEvent) -> list[str]:
    e = stored.event
    return [
        f"{e.at.ToDatetime():%Y-%m-%d %H:%M:%S}",
        stored.gateway_id,
        str(e.sequence),
        _PRIORITY_NAME.get(e.priority, "-"),
        e.type,
        e.device_id or "-",
        # A copy an agent sent again after its storage went back (not news).
        f"(copy of {stored.copy_of}) {e.message}" if stored.copy_of else e.message,
    ]


def event_line(stored: control_pb2.StoredEvent) -> str:
    """One line of ``ondijon events --watch``: the gateway's words escaped, so an event can
    neither add lines nor send escape sequences to the operator's terminal."""
    return "  ".join(escape(cell) for cell in event_row(stored))


async def events(client: AdminClient, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        raise AdminError("--limit", f"must be 1 to 1000, got {args.limit}")
    if args.after < 0:
        raise AdminError("--after", f"must be 0 or more, got {args.after}")
    priorities = [PRIORITIES[p] for p in args.priority or []]
    types = args.type or []
    if args.watch:
        if not args.json:
            print("  ".join(EVENT_HEADERS), flush=True)
        async for event in client.watch_events(
            control_pb2.WatchEventsRequest(gateway_id=args.gateway_id)
        ):
            if priorities and event.event.priority not in priorities:
                continue
            if types and not any(
                event.event.type.startswith(t) if t.endswith(".") else event.event.type == t
                for t in types
            ):
                continue
            out = json_format.MessageToJson(event, indent=None, ensure_ascii=True)
            print(out if args.json else event_line(event), flush=True)
        return 0
    response = await client.list_events(
        control_pb2.ListEventsRequest(
            gateway_id=args.gateway_id,
            after_sequence=args.after,
            limit=args.limit,
            newest_first=not args.oldest_first,
            priorities=priorities,
            types=types,
        )
    )
    if args.json:
        print(as_json([to_dict(e) for e in response.events]))
        return 0
    print(table(EVENT_HEADERS, [event_row(e) for e in response.events]))
    return 0


def _instant(text: str | None, field: str) -> timestamp_pb2.Timestamp | None:
    if not text:
        return None
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise AdminError(field, f"{text!r} is not an ISO 8601 instant") from None
    return _ts(instant if instant.tzinfo else instant.replace(tzinfo=UTC))


async def audit_export(client: AdminClient, args: argparse.Namespace) -> int:
    """``ondijon audit export``: every matching entry to ``--output`` or stdout."""
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
        count = await export(client, query, sys.stdout, args.format)
    else:
        with args.output.open("w", encoding="utf-8", newline="") as out:
            count = await export(client, query, out, args.format)
    print(f"{count} audit entries exported", file=sys.stderr)
    return 0
