"""The private CA: made whole or not at all, and it certifies who it decides, not who asks."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from foundation.files import write_atomic
from provisioning.ca import CAError, CertificateAuthority, make_csr, new_private_key
from provisioning.identity import Identity, Role, identity_of

NOW = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
GATEWAY = Identity(Role.GATEWAY, "dj-001")
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path_factory.mktemp("ca") / "ca", now=NOW)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# -- making and loading ----------------------------------------------------------------------


def test_init_makes_a_root_and_an_issuing_ca_with_private_keys(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    made = CertificateAuthority.init(directory, now=NOW, name="Dijon")
    assert sorted(p.name for p in directory.iterdir()) == [
        "issuing.key",
        "issuing.pem",
        "root.key",
        "root.pem",
    ]
    assert mode(directory) == 0o700
    assert mode(directory / "root.key") == mode(directory / "issuing.key") == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["ca"]  # nothing left beside it

    root, issuing = made.root, made.issuing
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Dijon Root CA"
    root.verify_directly_issued_by(root)
    issuing.verify_directly_issued_by(root)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    assert issuing.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0

    loaded = CertificateAuthority.load(directory)
    assert (loaded.root, loaded.issuing) == (root, issuing)
    assert made.chain_pem.startswith(
        issuing.public_bytes(serialization.Encoding.PEM)
    ) and made.chain_pem.endswith(made.root_pem)


def test_init_never_overwrites_and_never_mixes(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    CertificateAuthority.init(directory, now=NOW)
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    with pytest.raises(CAError, match="already holds a CA; refusing to overwrite"):
        CertificateAuthority.init(directory, now=NOW)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before

    crowded = tmp_path / "crowded"
    crowded.mkdir()
    (crowded / "notes.txt").write_text("keep")
    with pytest.raises(CAError, match="is not empty"):
        CertificateAuthority.init(crowded, now=NOW)
    assert [p.name for p in crowded.iterdir()] == ["notes.txt"]

    empty = tmp_path / "empty"
    empty.mkdir()
    CertificateAuthority.load(CertificateAuthority.init(empty, now=NOW).directory)


def test_a_failed_init_leaves_no_half_made_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []

    def disk_full_at_third_file(path: Path, data: bytes, **kwargs: Any) -> None:
        written.append(Path(path).name)
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        write_atomic(path, data, **kwargs)

    monkeypatch.setattr("provisioning.ca.write_atomic", disk_full_at_third_file)
    with pytest.raises(OSError, match="No space left"):
        CertificateAuthority.init(tmp_path / "ca", now=NOW)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    CertificateAuthority.init(tmp_path / "ca", now=NOW)  # and a second try just works


def test_loading_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(CAError, match=r"has no CA \(root.pem missing\); run `ondijon ca init`"):
        CertificateAuthority.load(tmp_path)
    CertificateAuthority.init(tmp_path / "ca", now=NOW)
    (tmp_path / "ca" / "issuing.key").unlink()
    with pytest.raises(CAError, match=r"issuing.key missing"):
        CertificateAuthority.load(tmp_path / "ca")


# -- issuing ---------------------------------------------------------------------------------


def csr_asking_for_more(key: object) -> bytes:
    """A CSR whose subject and SAN claim to be the orchestrator and an admin."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orchestrator")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier("spiffe://ondijon/operator/admin"),
                    x509.DNSName("orchestrator.example.org"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def test_a_gateway_gets_the_identity_the_ca_gives_not_the_one_it_asks_for(
    authority: CertificateAuthority,
) -> None:
    key = new_private_key()
    issued = authority.issue_for_csr(csr_asking_for_more(key), GATEWAY, now=NOW, lifetime=DAY)
    cert = issued.certificate
    assert identity_of(cert) == GATEWAY
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://ondijon/gateway/dj-001"
    ]
    assert san.get_values_for_type(x509.DNSName) == []
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dj-001"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # a gateway cannot serve
    assert cert.public_key() == key.public_key()
    assert cert.not_valid_after_utc == NOW + DAY
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)  # cabinet clocks drift
    assert issued.serial_hex == format(cert.serial_number, "x")
    assert issued.not_after == NOW + DAY


