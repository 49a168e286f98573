"""Who is at the console: sign-in (password and TOTP code, or an operator certificate),
sessions, CSRF tokens and the sign-in rate limit.

A session is a random token in a ``__Host-`` cookie (Secure, HttpOnly, SameSite=Strict,
path ``/``); the store keeps only its SHA-256, with the operator, how they signed in, the
session's CSRF token and its expiry, so any replica serves any browser and a copy of the
store gives no session away. Every request reads the session again, and the admin API's
gate reads the operator's role and communes again: a disabled or demoted operator loses
what they lost at their next click.

Sign-in attempts are limited per account and per client address (token buckets, per
replica); every attempt, refused or not, is in the audit log (never the password or code).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from foundation.clock import Clock
from orchestrator.access.limits import BucketMap
from orchestrator.access.peers import CERTIFICATE, PASSWORD_TOTP, Peer
from orchestrator.audit.log import Auditor
from orchestrator.store.console import SessionRecord
from orchestrator.store.runner import StoreRunner
from provisioning import passwords, totp
from provisioning.identity import Identity, IdentityError, Role, check_name

COOKIE = "__Host-ondijon-session"
SIGN_IN_COOKIE = "__Host-ondijon-sign-in"  # the sign-in form's own CSRF token


class SignInRefused(Exception):
    """Sign-in refused; ``reason`` is what the person at the browser may be told."""

    def __init__(self, reason: str, *, limited: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.limited = limited


@dataclass(frozen=True)
class Session:
    """A signed-in browser: who, how, and the token its forms must carry."""

    token: str
    peer: Peer
    csrf_token: str
    expires_at_ts: float


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(given: str, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


class SignIn:
    """Signs operators in and out, and finds the session of a request."""

    def __init__(
        self,
        *,
        runner: StoreRunner,
        clock: Clock,
        audit: Auditor,
        session_minutes: int,
        attempts_per_minute: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runner = runner
        self.store = runner.store
        self.clock = clock
        self.audit = audit
        self.lifetime = timedelta(minutes=session_minutes)
        self.monotonic = monotonic
        rate = attempts_per_minute / 60
        self._per_account = BucketMap(rate, attempts_per_minute, 100_000)
        self._per_address = BucketMap(rate, attempts_per_minute, 100_000)

    async def with_password(self, name: str, password: str, code: str, address: str) -> Session:
        """A new session for ``name`` if the password and TOTP code are right."""
        try:
            check_name("name", name)
        except IdentityError:
            name = ""
        now_m = self.monotonic()
        # Both buckets pay for every attempt: one address trying many names and many
        # addresses trying one name are both slowed.
        by_account = self._per_account.take(name, 1, now_m)
        by_address = self._per_address.take(address, 1, now_m)
        actor = f"console:{name}" if name else "console:unknown"
        if not (by_account and by_address):
            await self._refused(actor, name, "too many sign-in attempts")
            raise SignInRefused("too many attempts: wait a minute", limited=True)
        account = await self.runner.read(self.store.get_console_account, name) if name else None
        operator = await self.runner.read(self.store.get_operator, name) if name else None
        # The hash is checked even without an account, so the time taken names no one.
        good = await asyncio.to_thread(
            passwords.verify, account.password_hash if account else None, password
        )
        if not good or account is None or operator is None or operator.disabled:
            await self._refused(actor, name, "wrong name, password or code")
            raise SignInRefused("wrong name, password or code")
        now = self.clock.now()
        step = totp.accepted_step(account.totp_secret, code, now.timestamp(), -1)
        if step is None or not await self.runner.write(self.store.spend_totp_step, name, step):
            await self._refused(actor, name, "wrong or reused TOTP code")
            raise SignInRefused("wrong name, password or code")
        if passwords.needs_rehash(account.password_hash):
            new_hash = await asyncio.to_thread(passwords.hash_password, password)
            await self.runner.write(self.store.set_password_hash, name, new_hash)
        identity = Identity(Role.OPERATOR, name)
        return await self._open(identity, PASSWORD_TOTP, "")

    async def with_certificate(self, peer: Peer) -> Session:
        """A new session for the operator whose certificate the browser presented (TLS
        verified it against the CA; the store's check happens at every call)."""
        if peer.identity.role is not Role.OPERATOR:
            raise SignInRefused("this certificate is not an operator's")
        operator = await self.runner.read(self.store.get_operator, peer.identity.name)
        if operator is None or operator.disabled:
            await self._refused(str(peer.identity), peer.identity.name, "unknown or disabled")
            raise SignInRefused("this operator is not registered or is disabled")
        return await self._open(peer.identity, CERTIFICATE, peer.serial_hex, peer)

    async def _open(
        self, identity: Identity, proof: str, serial: str, peer: Peer | None = None
    ) -> Session:
        now = self.clock.now()
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = now + self.lifetime
        await self.runner.write(
            self.store.add_session,
            token_sha256=digest(token),
            operator=identity.name,
            method=proof,
            certificate_serial=serial,
            csrf_token=csrf,
            now=now,
            expires_at=expires,
        )
        await self.audit.record(
            actor=str(identity),
            action="console.sign_in",
            target=identity.name,
            result="ok",
            detail=proof,
        )
        if peer is None:
            peer = Peer(identity, serial, expires.timestamp(), proof)
        return Session(token, peer, csrf, expires.timestamp())

    async def session(self, token: str, presented: Peer | None) -> Session | None:
        """The live session of a cookie's token, if any. A certificate session holds only
        while the connection still presents that certificate."""
        if not token or len(token) > 128:
            return None
        now = self.clock.now()
        record: SessionRecord | None = await self.runner.read(
            self.store.get_session, digest(token), now
        )
        if record is None:
            return None
        identity = Identity(Role.OPERATOR, record.operator)
        expires = record.expires_at.timestamp()
        if record.method == CERTIFICATE:
            if presented is None or presented.serial_hex != record.certificate_serial:
                return None
            peer = presented
        else:
            peer = Peer(identity, "", expires, PASSWORD_TOTP)
        return Session(token, peer, record.csrf_token, expires)

    async def sign_out(self, session: Session) -> None:
        await self.runner.write(self.store.end_session, digest(session.token))
        await self.audit.record(
            actor=str(session.peer.identity),
            action="console.sign_out",
            target=session.peer.identity.name,
            result="ok",
        )

    async def _refused(self, actor: str, name: str, why: str) -> None:
        await self.audit.record(
            actor=actor, action="console.sign_in", target=name, result="refused", detail=why
        )
