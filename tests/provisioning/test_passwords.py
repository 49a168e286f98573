"""Console passwords: argon2id hashes, checked in constant shape."""

from __future__ import annotations

import pytest

from provisioning import passwords


def test_a_password_is_stored_as_an_argon2id_hash_and_checked() -> None:
    stored = passwords.hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert passwords.verify(stored, "correct horse battery")
    assert not passwords.verify(stored, "correct horse batterz")
    assert not passwords.verify(stored, "")


def test_a_missing_account_never_verifies() -> None:
    assert not passwords.verify(None, "anything at all here")


def test_short_passwords_are_refused_naming_the_field() -> None:
    with pytest.raises(passwords.PasswordError, match="password: at least 12"):
        passwords.hash_password("short")


def test_a_garbled_hash_is_a_refusal_not_a_crash() -> None:
    assert not passwords.verify("$argon2id$garbage", "correct horse battery")
