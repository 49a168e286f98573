"""Who may do what, where, on the admin API: roles, communes, and the audit of refusals.

Every ControlCentre call starts here. The caller is identified by its client certificate
only (an operator certificate of this CA, known to the store, not revoked); its role and
communes are read from the store at every call, so a change takes effect at once:

- ``viewer`` reads, ``operator`` also writes (schedules, plans, access lists, commands),
  ``admin`` also manages the fleet and identities (gateways, tokens, revocation, audit);
- an operator sees and acts only on gateways of its communes (``*``: all of them); a
  gateway outside the scope is answered exactly like a missing one, so the scope does not
  leak what exists elsewhere.

A long-running call (the event feed, a console's live feed) re-reads the operator's role
and communes every second (:class:`LiveScope`): a commune leaving the scope stops its
events, a disabled or demoted operator's feed ends. Which commune each gateway is in comes
from one read shared by every live call of the process, at most :data:`LIVE_COMMUNES_S`
old (twenty open consoles cost one read of the fleet, not twenty a second).

A refused write is audited like a done one (result ``refused``, with the reason). A
refused certificate of another role (a gateway trying the admin API) is audited too, at
most once a minute per identity: it is an incident to notice, not a flood to store. Every
service with callers (the admin API, campaigns) records refusals through
:meth:`Gatekeeper.audit_refusal`, so there is one audit path for every refusal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc

from orchestrator.access.certificates import Certificates
from orchestrator.access.limits import BucketMap
from orchestrator.access.peers import CERTIFICATE, AuthError, Peer, peer_of, require_role
from orchestrator.audit.log import Auditor, Entry
from orchestrator.store.assets import cabinet_communes
from orchestrator.store.connection import Connection
from orchestrator.store.database import GatewayRecord, NotFound, OperatorRecord
from orchestrator.store.runner import StoreRunner
from provisioning.identity import IdentityError, Role, check_name

Context = grpc.aio.ServicerContext[Any, Any]

T = TypeVar("T")

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
# A crisis operator writes like an operator and may also run crisis playbooks.
CRISIS = "crisis"
RANK = {VIEWER: 0, OPERATOR: 1, CRISIS: 1, ADMIN: 2}
# How stale the scope of a long-running call may be.
SCOPE_RECHECK_S = 1.0
# How old the gateways' communes a live call's scope is computed from may be.
LIVE_COMMUNES_S = 0.5


@dataclass(frozen=True)
class Attempt:
    """A write being attempted: what goes in the audit log, done or refused."""

    action: str
    target: str
    commune: str = ""


@dataclass(frozen=True)
class Caller:
    """An authenticated operator and its registration."""

    peer: Peer
    operator: OperatorRecord

    @property
    def actor(self) -> str:
        return str(self.peer.identity)

    def in_scope(self, commune: str) -> bool:
        return in_scope(self.operator, commune)


def in_scope(operator: OperatorRecord, commune: str) -> bool:
    return "*" in operator.communes or commune in operator.communes


class Gatekeeper:
    """Checks callers of the admin API and records what they were refused."""

    def __init__(
        self,
        runner: StoreRunner,
        certificates: Certificates,
        audit: Auditor,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runner = runner
        self.store = runner.store
        self.certificates = certificates
        self.audit = audit
        self.monotonic = monotonic
        self._foreign_audits = BucketMap(1 / 60, 1, 10_000)
        # Gateway id -> commune for live calls, when read, and one read at a time.
        self._communes: dict[str, str] = {}
        self._communes_at = -float("inf")
        self._communes_lock = asyncio.Lock()

    async def caller(self, context: Context, needed: str, attempt: Attempt | None) -> Caller:
        """The calling operator if it holds ``needed``; otherwise abort (audited if a write)."""
        peer = await self._certified(context, attempt)
        record = await self.runner.read(self.store.get_operator, peer.identity.name)
        return await self._registered(context, peer, record, needed, attempt)

    async def caller_reading(
        self,
        context: Context,
        needed: str,
        attempt: Attempt | None,
        fn: Callable[[Connection], T],
    ) -> tuple[Caller, T]:
        """As :meth:`caller`, with ``fn(conn)`` read in the same transaction as the
        caller's registration: one trip to the store instead of two. ``fn``'s answer is
        returned only to a caller that holds ``needed``; ``fn`` answers what it did not
        find (``None``) rather than raise, so the caller is checked first."""
        peer = await self._certified(context, attempt)
        store, name = self.store, peer.identity.name

        def both(conn: Connection) -> tuple[OperatorRecord | None, T]:
            return store.get_operator(conn, name), fn(conn)

        record, value = await self.runner.read(both)
        return await self._registered(context, peer, record, needed, attempt), value

    async def _certified(self, context: Context, attempt: Attempt | None) -> Peer:
        """The caller's identity, if its certificate is an operator's, known and valid."""
        try:
            peer = peer_of(context)
        except AuthError as exc:
            await context.abort(exc.code, str(exc))
        try:
            require_role(peer, Role.OPERATOR)
        except AuthError as exc:
            if self._foreign_audits.take(peer.identity.uri, 1, time.monotonic()):
                await self.audit.record(
                    actor=str(peer.identity),
                    action=attempt.action if attempt else "admin.call",
                    target=attempt.target if attempt else "",
                    result="refused",
                    detail=str(exc),
                )
            await context.abort(exc.code, str(exc))
        try:
            if peer.proof == CERTIFICATE:
                await self.certificates.check(peer)
        except AuthError as exc:
            await context.abort(exc.code, str(exc))
        return peer

    async def _registered(
        self,
        context: Context,
        peer: Peer,
        record: OperatorRecord | None,
        needed: str,
        attempt: Attempt | None,
    ) -> Caller:
        """``peer`` with its registration ``record`` if that holds ``needed``."""
        if record is None or record.disabled:
            await self._deny(context, peer, attempt, "operator is not registered or disabled")
        if RANK.get(record.role, -1) < RANK[needed]:
            await self._deny(
                context, peer, attempt, f"role {record.role} may not do this (needs {needed})"
            )
        return Caller(peer, record)

    async def registration(self, context: Context, caller: Caller, needed: str) -> Caller:
        """``caller`` with its registration read again (a long call outlives the first
        read); aborts PERMISSION_DENIED if it no longer holds ``needed``."""
        record = await self.runner.read(self.store.get_operator, caller.peer.identity.name)
        return await self._registered(context, caller.peer, record, needed, None)

    async def visible_gateways(self, caller: Caller) -> set[str]:
        """The ids of the gateways in ``caller``'s communes."""
        records = await self.runner.read(self.store.list_gateways)
        return {r.gateway_id for r in records if caller.in_scope(r.commune)}

    async def live_communes(self) -> dict[str, str]:
        """Gateway id -> commune, read at most :data:`LIVE_COMMUNES_S` ago: the one read
        every live call's scope shares (callers arriving during a read wait for it)."""
        async with self._communes_lock:
            if self.monotonic() - self._communes_at >= LIVE_COMMUNES_S:
                started = self.monotonic()
                self._communes = await self.runner.read(cabinet_communes)
                self._communes_at = started
            return self._communes

    async def _deny(
        self, context: Context, peer: Peer, attempt: Attempt | None, message: str
    ) -> NoReturn:
        if attempt is not None:
            await self.audit_refusal(peer, attempt, message)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
        raise AssertionError("unreachable")

    async def gateway(
        self, context: Context, caller: Caller, gateway_id: str, attempt: Attempt | None
    ) -> GatewayRecord:
        """The gateway ``gateway_id`` if it exists and is in the caller's scope."""
        found = await self.runner.read(self.read_gateway, gateway_id)
        return await self.gateway_found(context, caller, gateway_id, found, attempt)

    def read_gateway(self, conn: Connection, gateway_id: str) -> GatewayRecord | None:
        """The gateway ``gateway_id`` in ``conn``; ``None`` if there is none or the id is
        not one (for a read made with the caller's: :meth:`gateway_found` answers)."""
        try:
            check_name("gateway_id", gateway_id)
            return self.store.get_gateway(conn, gateway_id)
        except (IdentityError, NotFound):
            return None

    async def gateway_found(
        self,
        context: Context,
        caller: Caller,
        gateway_id: str,
        gateway: GatewayRecord | None,
        attempt: Attempt | None,
    ) -> GatewayRecord:
        """``gateway``, as :meth:`read_gateway` found ``gateway_id``, if it exists and is
        in the caller's scope; otherwise abort as :meth:`gateway` does (an id that is not
        one: INVALID_ARGUMENT; missing or outside the scope: the same NOT_FOUND)."""
        try:
            check_name("gateway_id", gateway_id)
        except IdentityError as exc:
            await self.refuse(context, caller, attempt, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        missing = f"gateway_id: no gateway {gateway_id!r}"
        if gateway is None:
            await self.refuse(context, caller, attempt, grpc.StatusCode.NOT_FOUND, missing)
        if not caller.in_scope(gateway.commune):
            # Audited where it happened (the gateway's commune), answered as if missing.
            where = Attempt(attempt.action, attempt.target, gateway.commune) if attempt else None
            await self.refuse(
                context,
                caller,
                where,
                grpc.StatusCode.NOT_FOUND,
                missing,
                detail=f"gateway {gateway_id!r} is outside the caller's communes",
            )
        return gateway

    async def refuse(
        self,
        context: Context,
        caller: Caller,
        attempt: Attempt | None,
        code: grpc.StatusCode,
        message: str,
        *,
        detail: str = "",
    ) -> NoReturn:
        """Answer ``code``/``message``; a refused write is audited first (``detail`` or why)."""
        if attempt is not None:
            await self.audit_refusal(caller.peer, attempt, detail or message)
        await context.abort(code, message)
        raise AssertionError("unreachable")

    async def audit_refusal(self, peer: Peer, attempt: Attempt, why: str) -> None:
        await self.audit.record(
            actor=str(peer.identity),
            action=attempt.action,
            target=attempt.target,
            commune=attempt.commune,
            result="refused",
            detail=why,
        )

    async def done(self, caller: Caller, attempt: Attempt, detail: str = "") -> None:
        """Audit a write that was carried out."""
        await self.runner.write(self.done_in, caller, attempt, detail)

    def done_in(self, conn: Connection, caller: Caller, attempt: Attempt, detail: str = "") -> None:
        """Audit a write carried out in ``conn``'s transaction: the entry is committed with
        it (one commit, never one without the other)."""
        entry = Entry(caller.actor, attempt.action, attempt.target, "ok", attempt.commune, detail)
        self.audit.write(conn, entry)


class LiveScope:
    """What a long-running call of ``caller`` may show, kept fresh: the operator's role and
    communes and the gateways in them are read again once :data:`SCOPE_RECHECK_S` old."""

    def __init__(
        self,
        gate: Gatekeeper,
        caller: Caller,
        needed: str,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gate = gate
        self.caller = caller
        self.needed = needed
        self.monotonic = monotonic
        self._visible: set[str] = set()
        self._read_at = -float("inf")

    @property
    def stale(self) -> bool:
        return self.monotonic() - self._read_at >= SCOPE_RECHECK_S

    async def refresh(self, context: Context) -> None:
        """Read the scope again (aborts if the operator may no longer call at all)."""
        started = self.monotonic()
        self.caller = await self.gate.registration(context, self.caller, self.needed)
        communes = await self.gate.live_communes()
        if "*" in self.caller.operator.communes:
            self._visible = set(communes)
        else:
            self._visible = {g for g, c in communes.items() if self.caller.in_scope(c)}
        self._read_at = started

    def visible(self, gateway_id: str) -> bool:
        """Whether ``gateway_id`` is in scope, as of the last :meth:`refresh`."""
        return gateway_id in self._visible
