"""TOTP against RFC 6238's own test vectors, and the console's acceptance rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import struct

import pytest

from provisioning import totp

# RFC 6238, appendix B: the SHA-1 seed and the 8-digit codes at each time.
RFC_SEED = b"12345678901234567890"
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("unix_time", "expected"), RFC_VECTORS)
def test_rfc6238_vectors(unix_time: int, expected: str) -> None:
    assert totp.hotp(RFC_SEED, unix_time // 30, digits=8) == expected
    secret = base64.b32encode(RFC_SEED).decode()
    assert totp.code_at(secret, unix_time) == expected[-6:]


def reference(secret: str, unix_time: float) -> str:
    """RFC 4226 section 5.3 written out independently."""
    key = base64.b32decode(secret)
    mac = hmac.new(key, (int(unix_time) // 30).to_bytes(8, "big"), hashlib.sha1).digest()
    offset = mac[19] & 0xF
    number = struct.unpack(">L", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{number % 1_000_000:06d}"


def test_codes_match_an_independent_reference_for_random_secrets_and_times() -> None:
    rng = random.Random(6238)
    for _ in range(500):
        secret = base64.b32encode(rng.randbytes(20)).decode()
        when = rng.uniform(0, 4e9)
        assert totp.code_at(secret, when) == reference(secret, when)


def test_one_step_of_drift_either_way_is_accepted_and_no_more() -> None:
    secret = totp.new_secret()
    now = 1_700_000_015.0
    step = totp.step_of(now)
    for drift, accepted in ((-60, False), (-30, True), (0, True), (30, True), (60, False)):
        code = totp.code_at(secret, now + drift)
        found = totp.accepted_step(secret, code, now, -1)
        assert (found == step + drift // 30) if accepted else found is None, drift


def test_a_code_is_never_accepted_twice_nor_an_older_one() -> None:
    secret = totp.new_secret()
    now = 1_700_000_000.0
    code = totp.code_at(secret, now)
    used = totp.accepted_step(secret, code, now, -1)
    assert used is not None
    assert totp.accepted_step(secret, code, now, used) is None
    older = totp.code_at(secret, now - 30)
    assert totp.accepted_step(secret, older, now, used) is None


@pytest.mark.parametrize("bad", ["", "12345", "1234567", "abcdef", "12 34 5x"])
def test_malformed_codes_are_refused(bad: str) -> None:
    assert totp.accepted_step(totp.new_secret(), bad, 1_700_000_000.0, -1) is None


def test_the_provisioning_uri_carries_the_secret_and_issuer() -> None:
    uri = totp.provisioning_uri("JBSWY3DPEHPK3PXP", "alice")
    assert uri.startswith("otpauth://totp/OnDijon%3Aalice?")
    assert "secret=JBSWY3DPEHPK3PXP" in uri and "issuer=OnDijon" in uri
