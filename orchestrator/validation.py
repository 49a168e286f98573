"""Refuse bad desired-state documents at the admin API, before anything reaches a cabinet.

The checks are the agent's own (the schedule engine's and the signal-plan validator's pure
functions), so a document the orchestrator accepts is one the agent will accept too.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError, Message

from edge.equipment.access import AccessListError, LocalAccessList
from edge.equipment.signal_plan import SignalPlanError, plans_from_proto, validate_plans
from edge.schedule.errors import ScheduleEngineError
from edge.schedule.wire import override_from_proto, schedule_from_proto
from orchestrator.wire import WireError
from protos.ondijon.v1 import access_pb2, link_pb2, schedule_pb2, signal_pb2

MAX_DOCUMENT_BYTES = 1024 * 1024

_TYPES: dict[int, type[Message]] = {
    link_pb2.DOCUMENT_KIND_SCHEDULE: schedule_pb2.Schedule,
    link_pb2.DOCUMENT_KIND_SIGNAL_PLANS: signal_pb2.SignalPlans,
    link_pb2.DOCUMENT_KIND_ACCESS_LIST: access_pb2.AccessList,
}


def parse_document(kind: int, payload: bytes) -> Message:
    """Decode ``payload`` as the message of ``kind``, or raise :class:`WireError`."""
    message_type = _TYPES.get(kind)
    if message_type is None:
        raise WireError("kind", "unknown document kind")
    if len(payload) > MAX_DOCUMENT_BYTES:
        raise WireError("payload", f"larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        return message_type.FromString(payload)
    except DecodeError as exc:
        raise WireError("payload", f"not a valid {message_type.__name__} ({exc})") from None


def validate_document(kind: int, payload: bytes) -> Message:
    """Decode and validate a desired-state document; errors name the field."""
    message = parse_document(kind, payload)
    try:
        if isinstance(message, schedule_pb2.Schedule):
            schedule_from_proto(message)
        elif isinstance(message, signal_pb2.SignalPlans):
            validate_plans(plans_from_proto(message))
        elif isinstance(message, access_pb2.AccessList):
            LocalAccessList.from_proto(message)
    except (ScheduleEngineError, SignalPlanError, AccessListError) as exc:
        raise WireError(exc.field, exc.reason) from None
    return message


def validate_override(message: schedule_pb2.Override) -> None:
    """Refuse an override command the agent would refuse."""
    try:
        override_from_proto(message)
    except ScheduleEngineError as exc:
        raise WireError(f"command.override.{exc.field}", exc.reason) from None
