"""The admin API's identity calls: revoke a gateway, issue a fresh enrollment token, read
the audit log. Admins only, within their communes; every call that writes is audited.

A revoked gateway comes back only through a person: an admin issues a fresh token
(``ondijon gateway token``), the installer enrolls the cabinet again
(``ondijon edge enroll``), which gives it a new key and a new certificate.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import grpc

from foundation.clock import Clock
from orchestrator.access.gate import ADMIN, Attempt, Gatekeeper
from orchestrator.audit import log as audit
from orchestrator.identity.revocation import Revoker
from orchestrator.ingest.checks import MAX_STORED_INT, WireError, timestamp
from orchestrator.store.connection import Connection
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import control_pb2
from provisioning.identity import Role
from provisioning.tokens import new_token

Context = grpc.aio.ServicerContext[Any, Any]

MAX_REASON = 256
MAX_TOKEN_TTL = timedelta(days=30)


class IdentityAdmin:
    """The admin API's identity calls, each through the one gate."""

    def __init__(
        self,
        *,
        gate: Gatekeeper,
        revoker: Revoker,
        runner: StoreRunner,
        clock: Clock,
        audit: audit.Auditor,
        token_ttl_hours: float,
    ) -> None:
        self.gate = gate
        self.revoker = revoker
        self.runner = runner
        self.clock = clock
        self.audit = audit
        self.token_ttl_hours = token_ttl_hours

    async def revoke_gateway(
        self, request: control_pb2.RevokeGatewayRequest, context: Context
    ) -> control_pb2.RevokeGatewayResponse:
        """Revoke every certificate of a gateway and close its stream (``gateway.revoke``)."""
        gate = self.gate
        attempt = Attempt("gateway.revoke", request.gateway_id)
        caller = await gate.caller(context, ADMIN, attempt)
        gateway = await gate.gateway(context, caller, request.gateway_id, attempt)
        attempt = Attempt(attempt.action, attempt.target, gateway.commune)
        if len(request.reason) > MAX_REASON or not request.reason.isprintable():
            await gate.refuse(
                context,
                caller,
                attempt,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"reason: at most {MAX_REASON} printable characters",
            )
        reason = request.reason or "unspecified"
        done = await self.revoker.revoke(Role.GATEWAY, gateway.gateway_id, reason)
        await gate.done(
            caller,
            attempt,
            f"reason: {reason}; revoked {', '.join(done.serials) or 'none (no live certificate)'}; "
            f"{done.streams_closed} open stream(s) closed; CRL {done.crl_number}",
        )
        return control_pb2.RevokeGatewayResponse(
            revoked_serials=done.serials,
            streams_closed=done.streams_closed,
            crl_number=done.crl_number,
        )

    async def issue_token(
        self, request: control_pb2.IssueEnrollmentTokenRequest, context: Context
    ) -> control_pb2.IssueEnrollmentTokenResponse:
        """A fresh one-time token bound to the gateway's serial (``gateway.token``)."""
        gate = self.gate
        attempt = Attempt("gateway.token", request.gateway_id)
        caller = await gate.caller(context, ADMIN, attempt)
        gateway = await gate.gateway(context, caller, request.gateway_id, attempt)
        attempt = Attempt(attempt.action, attempt.target, gateway.commune)
        ttl = timedelta(seconds=request.token_ttl_s or self.token_ttl_hours * 3600)
        if ttl > MAX_TOKEN_TTL:
            await gate.refuse(
                context,
                caller,
                attempt,
                grpc.StatusCode.INVALID_ARGUMENT,
                "token_ttl_s: at most 30 days",
            )
        now = self.clock.now()
        token, digest = new_token()
        store = self.runner.store

        def write(conn: Connection) -> int:
            # One live token per gateway: a token handed out earlier stops working.
            spent = store.spend_open_tokens(conn, gateway.gateway_id, now)
            store.add_token(
                conn,
                token_sha256=digest,
                gateway_id=gateway.gateway_id,
                serial=gateway.serial,
                expires_at=now + ttl,
            )
            return spent

        spent = await self.runner.write(write)
        await gate.done(
            caller,
            attempt,
            f"bound to serial {gateway.serial}, expires {(now + ttl):%Y-%m-%d %H:%M} UTC; "
            f"{spent} earlier unused token(s) withdrawn",
        )
        return control_pb2.IssueEnrollmentTokenResponse(
            enrollment_token=token, token_expires_at=timestamp(now + ttl)
        )

    async def list_audit(
        self, request: control_pb2.ListAuditRequest, context: Context
    ) -> control_pb2.ListAuditResponse:
        """A page of the audit log; an admin of some communes sees the entries of those."""
        gate = self.gate
        caller = await gate.caller(context, ADMIN, None)
        communes = None if "*" in caller.operator.communes else list(caller.operator.communes)
        query = audit_query(request, communes)  # a WireError is answered INVALID_ARGUMENT
        rows = await self.audit.page(query)
        entries = [
            control_pb2.AuditEntry(
                id=row["id"],
                at=timestamp(row["at"]),
                actor=row["actor"],
                action=row["action"],
                target=row["target"],
                commune=row["commune"],
                result=row["result"],
                detail=row["detail"],
            )
            for row in rows
        ]
        return control_pb2.ListAuditResponse(
            entries=entries, next_after_id=entries[-1].id if entries else 0
        )


def audit_query(request: control_pb2.ListAuditRequest, communes: Any) -> audit.AuditQuery:
    """The store query of a ListAudit request, or WireError naming the bad field."""
    for name, size in (("actor", 128), ("action", 64), ("commune", 128), ("result", 32)):
        if len(getattr(request, name)) > size:
            raise WireError(name, f"longer than {size} characters")
    if len(request.gateway_id) > 64:
        raise WireError("gateway_id", "longer than 64 characters")
    if request.after_id > MAX_STORED_INT:
        raise WireError("after_id", f"not an entry id (at most {MAX_STORED_INT})")
    if request.limit > audit.MAX_PAGE:
        raise WireError("limit", f"at most {audit.MAX_PAGE}")
    try:
        since = request.since.ToDatetime(tzinfo=None) if request.HasField("since") else None
        until = request.until.ToDatetime(tzinfo=None) if request.HasField("until") else None
    except (ValueError, OverflowError):
        raise WireError("since/until", "not a valid instant") from None
    return audit.AuditQuery(
        after_id=request.after_id,
        limit=request.limit or 100,
        since=since.replace(tzinfo=UTC) if since else None,
        until=until.replace(tzinfo=UTC) if until else None,
        actor=request.actor,
        action=request.action,
        commune=request.commune,
        result=request.result,
        gateway_id=request.gateway_id,
        communes=communes,
    )
