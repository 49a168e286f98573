"""The private certificate authority: a root and an issuing CA.

``ondijon ca init`` creates a self-signed root (kept for signing the issuing CA only) and an
issuing CA that signs every leaf: the orchestrator's server certificate, operators' client
certificates and gateways' short-lived certificates from their CSRs. Keys are ECDSA P-256
(supported by every TLS stack the gateways run); key files are created with mode 0600.

Layout of a CA directory::

    root.pem  root.key  issuing.pem  issuing.key  serials/  (issued serials, for audit)

Leaves carry one SPIFFE URI SAN (see :mod:`provisioning.identity`); the requested subject of a
CSR is ignored, so a gateway can never choose its own identity. The issuing CA also signs
the certificate revocation list (:meth:`CertificateAuthority.sign_crl`); when the CA is given
the URLs where that CRL is published (``crl_urls``), every leaf names them in a CRL
distribution point (RFC 5280 4.2.1.13), so any TLS stack, not only OnDijon's own clients,
can check revocation.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from foundation.errors import FieldError
from foundation.files import PUBLIC_FILE, fsync_dir, write_atomic
from provisioning.identity import Identity, Role

KEY_MODE = 0o600


class CAError(FieldError):
    """The CA cannot do what was asked; the message says which input is wrong and why."""


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_certs(pem: bytes, field: str = "certificate") -> list[x509.Certificate]:
    """Parse one or more PEM certificates, naming ``field`` on failure."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CAError(field, f"not a PEM certificate ({exc})") from None
    return certs


