"""Refuse bad desired-state documents at the admin API, before anything reaches a cabinet.

The checks are the agent's own (the schedule engine's and the signal-plan validator's pure
functions), so a document the orchestrator accepts is one the agent will accept too. That
includes the crossing's safety card: it lives in the cabinet's configuration, and the
orchestrator learns it from the signal's reported state (``SignalState.safety_card``,
:func:`reported_cards`); a SignalPlans document less strict than any of the gateway's
cards is refused with the field named. A gateway that has not reported a card yet (never
connected) is checked on the agent only, which refuses the document the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from google.protobuf.message import DecodeError, Message

from domain.access import AccessListError, LocalAccessList
from domain.schedule.errors import ScheduleEngineError
from domain.schedule.wire import override_from_proto, schedule_from_proto
from domain.signals.plans import SignalPlanError, plans_from_proto, validate_plans
from domain.signals.safety_card import SafetyCard
from orchestrator.ingest.checks import WireError
from protos.ondijon.v1 import access_pb2, link_pb2, schedule_pb2, signal_pb2, state_pb2

log = logging.getLogger("ondijon.orchestrator.validation")

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


def reported_cards(devices: Iterable[state_pb2.DeviceState]) -> list[SafetyCard]:
    """The safety cards a gateway's signal controllers reported with their state."""
    cards = []
    for device in devices:
        if device.WhichOneof("detail") != "signal" or not device.signal.HasField("safety_card"):
            continue
        try:
            cards.append(SafetyCard.from_proto(device.signal.safety_card))
        except SignalPlanError as exc:
            # The agent refuses to start with such a card; an old or foreign report is
            # no reason to refuse documents, the agent still checks its own.
            log.warning("%r reported an invalid safety card: %s", device.device_id, exc)
    return cards


def validate_document(kind: int, payload: bytes, cards: Sequence[SafetyCard] = ()) -> Message:
    """Decode and validate a desired-state document; errors name the field.

    Args:
        cards: the gateway's crossings' safety cards: a SignalPlans document must be at
            least as strict as each.
    """
    message = parse_document(kind, payload)
    try:
        if isinstance(message, schedule_pb2.Schedule):
            schedule_from_proto(message)
        elif isinstance(message, signal_pb2.SignalPlans):
            plans = plans_from_proto(message)
            validate_plans(plans)
            for card in cards:
                card.check(plans)
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
