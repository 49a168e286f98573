"""Who is calling: the peer's identity from its TLS client certificate, and what it may do.

The identity comes only from the certificate the TLS handshake verified
(``context.auth_context()``), never from a message field. A certificate must also be one
this orchestrator issued and has not revoked: gRPC Python does no CRL checking, so the
serial is checked against the store at the start of every call.

The web console (:mod:`orchestrator.console`) calls the same services over HTTPS: its
operator signed in with a password and a TOTP code, or with the operator certificate their
browser presented, and the console hands the services a :class:`ConsoleCall` in place of
gRPC's context. Its peer is the one the console verified; its ``abort`` raises
:class:`Refused`, which the console answers as an HTTP error.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from cryptography import x509

from provisioning.identity import Identity, IdentityError, Role, identity_of


@dataclass(frozen=True)
class Peer:
    """A verified caller."""

    identity: Identity
    serial_hex: str
    not_after_ts: float
    # How the caller proved who it is: its TLS client certificate, or (console only)
    # PASSWORD_TOTP, checked by the console, with no certificate to check again.
    proof: str = "certificate"


CERTIFICATE, PASSWORD_TOTP = "certificate", "password+totp"


class Refused(Exception):
    """A service refused a console call: the gRPC status it would have answered."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ConsoleCall:
    """The context an admin API service gets when the web console calls it: who signed in,
    and an ``abort`` that raises :class:`Refused` (what gRPC's does for a remote call)."""

    def __init__(self, peer: Peer) -> None:
        self.signed_in = peer

    async def abort(self, code: grpc.StatusCode, details: str = "", *_: Any) -> NoReturn:
        raise Refused(code, details)

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def peer(self) -> str:
        return "console"

    def done(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False


class AuthError(Exception):
    """The caller is not who it must be; carries the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@functools.lru_cache(maxsize=8192)
def _parse(pem: bytes) -> Peer:
    cert = x509.load_pem_x509_certificate(pem)
    return Peer(
        identity=identity_of(cert),
        serial_hex=format(cert.serial_number, "x"),
        not_after_ts=cert.not_valid_after_utc.timestamp(),
    )


def peer_of(context: grpc.aio.ServicerContext[Any, Any]) -> Peer:
    """The verified peer of a call, or :class:`AuthError` (UNAUTHENTICATED)."""
    if isinstance(context, ConsoleCall):
        return context.signed_in
    auth = context.auth_context()
    pems = list(auth.get("x509_pem_cert") or [])
    if not pems:
        raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
    try:
        return _parse(bytes(pems[0]))
    except (ValueError, IdentityError) as exc:
        raise AuthError(grpc.StatusCode.UNAUTHENTICATED, f"client certificate: {exc}") from None


def peer_of_certificate(pem: bytes) -> Peer:
    """The peer a verified PEM certificate names (the console's TLS client certificate)."""
    try:
        return _parse(pem)
    except (ValueError, IdentityError) as exc:
        raise AuthError(grpc.StatusCode.UNAUTHENTICATED, f"client certificate: {exc}") from None


def require_role(peer: Peer, role: Role) -> None:
    if peer.identity.role is not role:
        raise AuthError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{peer.identity.role.value} certificates may not call this service",
        )
