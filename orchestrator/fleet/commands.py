"""Refuse bad commands at the admin API, before they are stored or reach a cabinet.

One command for one gateway (:mod:`orchestrator.api.commands`) or the same one for every
gateway of a target (:mod:`orchestrator.api.city`) passes the same checks: an id of at most
:data:`MAX_COMMAND_ID` printable characters, an expiry in the future and at most
:data:`MAX_COMMAND_TTL` ahead (commands never wait forever), and an action whose fields the
agent will accept (an override through :func:`orchestrator.fleet.documents.validate_override`,
the agent's own parser). Each check answers the problem as ``field: reason``, or ``""``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from orchestrator.fleet.documents import validate_override
from orchestrator.ingest.checks import MAX_ID, WireError
from protos.ondijon.v1 import link_pb2

MAX_COMMAND_TTL = timedelta(days=7)
MAX_COMMAND_ID = 64


def check_command_id(value: str, field: str) -> str:
    """The problem with a command id as ``field: reason``; empty when there is none."""
    if len(value) > MAX_COMMAND_ID or not value.isprintable():
        return f"{field}: at most {MAX_COMMAND_ID} printable characters"
    return ""


def check_command(command: link_pb2.Command, now: datetime) -> str:
    """The first problem of an operator's command at ``now`` (its envelope, then its
    action) as ``field: reason``; empty when the command may be queued."""
    problem = check_command_envelope(command, now)
    if problem:
        return problem
    action = command.WhichOneof("action")
    if action == "override":
        try:
            validate_override(command.override)
        except WireError as exc:
            return str(exc)
    elif action == "bollard":
        order = command.bollard
        if (
            not order.device_id
            or len(order.device_id) > MAX_ID
            or not order.device_id.isprintable()
        ):
            return f"command.bollard.device_id: 1 to {MAX_ID} printable characters"
        if order.action not in link_pb2.BollardAction.values() or order.action == 0:
            return "command.bollard.action: unknown action"
    elif action == "cancel_override" and (
        not command.cancel_override or len(command.cancel_override) > MAX_ID
    ):
        return f"command.cancel_override: 1 to {MAX_ID} characters (an override id)"
    return ""


def check_command_envelope(command: link_pb2.Command, now: datetime) -> str:
    """The problem of a command's id, expiry (in the future, at most a week ahead) or
    missing action; empty when there is none."""
    problem = check_command_id(command.command_id, "command.command_id")
    if problem:
        return problem
    if not command.HasField("expires_at"):
        return "command.expires_at: required (commands never wait forever)"
    try:
        expires = command.expires_at.ToDatetime(tzinfo=now.tzinfo)
    except (ValueError, OverflowError):
        return "command.expires_at: not a valid instant"
    if expires <= now:
        return "command.expires_at: already past (an expired command is never sent)"
    if expires - now > MAX_COMMAND_TTL:
        return "command.expires_at: more than 7 days ahead"
    if command.WhichOneof("action") is None:
        return "command.action: missing"
    return ""
