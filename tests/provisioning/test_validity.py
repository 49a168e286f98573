"""A certificate's dates read from its DER (provisioning/validity.py) are the full parser's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioning.ca import CertificateAuthority, make_csr, new_private_key
from provisioning.identity import Identity, Role
from provisioning.validity import validity

NOW = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)


def _self_signed(not_before: datetime, not_after: datetime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_gateway_chain_and_the_roots_dates(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", now=NOW)
    issued = ca.issue_for_csr(
        make_csr(new_private_key(), "dj-001"),
        Identity(Role.GATEWAY, "dj-001"),
        now=NOW,
        lifetime=timedelta(days=7),
    )
    leaf = issued.certificate
    assert validity(issued.chain_pem) == (leaf.not_valid_before_utc, leaf.not_valid_after_utc)
    root_pem = (tmp_path / "ca" / "root.pem").read_bytes()
    root = x509.load_pem_x509_certificate(root_pem)
    assert validity(root_pem) == (root.not_valid_before_utc, root.not_valid_after_utc)


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2049, 12, 31, tzinfo=UTC)),
        # From 2050 a certificate writes GeneralizedTime (RFC 5280 4.1.2.5).
        (datetime(2026, 1, 1, tzinfo=UTC), datetime(2051, 6, 30, 8, 0, 1, tzinfo=UTC)),
    ],
    ids=["UTCTime, both centuries", "GeneralizedTime"],
)
def test_both_time_encodings(not_before: datetime, not_after: datetime) -> None:
    assert validity(_self_signed(not_before, not_after)) == (not_before, not_after)


@pytest.mark.parametrize(
    "pem",
    [
        b"",
        b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n",
        b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMIIBAAA=\n-----END CERTIFICATE-----\n",
    ],
    ids=["empty", "a key", "not base64", "not a certificate", "truncated"],
)
def test_anything_else_is_a_value_error(pem: bytes) -> None:
    with pytest.raises(ValueError):
        validity(pem)


def test_a_truncated_certificate_is_a_value_error() -> None:
    pem = _self_signed(NOW, NOW + timedelta(days=1))
    body = b"".join(pem.splitlines()[1:-1])
    cut = b"-----BEGIN CERTIFICATE-----\n" + body[:60] + b"\n-----END CERTIFICATE-----\n"
    with pytest.raises(ValueError):
        validity(cut)
