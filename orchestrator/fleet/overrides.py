"""Commands checked against what a gateway reported, and the overrides still in force.

Pure functions of (commands, reported device states, now): the admin API refuses a
command that names a device the gateway does not have (an override of "lamp-9" on a
cabinet of eight lamps would otherwise be stored, delivered and reported done while
changing nothing), and answers which overrides a gateway runs or will run.

A gateway that has reported no device of a kind yet (never connected) is checked by the
agent only, which refuses such a command the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2, state_pb2

_KIND_WORD = {
    schedule_pb2.DEVICE_KIND_LAMP: "lamp",
    schedule_pb2.DEVICE_KIND_BOLLARD: "bollard",
    schedule_pb2.DEVICE_KIND_SIGNAL: "signal controller",
}
# Commands whose override may still be in force (the gateway has not refused it, and it
# has not expired before delivery).
LIVE_STATUSES = (
    link_pb2.COMMAND_STATUS_PENDING,
    link_pb2.COMMAND_STATUS_DELIVERED,
    link_pb2.COMMAND_STATUS_DONE,
)


def unknown_device(
    command: link_pb2.Command, gateway_id: str, devices: Sequence[state_pb2.DeviceState]
) -> str:
    """``"field: reason"`` when ``command`` names a device of a kind the gateway reported
    but not that device; ``""`` otherwise."""
    action = command.WhichOneof("action")
    if action == "override":
        kind = command.override.kind
        ids = {d.device_id for d in devices if d.kind == kind}
        if not ids:
            return ""
        for index, device_id in enumerate(command.override.device_ids):
            if device_id not in ids:
                return (
                    f"command.override.device_ids[{index}]: {gateway_id} has no "
                    f"{_KIND_WORD.get(kind, 'device')} {device_id!r} "
                    f"(it has {_listed(ids)})"
                )
    elif action == "bollard":
        ids = {d.device_id for d in devices if d.kind == schedule_pb2.DEVICE_KIND_BOLLARD}
        if ids and command.bollard.device_id not in ids:
            return (
                f"command.bollard.device_id: {gateway_id} has no bollard "
                f"{command.bollard.device_id!r} (it has {_listed(ids)})"
            )
    return ""


def _listed(ids: Iterable[str]) -> str:
    ordered = sorted(ids)
    shown = ", ".join(ordered[:8])
    return shown + (f" and {len(ordered) - 8} more" if len(ordered) > 8 else "")


def active_overrides(
    commands: Sequence[tuple[str, int, str, str, bytes]],
    devices: Sequence[state_pb2.DeviceState],
    now: datetime,
) -> list[control_pb2.ActiveOverride]:
    """The overrides in force or waiting, oldest first.

    Args:
        commands: ``(command_id, status, detail, created_by, payload)`` of the gateway's
            commands in :data:`LIVE_STATUSES`, oldest first.
        devices: the gateway's last reported device states.
        now: overrides whose expiry is past are left out.
    """
    found: dict[str, control_pb2.ActiveOverride] = {}
    for command_id, status, detail, created_by, payload in commands:
        command = link_pb2.Command.FromString(payload)
        action = command.WhichOneof("action")
        if action == "cancel_override":
            found.pop(command.cancel_override, None)
        elif action == "override":
            override = command.override
            try:
                expiry = override.expiry.ToDatetime(tzinfo=now.tzinfo)
            except (ValueError, OverflowError):
                continue
            if expiry <= now:
                continue
            found[override.id] = control_pb2.ActiveOverride(
                override=override,
                command_id=command_id,
                status=status,  # type: ignore[arg-type]
                detail=detail,
                issued_by=created_by,
            )
    for device in devices:
        source, _, override_id = device.source.partition(":")
        if source == "override" and override_id in found:
            found[override_id].following.append(device.device_id)
    return list(found.values())
