"""Local access-list checks: digests, windows, bollard scopes, validation."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from domain.access import (
    AccessListError,
    Grant,
    LocalAccessList,
    credential_digest,
    digest_prefix,
)
from protos.ondijon.v1 import access_pb2

NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
BADGE = "04:A2:19:7F:33:80"


def wire_grant(
    identifier: str = BADGE,
    *,
    label: str = "Livraisons rue de la Liberté",
    bollards: tuple[str, ...] = (),
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> access_pb2.AccessGrant:
    grant = access_pb2.AccessGrant(
        credential_sha256=credential_digest(identifier), label=label, bollard_ids=bollards
    )
    if valid_from is not None:
        grant.valid_from.FromDatetime(valid_from)
    if valid_until is not None:
        grant.valid_until.FromDatetime(valid_until)
    return grant


def test_digest_is_the_lowercase_hex_sha256_of_the_identifier() -> None:
    assert credential_digest(BADGE) == hashlib.sha256(BADGE.encode()).hexdigest()
    assert digest_prefix(BADGE) == credential_digest(BADGE)[:8]


def test_a_listed_identifier_is_granted_with_its_label() -> None:
    access = LocalAccessList.from_proto(access_pb2.AccessList(grants=[wire_grant()]))
    decision = access.check(BADGE, "bollard-1", NOW)
    assert decision.granted
    assert decision.label == "Livraisons rue de la Liberté"
    assert decision.digest_prefix == digest_prefix(BADGE)


def test_an_unknown_identifier_is_refused_and_never_echoed() -> None:
    access = LocalAccessList.from_proto(access_pb2.AccessList(grants=[wire_grant()]))
    decision = access.check("AB-123-CD", "bollard-1", NOW)
    assert not decision.granted
    assert decision.reason == "unknown_credential"
    assert "AB-123-CD" not in repr(decision)


def test_an_empty_identifier_is_refused() -> None:
    assert LocalAccessList().check("", "bollard-1", NOW).reason == "empty_identifier"


@pytest.mark.parametrize(
    ("offset_from", "offset_until", "granted", "reason"),
    [
        (-60, 60, True, "granted"),
        (0, 60, True, "granted"),  # from is inclusive
        (1, 60, False, "not_yet_valid"),
        (-60, 0, False, "expired"),  # until is exclusive
        (None, -1, False, "expired"),
        (None, None, True, "granted"),
    ],
)
def test_validity_window(
    offset_from: int | None, offset_until: int | None, granted: bool, reason: str
) -> None:
    def at(offset: int | None) -> datetime | None:
        return None if offset is None else NOW + timedelta(seconds=offset)

    grant = wire_grant(valid_from=at(offset_from), valid_until=at(offset_until))
    access = LocalAccessList.from_proto(access_pb2.AccessList(grants=[grant]))
    decision = access.check(BADGE, "bollard-1", NOW)
    assert (decision.granted, decision.reason) == (granted, reason)


def test_grant_limited_to_some_bollards() -> None:
    grant = wire_grant(bollards=("bollard-2", "bollard-3"))
    access = LocalAccessList.from_proto(access_pb2.AccessList(grants=[grant]))
    assert access.check(BADGE, "bollard-3", NOW).granted
    assert access.check(BADGE, "bollard-1", NOW).reason == "other_bollard"


def test_any_matching_grant_of_the_same_credential_grants() -> None:
    access = LocalAccessList(
        [
            Grant(credential_digest(BADGE), "old", valid_until=NOW - timedelta(days=1)),
            Grant(credential_digest(BADGE), "renewed", valid_from=NOW - timedelta(hours=1)),
        ]
    )
    assert access.check(BADGE, "bollard-1", NOW).label == "renewed"
    assert len(access) == 2


@pytest.mark.parametrize(
    ("grant", "field"),
    [
        (
            access_pb2.AccessGrant(credential_sha256="abc"),
            "access_list.grants[1].credential_sha256",
        ),
        (
            access_pb2.AccessGrant(credential_sha256=credential_digest(BADGE).upper()),
            "access_list.grants[1].credential_sha256",
        ),
        (
            access_pb2.AccessGrant(credential_sha256=credential_digest(BADGE), bollard_ids=[" "]),
            "access_list.grants[1].bollard_ids[0]",
        ),
        (
            wire_grant(valid_from=NOW, valid_until=NOW),
            "access_list.grants[1].valid_until",
        ),
    ],
)
def test_invalid_lists_are_refused_naming_the_field(
    grant: access_pb2.AccessGrant, field: str
) -> None:
    message = access_pb2.AccessList(grants=[wire_grant(), grant])
    with pytest.raises(AccessListError) as caught:
        LocalAccessList.from_proto(message)
    assert caught.value.field == field
