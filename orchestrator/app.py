"""The orchestrator's shared parts, handed to every service: store, hub, CA, clock, limits."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from ondijon.clock import Clock
from orchestrator.auth import AuthError, Peer
from orchestrator.config import OrchestratorConfig
from orchestrator.hub import Hub
from orchestrator.store.runner import StoreRunner
from provisioning.ca import CertificateAuthority

if TYPE_CHECKING:
    from orchestrator.campaigns import CampaignRunner

log = logging.getLogger("ondijon.orchestrator")

# How long a certificate's "not revoked" answer is trusted before asking the store again;
# revocations made through this process also cancel its open streams at once.
CERT_CACHE_SECONDS = 5.0


@dataclass
class Orchestrator:
    config: OrchestratorConfig
    runner: StoreRunner
    hub: Hub
    ca: CertificateAuthority
    clock: Clock
    # Firmware campaigns (orchestrator.campaigns), set by campaign_admin.install_firmware.
    campaigns: CampaignRunner | None = None
    _cert_cache: dict[str, tuple[float, str | None]] = field(default_factory=dict)

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
        if cached[1] is not None:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, cached[1])

    def forget_certificates(self, serials: set[str]) -> None:
        for serial in serials:
            self._cert_cache.pop(serial, None)
