"""Enrollment: a gateway trades a one-time token and a CSR for its first certificate.

Enroll is served on the enrollment port (server-authenticated TLS: the gateway has no
certificate yet, the token is its credential). The CSR is checked before the token is
spent, so a broken request does not burn the installer's token; the token's use and the
certificate's record commit in one transaction. Refusals are logged without the token.

Renew is served on the mutual-TLS port: a gateway with a valid, unrevoked certificate gets
a new one for the same identity (the identity comes from the presented certificate).
"""

from __future__ import annotations

import logging
from datetime import timedelta

import grpc
import sqlalchemy as sa

from orchestrator.app import Orchestrator
from orchestrator.auth import AuthError, peer_of, require_role
from orchestrator.store.store import Conflict, NotFound, Store
from orchestrator.wire import timestamp
from protos.ondijon.v1 import enrollment_pb2, enrollment_pb2_grpc
from provisioning.ca import CAError, IssuedCertificate
from provisioning.identity import Identity, IdentityError, Role, check_name
from provisioning.tokens import token_digest

log = logging.getLogger("ondijon.orchestrator.enrollment")

MAX_CSR_BYTES = 16 * 1024


class EnrollmentService(enrollment_pb2_grpc.EnrollmentServicer):
    def __init__(self, app: Orchestrator, *, allow_enroll: bool, allow_renew: bool) -> None:
        self.app = app
        self.allow_enroll = allow_enroll
        self.allow_renew = allow_renew

    def _lifetime(self) -> timedelta:
        return timedelta(days=self.app.config.gateway_certificate_days)

    async def Enroll(
        self,
        request: enrollment_pb2.EnrollRequest,
        context: grpc.aio.ServicerContext[
            enrollment_pb2.EnrollRequest, enrollment_pb2.EnrollResponse
        ],
    ) -> enrollment_pb2.EnrollResponse:
        if not self.allow_enroll:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "enroll on the enrollment port, not this one"
            )
        try:
            check_name("gateway_id", request.gateway_id)
        except IdentityError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if not request.serial or len(request.serial) > 128:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "serial: 1 to 128 characters")
        if not request.token or len(request.token) > 256:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "token: missing or too long")
        if len(request.csr_pem) > MAX_CSR_BYTES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "csr_pem: too large")
        now = self.app.clock.now()
        identity = Identity(Role.GATEWAY, request.gateway_id)
        try:
            issued = self.app.ca.issue_for_csr(
                request.csr_pem, identity, now=now, lifetime=self._lifetime()
            )
        except CAError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        store = self.app.runner.store
        digest = token_digest(request.token)

        def spend(conn: sa.Connection) -> None:
            store.consume_token(
                conn,
                token_sha256=digest,
                gateway_id=request.gateway_id,
                serial=request.serial,
                now=now,
            )
            _record(store, conn, issued, identity)

        try:
            await self.app.runner.write(spend)
        except (Conflict, NotFound) as exc:
            log.warning("enrollment refused for gateway %s: %s", request.gateway_id, exc)
            await self._audit(request.gateway_id, "refused", str(exc))
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        log.info("gateway %s enrolled, certificate %s", request.gateway_id, issued.serial_hex)
        await self._audit(request.gateway_id, "ok", f"certificate {issued.serial_hex}")
        return enrollment_pb2.EnrollResponse(
            certificate_pem=issued.chain_pem,
            ca_chain_pem=self.app.ca.chain_pem,
            not_after=timestamp(issued.not_after),
        )

    async def Renew(
        self,
        request: enrollment_pb2.RenewRequest,
        context: grpc.aio.ServicerContext[
            enrollment_pb2.RenewRequest, enrollment_pb2.RenewResponse
        ],
    ) -> enrollment_pb2.RenewResponse:
        if not self.allow_renew:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "renew over mutual TLS on the main port"
            )
        try:
            peer = peer_of(context)
            require_role(peer, Role.GATEWAY)
            await self.app.check_certificate(peer)
        except AuthError as exc:
            await context.abort(exc.code, str(exc))
        if len(request.csr_pem) > MAX_CSR_BYTES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "csr_pem: too large")
        now = self.app.clock.now()
        try:
            issued = self.app.ca.issue_for_csr(
                request.csr_pem, peer.identity, now=now, lifetime=self._lifetime()
            )
        except CAError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        store = self.app.runner.store
        await self.app.runner.write(lambda c: _record(store, c, issued, peer.identity))
        log.info("gateway %s renewed, certificate %s", peer.identity.name, issued.serial_hex)
        return enrollment_pb2.RenewResponse(
            certificate_pem=issued.chain_pem,
            ca_chain_pem=self.app.ca.chain_pem,
            not_after=timestamp(issued.not_after),
        )

    async def _audit(self, gateway_id: str, result: str, detail: str) -> None:
        store = self.app.runner.store
        now = self.app.clock.now()
        await self.app.runner.write(
            lambda c: store.audit(
                c,
                at=now,
                actor=f"gateway:{gateway_id}",
                action="enroll",
                target=gateway_id,
                commune="",
                result=result,
                detail=detail,
            )
        )


def _record(store: Store, conn: sa.Connection, issued: IssuedCertificate, who: Identity) -> None:
    cert = issued.certificate
    store.record_certificate(
        conn,
        serial_hex=issued.serial_hex,
        role=who.role.value,
        name=who.name,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )
