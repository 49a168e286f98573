"""Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP), the console's second factor.

An operator's authenticator app holds a random secret shared with the orchestrator (shown
once, as an ``otpauth://`` URI, by ``ondijon operator password``); both derive a 6-digit
code from it and the current 30-second step. :func:`accepted_step` allows one step of clock
drift either way and never accepts a step at or before the last one used, so a code seen
over a shoulder cannot be used again.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import struct
from urllib.parse import quote, urlencode

STEP_S = 30
DIGITS = 6
SECRET_BYTES = 20  # 160 bits, RFC 4226's recommendation for HMAC-SHA1


def new_secret() -> str:
    """A fresh shared secret, base32 (what authenticator apps take)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _key(secret_b32: str) -> bytes:
    cleaned = secret_b32.replace(" ", "").upper()
    return base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))


def hotp(key: bytes, counter: int, digits: int = DIGITS, digest: str = "sha1") -> str:
    """RFC 4226's HOTP value of ``counter``: dynamic truncation of an HMAC."""
    mac = hmac.new(key, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def step_of(unix_time: float) -> int:
    return int(unix_time // STEP_S)


def code_at(secret_b32: str, unix_time: float) -> str:
    """The code an authenticator shows at ``unix_time``."""
    return hotp(_key(secret_b32), step_of(unix_time))


def accepted_step(secret_b32: str, code: str, unix_time: float, last_step: int) -> int | None:
    """The step ``code`` belongs to (now, one before or one after), if it is one and is
    newer than ``last_step``; else None."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    key = _key(secret_b32)
    now = step_of(unix_time)
    for step in (now, now - 1, now + 1):
        if step > last_step and hmac.compare_digest(hotp(key, step), code):
            return step
    return None


def provisioning_uri(secret_b32: str, account: str, issuer: str = "OnDijon") -> str:
    """The ``otpauth://`` URI an authenticator app scans (as a QR code) or takes typed."""
    label = quote(f"{issuer}:{account}")
    query = urlencode({"secret": secret_b32, "issuer": issuer, "digits": DIGITS, "period": STEP_S})
    return f"otpauth://totp/{label}?{query}"


if __name__ == "__main__":
    import sys
    import time

    # `python -m provisioning.totp SECRET`: the code an authenticator shows now (the demo).
    print(code_at(sys.argv[1], time.time()))
