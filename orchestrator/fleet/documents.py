"""Refuse bad desired-state documents at the admin API, before anything reaches a cabinet.

A document is parsed once, by the shared domain (:func:`domain.documents.parse`), with the
agent's own checks, so a document the orchestrator accepts is one the agent will accept
too. That includes the crossing's safety card: it lives in the cabinet's configuration, and
the orchestrator learns it from the signal's reported state (``SignalState.safety_card``,
:func:`reported_cards`); a SignalPlans document less strict than any of the gateway's
cards is refused with the field named. A gateway that has not reported a card yet (never
connected) is checked on the agent only, which refuses the document the same way.

A schedule with no program (``{}``) parses, and an agent would run it (every lamp at its
default level, day and night); it is an operator's mistake, refused here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from domain import documents
from domain.documents import DocumentError
from domain.schedule.errors import ScheduleEngineError
from domain.schedule.model import Schedule
from domain.schedule.wire import override_from_proto
from domain.signals.plans import SignalPlanError, SignalPlans
from domain.signals.safety_card import SafetyCard
from orchestrator.ingest.checks import WireError
from protos.ondijon.v1 import schedule_pb2, state_pb2

log = logging.getLogger("ondijon.orchestrator.validation")


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


def check_document(
    kind: int, payload: bytes, cards: Sequence[SafetyCard] = ()
) -> documents.Document:
    """The parsed document, refused unless the agent would accept it.

    Args:
        cards: the gateway's crossings' safety cards: a SignalPlans document must be at
            least as strict as each.

    Raises:
        FieldError: naming the field (:func:`domain.documents.parse`, ``SafetyCard.check``).
    """
    document = documents.parse(kind, payload)
    if isinstance(document.value, Schedule) and not document.value.programs:
        # The agent would run it: every lamp at its default level, day and night.
        raise DocumentError(
            "programs",
            "a schedule with no program is refused (lamps would stay at their default level "
            "day and night); give at least one program and a calendar rule that picks it",
        )
    if isinstance(document.value, SignalPlans):
        for card in cards:
            card.check(document.value)
    return document


def validate_override(message: schedule_pb2.Override) -> None:
    """Refuse an override command the agent would refuse."""
    try:
        override_from_proto(message)
    except ScheduleEngineError as exc:
        raise WireError(f"command.override.{exc.field}", exc.reason) from None
