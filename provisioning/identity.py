"""Who is on the other end of a TLS connection, read from its certificate.

Every certificate the OnDijon CA issues carries exactly one URI subject alternative name,
SPIFFE-style: ``spiffe://ondijon/gateway/<id>``, ``spiffe://ondijon/operator/<name>`` or
``spiffe://ondijon/orchestrator/<name>``. That URI is the only identity the orchestrator
trusts; nothing a peer writes in a message can change it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from foundation.errors import FieldError

if TYPE_CHECKING:
    # Loaded where a certificate is read: the cabinet agent checks names with this module
    # and never needs cryptography for that.
    from cryptography import x509

TRUST_DOMAIN = "ondijon"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class IdentityError(FieldError):
    """A certificate or name does not carry a valid OnDijon identity."""


class Role(enum.StrEnum):
    """What kind of peer an identity names."""

    GATEWAY = "gateway"
    OPERATOR = "operator"
    ORCHESTRATOR = "orchestrator"


@dataclass(frozen=True)
class Identity:
    """A peer's identity: its role and its name (gateway id, operator name)."""

    role: Role
    name: str

    @property
    def uri(self) -> str:
        return f"spiffe://{TRUST_DOMAIN}/{self.role.value}/{self.name}"

    def __str__(self) -> str:
        return self.uri


def check_name(field: str, name: str) -> str:
    """Return ``name`` if it is a valid gateway or operator name, else raise naming ``field``."""
    # fullmatch: with match and "$", a trailing newline would pass ("dj-001\n").
    if not _NAME.fullmatch(name):
        raise IdentityError(
            field,
            f"{name!r} is not a valid name (1-63 characters: letters, digits, '.', '_', "
            "'-', starting with a letter or digit)",
        )
    return name


def parse_uri(uri: str) -> Identity:
    """Parse ``spiffe://ondijon/<role>/<name>``."""
    prefix = f"spiffe://{TRUST_DOMAIN}/"
    if not uri.startswith(prefix):
        raise IdentityError("identity", f"URI {uri!r} is not in trust domain {TRUST_DOMAIN!r}")
    parts = uri[len(prefix) :].split("/")
    if len(parts) != 2:
        raise IdentityError("identity", f"URI {uri!r} is not <role>/<name>")
    try:
        role = Role(parts[0])
    except ValueError:
        raise IdentityError("identity", f"URI {uri!r} has unknown role {parts[0]!r}") from None
    return Identity(role, check_name("identity", parts[1]))


def identity_of(cert: x509.Certificate) -> Identity:
    """The identity named by the single SPIFFE URI SAN of ``cert``."""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise IdentityError("certificate", "has no subject alternative name") from None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    if len(spiffe) != 1:
        raise IdentityError(
            "certificate", f"must carry exactly one spiffe:// URI, has {len(spiffe)}"
        )
    return parse_uri(spiffe[0])
