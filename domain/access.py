"""Who may lower a bollard: identifiers checked locally against the access list.

A reader (badge, plate camera, keypad) hands the agent the identifier it read, as a string.
The access list, sent by the orchestrator as desired state, holds only SHA-256 digests of
identifiers, each with a validity window and optionally the bollards it opens. The check
runs on the gateway, so passages keep working with the orchestrator unreachable.

Identifiers are never kept or logged in clear: events carry :func:`digest_prefix`, the first
eight hex digits of the digest, enough to match a complaint to a grant and useless to forge
one.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from foundation.errors import FieldError
from protos.ondijon.v1 import access_pb2

#: Hex digits of the digest shown in events and logs.
PREFIX_LENGTH = 8

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class AccessListError(FieldError):
    """An access list is invalid; nothing of it is used.

    Attributes:
        field: path of the offending field, e.g. ``access_list.grants[2].valid_until``.
        reason: why it is refused.
    """


class Refusal(enum.Enum):
    """Why an identifier was refused (the value goes into the event)."""

    EMPTY = "empty_identifier"
    UNKNOWN = "unknown_credential"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    OTHER_BOLLARD = "other_bollard"


def credential_digest(identifier: str) -> str:
    """Lower-case hex SHA-256 of an identifier, as the access list stores it."""
    return hashlib.sha256(identifier.encode("utf-8")).hexdigest()


def digest_prefix(identifier: str) -> str:
    """The short digest prefix that stands for ``identifier`` in events and logs."""
    return credential_digest(identifier)[:PREFIX_LENGTH]


@dataclass(frozen=True)
class Grant:
    """One entry of the access list.

    Attributes:
        credential_sha256: lower-case hex SHA-256 of the identifier.
        label: who or what the grant is for, as the list's owner named it.
        bollard_ids: the bollards it opens; empty means every bollard of the gateway.
        valid_from: first instant of validity (None: no lower bound).
        valid_until: first instant it is no longer valid (None: no upper bound).
    """

    credential_sha256: str
    label: str = ""
    bollard_ids: frozenset[str] = frozenset()
    valid_from: datetime | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True)
class AccessDecision:
    """The answer to one presented identifier.

    Attributes:
        granted: whether the bollard is lowered for it.
        reason: ``"granted"`` or why not (a :class:`Refusal` value, or the controller's).
        digest_prefix: the identifier's short digest, for events.
        label: the matching grant's label, when one matched.
    """

    granted: bool
    reason: str
    digest_prefix: str
    label: str = ""


class LocalAccessList:
    """An access list ready for lookups on the gateway."""

    def __init__(self, grants: Iterable[Grant] = ()) -> None:
        self._by_digest: dict[str, list[Grant]] = {}
        for grant in grants:
            self._by_digest.setdefault(grant.credential_sha256, []).append(grant)

    @classmethod
    def from_proto(
        cls, message: access_pb2.AccessList, field_prefix: str = "access_list"
    ) -> LocalAccessList:
        """Validate a wire access list.

        Raises:
            AccessListError: naming the first invalid field; nothing of the list is kept.
        """
        grants = []
        for index, wire in enumerate(message.grants):
            path = f"{field_prefix}.grants[{index}]"
            if not _SHA256_HEX.fullmatch(wire.credential_sha256):
                raise AccessListError(
                    f"{path}.credential_sha256", "must be 64 lower-case hex digits"
                )
            for position, bollard_id in enumerate(wire.bollard_ids):
                if not bollard_id.strip():
                    raise AccessListError(f"{path}.bollard_ids[{position}]", "must not be empty")
            valid_from = wire.valid_from.ToDatetime(UTC) if wire.HasField("valid_from") else None
            valid_until = wire.valid_until.ToDatetime(UTC) if wire.HasField("valid_until") else None
            if valid_from is not None and valid_until is not None and valid_until <= valid_from:
                raise AccessListError(f"{path}.valid_until", "must be after valid_from")
            grants.append(
                Grant(
                    credential_sha256=wire.credential_sha256,
                    label=wire.label,
                    bollard_ids=frozenset(wire.bollard_ids),
                    valid_from=valid_from,
                    valid_until=valid_until,
                )
            )
        return cls(grants)

    def __len__(self) -> int:
        return sum(len(grants) for grants in self._by_digest.values())

    def check(self, identifier: str, bollard_id: str, now: datetime) -> AccessDecision:
        """Whether ``identifier`` may lower ``bollard_id`` at ``now``.

        When several grants carry the same credential, any one that fits grants; otherwise
        the refusal names the closest miss (a window before another bollard).
        """
        prefix = digest_prefix(identifier)
        if not identifier:
            return AccessDecision(False, Refusal.EMPTY.value, prefix)
        refusal = Refusal.UNKNOWN
        for grant in self._by_digest.get(credential_digest(identifier), []):
            if grant.bollard_ids and bollard_id not in grant.bollard_ids:
                if refusal is Refusal.UNKNOWN:
                    refusal = Refusal.OTHER_BOLLARD
                continue
            if grant.valid_from is not None and now < grant.valid_from:
                refusal = Refusal.NOT_YET_VALID
                continue
            if grant.valid_until is not None and now >= grant.valid_until:
                refusal = Refusal.EXPIRED
                continue
            return AccessDecision(True, "granted", prefix, grant.label)
        return AccessDecision(False, refusal.value, prefix)