def make_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> bytes:
    """A PKCS#10 request for ``key`` (the subject is informative only)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class IssuedCertificate:
    """A leaf certificate and the chain a peer presents with it (leaf, then issuing CA)."""

    certificate: x509.Certificate
    chain_pem: bytes

    @property
    def serial_hex(self) -> str:
        return format(self.certificate.serial_number, "x")

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc


@dataclass(frozen=True)
class RevokedEntry:
    """One line of a CRL: which certificate, since when, and why (RFC 5280 reason code)."""

    serial: int
    revoked_at: datetime
    reason: x509.ReasonFlags | None = None


# Curves a gateway's key may use: those every TLS stack the gateways and the orchestrator
# run can use for a client certificate (a key on another curve would be certified and
# then fail every handshake).
TLS_CURVES = (ec.SECP256R1, ec.SECP384R1)
RSA_BITS = (2048, 4096)


def csr_public_key(csr_pem: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The public key of a certificate request, checked: a well-formed PEM request whose
    signature verifies, on a key TLS can use.

    The messages name the field and the reason in our words only: the crypto library's
    own text (and the URL it carries) is not for a caller on the open port.

    Raises:
        CAError: naming ``csr_pem`` and why.
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise CAError("csr_pem", "not a PEM certificate request") from None
    try:
        public_key = csr.public_key()
        valid = csr.is_signature_valid
    except Exception:
        # Unsupported algorithms and malformed keys inside an otherwise parsable request.
        raise CAError("csr_pem", "the request's key or signature cannot be read") from None
    if isinstance(public_key, rsa.RSAPublicKey):
        if not RSA_BITS[0] <= public_key.key_size <= RSA_BITS[1]:
            raise CAError("csr_pem", f"RSA keys must have {RSA_BITS[0]} to {RSA_BITS[1]} bits")
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, TLS_CURVES):
            raise CAError(
                "csr_pem",
                f"EC keys on {public_key.curve.name} are refused "
                "(P-256 or P-384: the curves TLS uses)",
            )
    else:
        raise CAError("csr_pem", "only EC (P-256, P-384) and RSA keys are accepted")
    if not valid:
        raise CAError("csr_pem", "the request's signature does not verify")
    return public_key


class CertificateAuthority:
    """A loaded root + issuing CA pair."""

    def __init__(
        self,
        directory: Path,
        root: x509.Certificate,
        issuing: x509.Certificate,
        issuing_key: ec.EllipticCurvePrivateKey,
        crl_urls: tuple[str, ...] = (),
    ) -> None:
        self.directory = directory
        self.root = root
        self.issuing = issuing
        self._issuing_key = issuing_key
        # Where the issuing CA's CRL is published (http: URLs), named in every leaf.
        self.crl_urls = check_crl_urls(crl_urls)

    # -- creation and loading -------------------------------------------------------------

    @classmethod
    def init(cls, directory: Path, *, now: datetime, name: str = "OnDijon") -> CertificateAuthority:
        """Create a new CA in ``directory`` (new or empty); refuses to overwrite a CA.

        The files are written in a directory beside it, renamed into place once complete:
        a failure or a power cut never leaves a half-made CA that the next ``ca init``
        would refuse and :meth:`load` could not use.
        """
        directory = Path(directory)
        if (directory / "root.key").exists() or (directory / "issuing.key").exists():
            raise CAError("ca directory", f"{directory} already holds a CA; refusing to overwrite")
        if directory.is_dir() and any(directory.iterdir()):
            raise CAError("ca directory", f"{directory} is not empty; give a new or empty one")
        root_key = new_private_key()
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Root CA")])
        root = (
            _base(root_name, root_name, root_key.public_key(), now, timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False
            )
            .sign(root_key, hashes.SHA256())
        )
        issuing_key = new_private_key()
        issuing_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Issuing CA")])
        issuing = (
            _base(issuing_name, root_name, issuing_key.public_key(), now, timedelta(days=1825))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(issuing_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                critical=False,
            )
            .sign(root_key, hashes.SHA256())
        )
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:  # mkdtemp made it 0700
            write_atomic(staging / "root.key", key_to_pem(root_key), mode=KEY_MODE)
            write_atomic(staging / "issuing.key", key_to_pem(issuing_key), mode=KEY_MODE)
            # Certificates are public (installed on every gateway); keys are not.
            write_atomic(staging / "root.pem", cert_to_pem(root), mode=PUBLIC_FILE)
            write_atomic(staging / "issuing.pem", cert_to_pem(issuing), mode=PUBLIC_FILE)
            os.rename(staging, directory)  # replaces an empty directory, never a full one
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(directory.parent)
        return cls(directory, root, issuing, issuing_key)

    @classmethod
    def load(cls, directory: Path, *, crl_urls: tuple[str, ...] = ()) -> CertificateAuthority:
        """Load the CA in ``directory``; its leaves will name ``crl_urls``."""
        directory = Path(directory)
        try:
            root = load_certs((directory / "root.pem").read_bytes(), "root.pem")[0]
            issuing = load_certs((directory / "issuing.pem").read_bytes(), "issuing.pem")[0]
            key = serialization.load_pem_private_key((directory / "issuing.key").read_bytes(), None)
        except FileNotFoundError as exc:
            raise CAError(
                "ca directory",
                f"{directory} has no CA ({Path(str(exc.filename)).name} missing); "
                "run `ondijon ca init` first",
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError("issuing.key", "not an EC private key")
        return cls(directory, root, issuing, key, crl_urls)

    # -- what peers need -----------------------------------------------------------------

    @property
    def root_pem(self) -> bytes:
        return cert_to_pem(self.root)

    @property
    def chain_pem(self) -> bytes:
        """Issuing CA then root: what a leaf's holder hands out with its certificate."""
        return cert_to_pem(self.issuing) + cert_to_pem(self.root)

    # -- issuing -------------------------------------------------------------------------

    def issue_for_csr(
        self, csr_pem: bytes, identity: Identity, *, now: datetime, lifetime: timedelta
    ) -> IssuedCertificate:
        """Sign a gateway's CSR for ``identity``; the CSR's own subject is ignored.

        Raises:
            CAError: the request is refused (:func:`csr_public_key`); nothing was signed.
        """
        return self._issue(csr_public_key(csr_pem), identity, now=now, lifetime=lifetime)

    def issue_keypair(
        self,
        identity: Identity,
        *,
        now: datetime,
        lifetime: timedelta,
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
    ) -> tuple[bytes, IssuedCertificate]:
        """Make a key and a certificate (for the orchestrator and operators); returns key PEM."""
        key = new_private_key()
        issued = self._issue(
            key.public_key(),
            identity,
            now=now,
            lifetime=lifetime,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
        )
        return key_to_pem(key), issued

    def _issue(
        self,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        identity: Identity,
        *,
        now: datetime,
        lifetime: timedelta,
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
    ) -> IssuedCertificate:
        if lifetime <= timedelta(0):
            raise CAError("lifetime", "must be positive")
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        names += [x509.DNSName(n) for n in dns_names]
        for ip in ip_addresses:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(ip)))
            except ValueError:
                raise CAError("ip_addresses", f"{ip!r} is not an IP address") from None
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if identity.role is Role.ORCHESTRATOR:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.role.value),
                x509.NameAttribute(NameOID.COMMON_NAME, identity.name),
            ]
        )
        not_after = min(now + lifetime, self.issuing.not_valid_after_utc)
        builder = _base(subject, self.issuing.subject, public_key, now, not_after - now)
        if self.crl_urls:
            builder = builder.add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            full_name=[x509.UniformResourceIdentifier(url)],
                            relative_name=None,
                            reasons=None,
                            crl_issuer=None,
                        )
                        for url in self.crl_urls
                    ]
                ),
                critical=False,
            )
        cert = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._issuing_key.public_key()),
                critical=False,
            )
            .sign(self._issuing_key, hashes.SHA256())
        )
        return IssuedCertificate(cert, cert_to_pem(cert) + cert_to_pem(self.issuing))

    def sign_crl(
        self,
        revoked: Iterable[RevokedEntry],
        *,
        now: datetime,
        next_update: datetime,
        number: int,
    ) -> x509.CertificateRevocationList:
        """A CRL of the issuing CA listing ``revoked``, numbered ``number`` (RFC 5280 5.2.3)."""
        if next_update <= now:
            raise CAError("next_update", "must be after now")
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.issuing.subject)
            .last_update(now)
            .next_update(next_update)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._issuing_key.public_key()),
                critical=False,
            )
        )
        for entry in revoked:
            item = (
                x509.RevokedCertificateBuilder()
                .serial_number(entry.serial)
                .revocation_date(entry.revoked_at)
            )
            if entry.reason is not None:
                item = item.add_extension(x509.CRLReason(entry.reason), critical=False)
            builder = builder.add_revoked_certificate(item.build())
        return builder.sign(self._issuing_key, hashes.SHA256())

    def verify_issued(self, cert: x509.Certificate) -> None:
        """Raise unless ``cert`` was signed by this CA's issuing key."""
        try:
            cert.verify_directly_issued_by(self.issuing)
        except (ValueError, TypeError) as exc:
            raise CAError("certificate", f"not issued by this CA ({exc})") from None
        except InvalidSignature:
            # Another CA with the same name: the issuer matches, the signature does not.
            raise CAError(
                "certificate", "not issued by this CA (signature does not verify)"
            ) from None


def check_crl_urls(urls: Iterable[str]) -> tuple[str, ...]:
    """``urls`` if each is an absolute http URL (RFC 5280 4.2.1.13: CRLs are fetched over
    plain HTTP, they are signed; https would need a revocation check of its own)."""
    checked = tuple(urls)
    for i, url in enumerate(checked):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not url.isprintable():
            raise CAError(f"crl_urls[{i}]", f"{url!r} is not an absolute http:// URL")
    return checked


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _base(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    now: datetime,
    lifetime: timedelta,
) -> x509.CertificateBuilder:
    # Back-date a little: cabinets' clocks drift before NTP catches up.
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + lifetime)
    )
