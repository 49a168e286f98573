"""Desired-state documents: the one table of kinds, and the one parse of a document.

A document goes from an operator's JSON file (``ondijon desired put``) through the admin
API, which refuses what the agent would refuse, to the agent, which stores it and applies
it. Every program on that way reads it here: :data:`KINDS` says, once, which kinds exist,
their names on the command line and their message types; :func:`parse` turns a payload
into a :class:`Document` whose ``value`` (a :class:`~domain.schedule.model.Schedule`,
:class:`~domain.signals.plans.SignalPlans` or :class:`~domain.access.LocalAccessList`) is
what the agent applies. The bytes as received are what is stored and sent on, so a digest
never changes on the way.

What :func:`parse` cannot check is where a document goes: a SignalPlans document must also
be at least as strict as the safety card of each crossing it will run on (the card is part
of the cabinet's configuration). The orchestrator checks it against the cards a gateway
reported, the agent against its own: ``card.check(document.value)``.

Errors are field errors: :class:`DocumentError` for the kind and the bytes, and the
model's own (:class:`~domain.schedule.errors.ScheduleError`,
:class:`~domain.signals.plans.SignalPlanError`,
:class:`~domain.access.AccessListError`) naming the field inside the document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message

from domain.access import LocalAccessList
from domain.schedule.model import Schedule
from domain.schedule.wire import schedule_from_proto
from domain.signals.plans import SignalPlans, plans_from_proto, validate_plans
from foundation.errors import FieldError
from protos.ondijon.v1 import access_pb2, link_pb2, schedule_pb2, signal_pb2

MAX_DOCUMENT_BYTES = 1024 * 1024

DocumentValue = Schedule | SignalPlans | LocalAccessList


class DocumentError(FieldError):
    """A document's kind or bytes are refused; nothing of it is used."""


def _valid(value: DocumentValue) -> None:
    """The converter checked everything: nothing more to check."""


@dataclass(frozen=True)
class Kind:
    """One kind of desired-state document.

    Attributes:
        number: its ``DocumentKind`` on the wire.
        name: its name on the command line (``ondijon desired put GATEWAY NAME FILE``).
        message_type: the protobuf message its payload holds.
        to_value: the model the agent applies, from the message; raises a field error.
        check: what the model must hold beyond its structure (signal plans: their timings
            and conflicts); raises a field error.
    """

    number: link_pb2.DocumentKind.ValueType
    name: str
    message_type: type[Message]
    to_value: Callable[[Any], DocumentValue]
    check: Callable[[Any], None] = _valid


KINDS: tuple[Kind, ...] = (
    Kind(link_pb2.DOCUMENT_KIND_SCHEDULE, "schedule", schedule_pb2.Schedule, schedule_from_proto),
    Kind(
        link_pb2.DOCUMENT_KIND_SIGNAL_PLANS,
        "signal-plans",
        signal_pb2.SignalPlans,
        plans_from_proto,
        validate_plans,
    ),
    Kind(
        link_pb2.DOCUMENT_KIND_ACCESS_LIST,
        "access-list",
        access_pb2.AccessList,
        LocalAccessList.from_proto,
    ),
)
_BY_NUMBER: dict[int, Kind] = {kind.number: kind for kind in KINDS}
_BY_NAME = {kind.name: kind for kind in KINDS}


@dataclass(frozen=True)
class Document:
    """A parsed, valid document: the bytes as received and the value they hold."""

    kind: Kind
    payload: bytes
    value: DocumentValue

    @property
    def digest(self) -> bytes:
        """The SHA-256 of the payload, as versions and held documents carry it."""
        return hashlib.sha256(self.payload).digest()


def kind_of(number: int) -> Kind:
    """The kind whose ``DocumentKind`` is ``number``; DocumentError naming ``kind`` if none."""
    kind = _BY_NUMBER.get(number)
    if kind is None:
        raise DocumentError("kind", "unknown document kind")
    return kind


def kind_named(name: str) -> Kind:
    """The kind written ``name`` on the command line."""
    kind = _BY_NAME.get(name)
    if kind is None:
        raise DocumentError("kind", f"must be one of {', '.join(_BY_NAME)}")
    return kind


def parse(number: int, payload: bytes) -> Document:
    """Decode and validate a document's payload: the one place a document is read.

    Raises:
        DocumentError: unknown kind, too large, or not a message of its kind.
        FieldError: the model's own error, naming the field inside the document.
    """
    kind = kind_of(number)
    if len(payload) > MAX_DOCUMENT_BYTES:
        raise DocumentError("payload", f"larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        message = kind.message_type.FromString(payload)
    except DecodeError as exc:
        raise DocumentError(
            "payload", f"not a valid {kind.message_type.__name__} ({exc})"
        ) from None
    value = kind.to_value(message)
    kind.check(value)
    return Document(kind, payload, value)


def message_of(kind: Kind, payload: bytes) -> Message:
    """The message a stored payload holds, to show it (``ondijon desired get``): stored
    payloads were parsed and validated by :func:`parse` when they were put.

    Raises:
        DocumentError: naming ``payload`` when the bytes are not a message of ``kind``.
    """
    try:
        return kind.message_type.FromString(payload)
    except DecodeError as exc:
        raise DocumentError(
            "payload", f"not a valid {kind.message_type.__name__} ({exc})"
        ) from None


def payload_from_json(kind: Kind, text: str, *, source: str) -> bytes:
    """The payload of a document an operator wrote as JSON (protobuf field names).

    Only the JSON is read here: the orchestrator parses the payload (:func:`parse`) and
    refuses it with the field named, and audits the refusal, as for any other caller.

    Raises:
        DocumentError: naming ``source`` (the file) when the JSON is not a message of
            ``kind``.
    """
    from google.protobuf import json_format  # the command line's; never the agent's

    try:
        message = json_format.Parse(text, kind.message_type())
    except json_format.ParseError as exc:
        raise DocumentError(source, str(exc)) from None
    return message.SerializeToString()
