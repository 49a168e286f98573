"""Enrollment: a gateway trades a one-time token and a CSR for its certificate.

Modelled on EST (RFC 7030: simple enroll, re-enroll, CA certificates) and AWS IoT fleet
provisioning by claim (a one-time credential traded for a device certificate whose key
never left the device).

Enroll is served on the enrollment port (server-authenticated TLS: the gateway has no
certificate yet, the token is its credential). The CSR is checked before the token is
spent, so a broken request does not burn the installer's token; spending the token,
retiring the gateway's earlier certificates ("superseded": a re-enrolled gateway has a
new key) and recording the new certificate commit in one transaction. Refusals are logged
and audited without the token, and an address that keeps failing is made to wait.

Renew is served on the mutual-TLS port: a gateway with a valid, unrevoked certificate gets
a new one for the same identity (the identity comes from the presented certificate, never
from the request). Once the answer is sent, the stream opened with the older certificate
is closed, so the agent reconnects on the new one at once; the older certificate stays
valid until it expires (a renewal lost in transit must not lock a cabinet out).

GetCrl is served on both ports: the CRL is public and signed.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any, NoReturn

import grpc

from foundation.clock import Clock
from foundation.escaping import escape
from orchestrator.access.admission import address_of
from orchestrator.access.certificates import Certificates
from orchestrator.access.limits import BucketMap, LiveRates, RateLimits
from orchestrator.access.peers import AuthError, peer_of, require_role
from orchestrator.audit.log import Auditor
from orchestrator.identity.crl import CrlPublisher
from orchestrator.identity.revocation import Revoker
from orchestrator.ingest.checks import WireError, timestamp
from orchestrator.ingest.hub import Hub
from orchestrator.metrics import Metrics
from orchestrator.store.connection import Connection
from orchestrator.store.database import Conflict, NotFound, Store
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import enrollment_pb2, enrollment_pb2_grpc
from provisioning.ca import CAError, CertificateAuthority, IssuedCertificate, load_certs
from provisioning.identity import Identity, IdentityError, Role, check_name
from provisioning.tokens import token_digest

log = logging.getLogger("ondijon.orchestrator.enrollment")

MAX_CSR_BYTES = 16 * 1024
MAX_TOKEN_CHARS = 256
Context = grpc.aio.ServicerContext[Any, Any]


class EnrollmentService(enrollment_pb2_grpc.EnrollmentServicer):
    def __init__(
        self,
        *,
        runner: StoreRunner,
        clock: Clock,
        ca: CertificateAuthority,
        certificates: Certificates,
        audit: Auditor,
        crl: CrlPublisher,
        hub: Hub,
        revoker: Revoker,
        rates: LiveRates,
        certificate_days: int,
        allow_enroll: bool,
        allow_renew: bool,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.runner = runner
        self.store = runner.store
        self.clock = clock
        self.ca = ca
        self.certificates = certificates
        self.audit = audit
        self.crl = crl
        self.hub = hub
        self.revoker = revoker
        self.rates = rates
        self.certificate_days = certificate_days
        self.allow_enroll = allow_enroll
        self.allow_renew = allow_renew
        self._rates: RateLimits | None = None
        self._failures = self._renewals = BucketMap(0, 0, 0)

    def _budgets(self) -> None:
        # Follow the limits if they are replaced while running (tests, a reload).
        rates = self.rates.current
        if rates is not self._rates:
            self._rates = rates
            self._failures = BucketMap(
                rates.enroll_failures_per_s, rates.enroll_failure_burst, rates.tracked_peers
            )
            self._renewals = BucketMap(
                rates.renewals_per_s, rates.renewal_burst, rates.tracked_peers
            )

    def _lifetime(self) -> timedelta:
        return timedelta(days=self.certificate_days)

    async def Enroll(
        self, request: enrollment_pb2.EnrollRequest, context: Context
    ) -> enrollment_pb2.EnrollResponse:
        if not self.allow_enroll:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "enroll on the enrollment port, not this one"
            )
        address = address_of(context.peer())
        self._budgets()
        # Check and spend in one step: the attempt takes its share of the address's failure
        # budget up front (given back if it succeeds), so guesses sent many at a time are
        # evaluated against the budget, not all admitted before the first is counted.
        if not self._failures.take(address, 1, time.monotonic()):
            self.metrics.enrollment_failures.labels("rate_limited").inc()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many refused enrollments from this address; wait a few minutes",
            )
        try:
            _check_enroll(request)
        except (IdentityError, WireError) as exc:
            await self._refused(context, address, request.gateway_id, "", str(exc), audit=False)
        now = self.clock.now()
        identity = Identity(Role.GATEWAY, request.gateway_id)
        try:
            # Checked (and signed) before the token is looked at: a broken request or a key
            # TLS cannot use does not burn the installer's token.
            issued = self.ca.issue_for_csr(
                request.csr_pem, identity, now=now, lifetime=self._lifetime()
            )
        except CAError as exc:
            await self._refused(context, address, request.gateway_id, "", str(exc), audit=False)
        store = self.store
        digest = token_digest(request.token)
        gateway_id = request.gateway_id
        requested_key = issued.certificate.public_key()

        def same_key(pem: bytes) -> bool:
            return load_certs(pem, "certificate_pem")[0].public_key() == requested_key

        def spend(conn: Connection) -> tuple[bytes | None, list[str]]:
            earlier = store.consume_token(
                conn,
                token_sha256=digest,
                gateway_id=gateway_id,
                serial=request.serial,
                now=now,
                certificate_serial=issued.serial_hex,
                certificate_pem=issued.chain_pem,
                same_key=same_key,
            )
            if earlier is not None:
                return earlier, []  # a retry: nothing new to record or supersede
            superseded = store.revoke_certificates(
                conn,
                role=Role.GATEWAY.value,
                name=gateway_id,
                reason="superseded: the gateway enrolled again",
                now=now,
            )
            _record(conn, store, issued, identity)
            return None, superseded

        commune = await self._commune(gateway_id)
        try:
            earlier, superseded = await self.runner.write(spend)
        except (Conflict, NotFound) as exc:
            await self._refused(context, address, gateway_id, commune, str(exc), audit=True)
        self._failures.give_back(address, 1, time.monotonic())
        if earlier is not None:
            return await self._answer_retry(gateway_id, commune, earlier)
        if superseded:
            self.revoker.close_streams(set(superseded))
            await self.crl.current(now, force=True)
        log.info("gateway %s enrolled, certificate %s", gateway_id, issued.serial_hex)
        detail = f"certificate {issued.serial_hex}"
        if superseded:
            detail += f"; superseded {', '.join(superseded)}"
        await self.audit.record(
            actor=identity.uri,
            action="gateway.enroll",
            target=gateway_id,
            commune=commune,
            result="ok",
            detail=detail,
        )
        return enrollment_pb2.EnrollResponse(**self._certificate(issued.chain_pem))

    async def _answer_retry(
        self, gateway_id: str, commune: str, chain_pem: bytes
    ) -> enrollment_pb2.EnrollResponse:
        """The answer to a retried enrollment: the certificate the token was spent on."""
        serial = format(load_certs(chain_pem, "certificate_pem")[0].serial_number, "x")
        log.info("gateway %s retried its enrollment, certificate %s sent again", gateway_id, serial)
        await self.audit.record(
            actor=Identity(Role.GATEWAY, gateway_id).uri,
            action="gateway.enroll",
            target=gateway_id,
            commune=commune,
            result="ok",
            detail=f"retry with the same token and key: certificate {serial} sent again",
        )
        return enrollment_pb2.EnrollResponse(**self._certificate(chain_pem))

    def _certificate(self, chain_pem: bytes) -> dict[str, Any]:
        """The fields of an enrollment or renewal answer for the certificate ``chain_pem``."""
        not_after = load_certs(chain_pem, "certificate_pem")[0].not_valid_after_utc
        return {
            "certificate_pem": chain_pem,
            "ca_chain_pem": self.ca.chain_pem,
            "not_after": timestamp(not_after),
        }

    async def _commune(self, gateway_id: str) -> str:
        try:
            gateway = await self.runner.read(self.store.get_gateway, gateway_id)
        except NotFound:
            return ""
        return gateway.commune

    async def _refused(
        self,
        context: Context,
        address: str,
        gateway_id: str,
        commune: str,
        reason: str,
        *,
        audit: bool,
    ) -> NoReturn:
        """Log a refusal (never the token), audit it and answer; it was counted against
        the address when the attempt began."""
        log.warning(
            "enrollment refused for gateway %s from %s: %s",
            escape(gateway_id),
            address,
            escape(reason),
        )
        if audit:
            # Only once the request was well-formed: garbage is counted, not recorded.
            await self.audit.record(
                actor=Identity(Role.GATEWAY, gateway_id).uri,
                action="gateway.enroll",
                target=gateway_id,
                commune=commune,
                result="refused",
                detail=f"{reason} (from {address})",
            )
        code = grpc.StatusCode.PERMISSION_DENIED if audit else grpc.StatusCode.INVALID_ARGUMENT
        self.metrics.enrollment_failures.labels("refused").inc()
        await context.abort(code, reason)
        raise AssertionError("unreachable")

    async def Renew(
        self, request: enrollment_pb2.RenewRequest, context: Context
    ) -> enrollment_pb2.RenewResponse:
        if not self.allow_renew:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "renew over mutual TLS on the main port"
            )
        try:
            peer = peer_of(context)
            require_role(peer, Role.GATEWAY)
            await self.certificates.check(peer)
        except AuthError as exc:
            await context.abort(exc.code, str(exc))
        if len(request.csr_pem) > MAX_CSR_BYTES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"csr_pem: larger than {MAX_CSR_BYTES} bytes"
            )
        self._budgets()
        if not self._renewals.take(peer.identity.uri, 1, time.monotonic()):
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "renewals: too many for this gateway; the current certificate is still valid",
            )
        now = self.clock.now()
        # A CAError (a field error) is answered INVALID_ARGUMENT by the admission.
        issued = self.ca.issue_for_csr(
            request.csr_pem, peer.identity, now=now, lifetime=self._lifetime()
        )
        await self.runner.write(_record, self.store, issued, peer.identity)
        log.info("gateway %s renewed, certificate %s", peer.identity.name, issued.serial_hex)
        await self.audit.record(
            actor=peer.identity.uri,
            action="gateway.renew",
            target=peer.identity.name,
            commune=await self._commune(peer.identity.name),
            result="ok",
            detail=f"certificate {issued.serial_hex} replaces {peer.serial_hex}",
        )
        hub, old = self.hub, {peer.serial_hex}

        def reconnect(_: object) -> None:
            hub.drop_certificate(
                old, grpc.StatusCode.UNAVAILABLE, "certificate renewed: reconnect with the new one"
            )

        # After the answer is on the wire, not before: the agent must have its new
        # certificate in hand when its stream closes.
        context.add_done_callback(reconnect)  # type: ignore[arg-type]  # stubs: a class
        return enrollment_pb2.RenewResponse(**self._certificate(issued.chain_pem))

    async def GetCrl(
        self, request: enrollment_pb2.GetCrlRequest, context: Context
    ) -> enrollment_pb2.GetCrlResponse:
        crl = await self.crl.current(self.clock.now())
        return enrollment_pb2.GetCrlResponse(
            crl_pem=crl.pem,
            crl_number=crl.number,
            this_update=timestamp(crl.this_update),
            next_update=timestamp(crl.next_update),
        )


def _check_enroll(request: enrollment_pb2.EnrollRequest) -> None:
    check_name("gateway_id", request.gateway_id)
    if not request.serial or len(request.serial) > 128 or not request.serial.isprintable():
        raise WireError("serial", "1 to 128 printable characters")
    if not request.token or len(request.token) > MAX_TOKEN_CHARS:
        raise WireError("token", f"missing or longer than {MAX_TOKEN_CHARS} characters")
    if not request.csr_pem:
        raise WireError("csr_pem", "missing")
    if len(request.csr_pem) > MAX_CSR_BYTES:
        raise WireError("csr_pem", f"larger than {MAX_CSR_BYTES} bytes")


def _record(conn: Connection, store: Store, issued: IssuedCertificate, who: Identity) -> None:
    cert = issued.certificate
    store.record_certificate(
        conn,
        serial_hex=issued.serial_hex,
        role=who.role.value,
        name=who.name,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )
