"""One-time enrollment tokens.

A token is 32 random bytes (URL-safe text) shown once to the installer; the orchestrator
keeps only its SHA-256, bound to the gateway's serial, with an expiry and a used-at mark.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_token() -> tuple[str, str]:
    """A fresh token and the digest to store."""
    token = secrets.token_urlsafe(32)
    return token, token_digest(token)


def token_digest(token: str) -> str:
    """Hex SHA-256 of ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_digest(a: str, b: str) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(a.encode(), b.encode())