def test_an_issued_chain_verifies_to_the_root(authority: CertificateAuthority) -> None:
    issued = authority.issue_for_csr(
        make_csr(new_private_key(), "dj-001"), GATEWAY, now=NOW, lifetime=DAY
    )
    chain = x509.load_pem_x509_certificates(issued.chain_pem)
    assert chain[0] == issued.certificate and chain[1] == authority.issuing
    verifier = PolicyBuilder().store(Store([authority.root])).time(NOW).build_client_verifier()
    verified = verifier.verify(chain[0], chain[1:])
    assert verified.chain[-1] == authority.root
    authority.verify_issued(issued.certificate)

    key_pem, server = authority.issue_keypair(
        Identity(Role.ORCHESTRATOR, "orchestrator"),
        now=NOW,
        lifetime=DAY,
        dns_names=("orchestrator.example.org",),
        ip_addresses=("127.0.0.1", "::1"),
    )
    assert b"PRIVATE KEY" in key_pem
    server_verifier = (
        PolicyBuilder()
        .store(Store([authority.root]))
        .time(NOW)
        .build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    )
    server_verifier.verify(server.certificate, [authority.issuing])


def test_certificates_of_another_ca_are_recognised(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    other = CertificateAuthority.init(tmp_path / "other", now=NOW)
    foreign = other.issue_for_csr(
        make_csr(new_private_key(), "dj-001"), GATEWAY, now=NOW, lifetime=DAY
    )
    with pytest.raises(CAError, match="certificate: not issued by this CA"):
        authority.verify_issued(foreign.certificate)


def ed25519_csr() -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dj-001")]))
        .sign(ed25519.Ed25519PrivateKey.generate(), None)
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _tampered(csr_pem: bytes) -> bytes:
    der = bytearray(x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # inside the signature
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("csr", "message"),
    [
        (lambda: b"not a csr", "csr_pem: not a PEM certificate request"),
        (
            lambda: _tampered(make_csr(new_private_key(), "dj-001")),
            "csr_pem: the request's signature does not verify",
        ),
        (
            lambda: make_csr(
                rsa.generate_private_key(public_exponent=65537, key_size=1024),  # type: ignore[arg-type]
                "dj-001",
            ),
            "csr_pem: RSA keys must have 2048 to 4096 bits",
        ),
        (
            lambda: ed25519_csr(),
            "csr_pem: only EC (P-256, P-384) and RSA keys are accepted",
        ),
        (
            lambda: make_csr(ec.generate_private_key(ec.SECP256K1()), "dj-001"),
            "csr_pem: EC keys on secp256k1 are refused (P-256 or P-384: the curves TLS uses)",
        ),
        (
            lambda: make_csr(ec.generate_private_key(ec.SECP521R1()), "dj-001"),
            "csr_pem: EC keys on secp521r1 are refused",
        ),
    ],
    ids=["garbage", "bad-signature", "rsa-1024", "ed25519", "secp256k1", "p-521"],
)
def test_bad_requests_are_refused(
    authority: CertificateAuthority, csr: object, message: str
) -> None:
    with pytest.raises(CAError) as caught:
        authority.issue_for_csr(csr(), GATEWAY, now=NOW, lifetime=DAY)  # type: ignore[operator]
    assert message in str(caught.value)
    # Our words only: never the crypto library's text or the URL it carries.
    assert "http" not in str(caught.value) and "error" not in str(caught.value).lower()


def test_a_p384_key_is_accepted(authority: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    issued = authority.issue_for_csr(make_csr(key, "dj-001"), GATEWAY, now=NOW, lifetime=DAY)
    assert issued.certificate.public_key() == key.public_key()


def test_rsa_2048_is_accepted(authority: CertificateAuthority) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issued = authority.issue_for_csr(
        make_csr(key, "dj-001"),  # type: ignore[arg-type]
        GATEWAY,
        now=NOW,
        lifetime=DAY,
    )
    assert identity_of(issued.certificate) == GATEWAY


def test_lifetimes_are_positive_and_end_with_the_issuing_ca(
    authority: CertificateAuthority,
) -> None:
    csr = make_csr(new_private_key(), "dj-001")
    with pytest.raises(CAError, match="lifetime: must be positive"):
        authority.issue_for_csr(csr, GATEWAY, now=NOW, lifetime=timedelta(0))
    long = authority.issue_for_csr(csr, GATEWAY, now=NOW, lifetime=timedelta(days=100_000))
    assert long.not_after == authority.issuing.not_valid_after_utc
    with pytest.raises(CAError, match="ip_addresses: 'localhost' is not an IP address"):
        authority.issue_keypair(
            Identity(Role.ORCHESTRATOR, "o"), now=NOW, lifetime=DAY, ip_addresses=("localhost",)
        )
