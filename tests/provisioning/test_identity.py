"""Identities read from certificates: one SPIFFE URI, a known role, a valid name, or refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from provisioning.ca import new_private_key
from provisioning.identity import Identity, IdentityError, Role, check_name, identity_of, parse_uri

NOW = datetime(2026, 2, 1, tzinfo=UTC)


def certificate(*names: x509.GeneralName) -> x509.Certificate:
    key = new_private_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dj-001")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(key, hashes.SHA256())


def uri(value: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(value)


def test_identities_round_trip_through_their_uri() -> None:
    for role in Role:
        identity = Identity(role, "dj-centre.001_b")
        assert identity.uri == f"spiffe://ondijon/{role.value}/dj-centre.001_b"
        assert str(identity) == identity.uri
        assert parse_uri(identity.uri) == identity


@pytest.mark.parametrize("name", ["a", "dj-001", "A9.b_c-d", "x" * 63])
def test_valid_names(name: str) -> None:
    assert check_name("gateway_id", name) == name


@pytest.mark.parametrize(
    "name",
    ["", "-dj", ".hidden", "_x", "x" * 64, "dj/001", "dj 001", "dé-001", "dj\n001", "dj-001\n"],
)
def test_invalid_names_are_refused_naming_the_field(name: str) -> None:
    with pytest.raises(IdentityError, match=r"^gateway_id: .* is not a valid name"):
        check_name("gateway_id", name)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("spiffe://other/gateway/dj-001", "not in trust domain 'ondijon'"),
        ("https://ondijon/gateway/dj-001", "not in trust domain"),
        ("spiffe://ondijon/gateway", "is not <role>/<name>"),
        ("spiffe://ondijon/gateway/dj/001", "is not <role>/<name>"),
        ("spiffe://ondijon/admin/dj-001", "unknown role 'admin'"),
        ("spiffe://ondijon/gateway/-dj", "not a valid name"),
        ("spiffe://ondijon/gateway/", "not a valid name"),
    ],
)
def test_malformed_uris_are_refused(value: str, reason: str) -> None:
    with pytest.raises(IdentityError, match=reason):
        parse_uri(value)


def test_the_identity_is_the_single_spiffe_uri_of_the_certificate() -> None:
    cert = certificate(
        x509.DNSName("dj-001.example.org"),
        uri("https://dijon.example.org/cabinet/1"),  # other URIs are not identities
        uri("spiffe://ondijon/gateway/dj-001"),
    )
    assert identity_of(cert) == Identity(Role.GATEWAY, "dj-001")


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        ((), "no subject alternative name"),
        ((x509.DNSName("dj-001"),), "exactly one spiffe:// URI, has 0"),
        (
            (uri("spiffe://ondijon/gateway/dj-001"), uri("spiffe://ondijon/operator/admin")),
            "exactly one spiffe:// URI, has 2",
        ),
        ((uri("spiffe://elsewhere/gateway/dj-001"),), "not in trust domain"),
    ],
)
def test_certificates_without_one_valid_identity_are_refused(
    names: tuple[x509.GeneralName, ...], reason: str
) -> None:
    with pytest.raises(IdentityError, match=reason):
        identity_of(certificate(*names))
