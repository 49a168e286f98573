"""The orchestrator's shared parts, handed to every service: store, hub, CA, clock, limits.

Also the one certificate check every authenticated call goes through: TLS proved the
caller holds a key the OnDijon CA certified; :meth:`Orchestrator.check_certificate` adds
what gRPC Python cannot do, refusing certificates that are expired, unknown to the store or
revoked. Refusals are audited (at most once per certificate per cache period).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from foundation.clock import Clock
from orchestrator.access.limits import RateLimits
from orchestrator.access.peers import AuthError, Peer
from orchestrator.audit import log as audit
from orchestrator.config import OrchestratorConfig
from orchestrator.identity.crl import CrlPublisher
from orchestrator.ingest.hub import Hub
from orchestrator.metrics import Metrics
from orchestrator.store.runner import StoreRunner
from provisioning.ca import CertificateAuthority

if TYPE_CHECKING:
    from orchestrator.firmware.runner import CampaignRunner
    from orchestrator.ingest.readiness import Readiness
    from orchestrator.ingest.routing import Router

log = logging.getLogger("ondijon.orchestrator")

# How long a certificate's "not revoked" answer is trusted before asking the store again.
# Revocations made through this process take effect at once (cache entries dropped, open
# streams cancelled); revocations made on another replica within this delay (the
# revocation sweeper of each replica re-checks open streams as often).
CERT_CACHE_SECONDS = 5.0


@dataclass
class Orchestrator:
    config: OrchestratorConfig
    runner: StoreRunner
    hub: Hub
    ca: CertificateAuthority
    clock: Clock
    rates: RateLimits = field(default_factory=RateLimits)
    crl: CrlPublisher = field(init=False)
    # Firmware campaigns (orchestrator.firmware.runner), set by campaign_admin.install_firmware.
    campaigns: CampaignRunner | None = None
    # This process's name among the replicas sharing the store (new at every start).
    replica: str = ""
    # Cross-replica delivery of document and command news (orchestrator.ingest.routing).
    router: Router = field(init=False)
    # Whether this replica can reach its store (orchestrator.ingest.readiness), set by the server.
    readiness: Readiness | None = None
    # What this process counts (orchestrator.metrics), served by orchestrator.observe.
    metrics: Metrics = field(default_factory=Metrics)
    _cert_cache: dict[str, tuple[float, str | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from orchestrator.ingest.routing import Router, new_replica_id  # it builds on this module

        self.replica = self.replica or new_replica_id()
        self.crl = CrlPublisher(self.ca, self.runner, self.config.state_dir / "crl.pem")
        self.router = Router(self)

    async def check_certificate(self, peer: Peer) -> None:
        """Refuse certificates that are expired, unknown to the store or revoked."""
        if peer.not_after_ts <= self.clock.now().timestamp():
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "client certificate has expired")
        cached = self._cert_cache.get(peer.serial_hex)
        if cached is None or time.monotonic() - cached[0] > CERT_CACHE_SECONDS:
            record = await self.runner.read(
                lambda c: self.runner.store.get_certificate(c, peer.serial_hex)
            )
            if record is None:
                verdict: str | None = "client certificate is not known to this orchestrator"
            elif record.revoked_at is not None:
                verdict = "client certificate has been revoked"
            elif record.name != peer.identity.name or record.role != peer.identity.role.value:
                verdict = "client certificate does not match its registration"
            else:
                verdict = None
            cached = (time.monotonic(), verdict)
            self._cert_cache[peer.serial_hex] = cached
            if verdict is not None:
                log.warning(
                    "refused %s (certificate %s): %s", peer.identity, peer.serial_hex, verdict
                )
                await self.audit(
                    actor=str(peer.identity),
                    action="auth.refused",
                    target=peer.serial_hex,
                    result="refused",
                    detail=verdict,
                )
        if cached[1] is not None:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, cached[1])

    def forget_certificates(self, serials: set[str]) -> None:
        """Drop cached verdicts so the next call re-reads the store."""
        for serial in serials:
            self._cert_cache.pop(serial, None)

    async def audit(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        result: str,
        commune: str = "",
        detail: str = "",
    ) -> None:
        """Append an entry to the audit log, stamped with this orchestrator's clock.

        Args:
            actor: the caller's identity URI (``str(peer.identity)``).
            action: what was attempted, dotted (``command.send``, ``gateway.revoke``).
            target: what it was done to (a gateway id, ``<gateway>/<command id>``).
            result: ``ok``, ``refused`` or ``error``.
            commune: where, for scoped reading of the log.
            detail: why it was refused, or what was done; never a secret.
        """
        await audit.write(
            self.runner,
            at=self.clock.now(),
            actor=actor,
            action=action,
            target=target,
            commune=commune,
            result=result,
            detail=detail,
        )
