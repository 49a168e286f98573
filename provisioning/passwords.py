"""Operators' console passwords: argon2id hashes (RFC 9106), never the password itself.

The hash string carries its parameters, so raising them later re-hashes at the next sign-in
(:func:`needs_rehash`). A check against a missing account still costs one hash
(:func:`verify` with ``None``), so timing does not tell which names exist.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from foundation.errors import FieldError

MIN_LENGTH = 12
MAX_LENGTH = 1024
# RFC 9106's second recommended option (64 MiB, 3 passes), argon2-cffi's defaults.
_HASHER = PasswordHasher()
_DUMMY = _HASHER.hash("a password no one has, checked so a missing account costs the same")


class PasswordError(FieldError):
    """A password that cannot be set as given."""


def check_new(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise PasswordError("password", f"at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordError("password", f"at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    check_new(password)
    return _HASHER.hash(password)


def verify(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash`` (None: no account; always False)."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(stored_hash or _DUMMY, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _HASHER.check_needs_rehash(stored_hash)
