"""Readiness: a replica serves gateways only while it can reach its store.

The store runner reports trouble (an operation past its deadline, a lost connection);
this module then probes the store with a trivial query, and also probes it every
:data:`PROBE_SECONDS` so a quiet replica notices too. When a probe fails the replica:

- says so: the standard gRPC health service (``grpc.health.v1.Health``, on both ports,
  for load balancers) answers NOT_SERVING;
- closes every gateway stream and event feed with UNAVAILABLE and a reason, so agents
  reconnect and the balancer sends them to a replica that stores what they send (nothing
  is acknowledged that was not stored: their outboxes keep it);
- refuses new streams and fails store operations at once (UNAVAILABLE) instead of
  letting callers wait for their deadline;

and probes every :data:`RETRY_SECONDS` until the store answers: then it is ready again by
itself, SERVING, and catches its gateways up (:mod:`orchestrator.ingest.routing`).

Probes run on real time (the store is a real peer, even under a simulated street clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

from orchestrator.ingest.hub import Hub
from orchestrator.ingest.link import NOT_READY
from orchestrator.store.runner import StoreRunner

log = logging.getLogger("ondijon.orchestrator.readiness")

PROBE_SECONDS = 2.0
RETRY_SECONDS = 1.0
# Services whose health is reported ("" is the whole server).
SERVICES = ("", "ondijon.v1.GatewayLink", "ondijon.v1.ControlCentre")


class Readiness:
    """Watches the store and tells gateways, balancers and callers whether to come here."""

    def __init__(self, runner: StoreRunner, hub: Hub, health_servicer: Any) -> None:
        self.runner = runner
        self.hub = hub
        self.health = health_servicer
        self.ready = True
        self.losses = 0

    @property
    def reason(self) -> str:
        """The last trouble the store runner reported."""
        return self.runner.trouble_reason

    async def start(self) -> None:
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    async def stopping(self) -> None:
        """The process is stopping: NOT_SERVING for good, so balancers send no one here."""
        self.ready = False
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def run(self) -> None:
        """Probe until cancelled."""
        while True:
            interval = PROBE_SECONDS if self.ready else RETRY_SECONDS
            # Something went wrong with the store (the runner says so): probe it now.
            with contextlib.suppress(TimeoutError):  # (not wait_for: see routing)
                async with asyncio.timeout(interval):
                    await self.runner.troubled.wait()
            self.runner.troubled.clear()
            timeout = min(self.runner.deadline_s, 3.0)
            ok = await self.runner.probe(timeout)
            if ok and not self.ready:
                await self._back()
            elif not ok and self.ready:
                await self._lost()

    async def _lost(self) -> None:
        self.ready = False
        self.losses += 1
        self.runner.available = False
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        closed = self.hub.close_all(grpc.StatusCode.UNAVAILABLE, NOT_READY)
        log.error(
            "the store is unreachable (%s): not ready, %d stream(s) closed", self.reason, closed
        )

    async def _back(self) -> None:
        self.ready = True
        self.runner.available = True
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.warning("the store answers again: ready")

    async def _set_health(self, status: int) -> None:
        for service in SERVICES:
            await self.health.set(service, status)


def health_servicer() -> Any:
    """gRPC's standard health service (``grpc.health.v1.Health``), asyncio flavour."""
    return health.aio.HealthServicer()  # type: ignore[attr-defined]
