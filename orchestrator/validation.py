"""Refuse bad desired-state documents at the admin API, before anything reaches a cabinet.

The checks are the agent's own (the schedule engine's and the signal-plan validator's pure
functions), so a document the orchestrator accepts is one the agent will accept too.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError, Message

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
    for check in _CHECKS.get(kind, ()):
        check(message)
    return message


_CHECKS: dict[int, tuple] = {}  # type: ignore[type-arg]
