"""One-time enrollment tokens.

A token is ``odjn_`` followed by 32 random bytes as URL-safe text, shown once to the
installer; the orchestrator keeps only its SHA-256, bound to the gateway's serial, with an
expiry and a used-at mark. The prefix lets secret scanners (and people) recognise a token
pasted where it should not be, and keeps a token from starting with ``-``, which a command
line would take for an option (``ondijon edge enroll --token -x...``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "odjn_"


def new_token() -> tuple[str, str]:
    """A fresh token and the digest to store."""
    token = PREFIX + secrets.token_urlsafe(32)
    return token, token_digest(token)


def token_digest(token: str) -> str:
    """Hex SHA-256 of ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_digest(a: str, b: str) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(a.encode(), b.encode())
