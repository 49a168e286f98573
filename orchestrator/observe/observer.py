"""What an orchestrator shows its monitoring: ``/metrics``, ``/livez``, ``/readyz``.

Set ``[observe] listen = "0.0.0.0:9464"`` in the orchestrator's TOML. The endpoint starts
before the store is opened, so a replica migrating its schema at start-up answers
``/readyz`` 503 ("migrating the store") rather than nothing; afterwards it is ready while
it can reach its store (the same verdict as the gRPC health service, see
:mod:`orchestrator.ingest.readiness`).

Series read at scrape time (besides the counters of :mod:`orchestrator.metrics`):

- ``ondijon_gateways_connected``: GatewayLink streams held by this replica;
- ``ondijon_ready`` (1/0) and ``ondijon_migrating`` (1/0);
- ``ondijon_documents_not_converged{kind}``: desired documents their gateway does not
  hold as issued, fleet-wide (the same on every replica);
- ``ondijon_campaign_gateways{campaign,status,stage}`` and ``ondijon_campaign_wave{campaign}``
  for campaigns running, paused or halted.

The store counts are refreshed every :data:`REFRESH_SECONDS` on the event loop (a scrape
never waits on the store); a failed refresh keeps the last counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from foundation.observe import ObserveServer
from orchestrator.ingest.hub import Hub
from orchestrator.ingest.readiness import Readiness
from orchestrator.metrics import Metrics
from orchestrator.store.observe import campaign_progress, documents_not_converged
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import firmware_pb2, link_pb2

log = logging.getLogger("ondijon.orchestrator.observe")

REFRESH_SECONDS = 15.0


def _kind(number: int) -> str:
    try:
        name = link_pb2.DocumentKind.Name(number)  # type: ignore[arg-type]
        return name.removeprefix("DOCUMENT_KIND_").lower()
    except ValueError:
        return str(number)


def _stage(number: int) -> str:
    if number == 0:
        return "pending"
    try:
        name = firmware_pb2.FirmwareStage.Name(number)  # type: ignore[arg-type]
        return name.removeprefix("FIRMWARE_STAGE_").lower()
    except ValueError:
        return str(number)


class Observer:
    """The metrics of one orchestrator and, when ``listen`` is set, their HTTP endpoint."""

    def __init__(self, metrics: Metrics, listen: str = "") -> None:
        self.metrics = metrics
        self.runner: StoreRunner | None = None
        self.hub: Hub | None = None
        self.readiness: Readiness | None = None
        self.migrating = True
        self._not_converged: dict[int, int] = {}
        self._campaigns: list[tuple[str, str, int, int, int]] = []
        metrics.add_collector(self._collect)
        self.server = (
            ObserveServer(listen, metrics.registry, self.ready).start() if listen else None
        )
        if self.server is not None:
            log.info("metrics and health on http://%s (port %d)", listen, self.server.port)

    def attach(self, runner: StoreRunner, hub: Hub, readiness: Readiness) -> None:
        """The store is open and migrated: readiness now follows the store."""
        self.runner, self.hub, self.readiness = runner, hub, readiness
        self.migrating = False
        runner.on_commit = self.metrics.store_commit_seconds.observe

    def ready(self) -> tuple[bool, str]:
        if self.migrating or self.runner is None or self.readiness is None:
            return False, "migrating the store"
        if not self.readiness.ready:
            why = self.readiness.reason
            return False, f"store unreachable ({why})" if why else "store unreachable"
        if not self.runner.available:
            return False, "store unreachable"
        return True, ""

    async def run(self) -> None:
        """Refresh the store counts until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(REFRESH_SECONDS)

    async def refresh(self) -> None:
        runner = self.runner
        if runner is None or not runner.available:
            return
        with contextlib.suppress(Exception):  # store trouble: readiness says so
            self._not_converged, self._campaigns = await runner.read(
                lambda c: (documents_not_converged(c), campaign_progress(c))
            )

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()

    def _collect(self) -> Iterable[Metric]:
        ready, _ = self.ready()
        yield GaugeMetricFamily("ondijon_ready", "1 while this replica serves.", value=int(ready))
        yield GaugeMetricFamily(
            "ondijon_migrating",
            "1 while the store is migrated.",
            value=int(self.migrating),
        )
        connected = len(self.hub.sessions()) if self.hub is not None else 0
        yield GaugeMetricFamily(
            "ondijon_gateways_connected", "GatewayLink streams held here.", value=connected
        )
        docs = GaugeMetricFamily(
            "ondijon_documents_not_converged",
            "Desired documents their gateway does not hold as issued.",
            labels=["kind"],
        )
        for number in link_pb2.DocumentKind.values():
            if number:
                docs.add_metric([_kind(number)], self._not_converged.get(number, 0))
        yield docs
        gateways = GaugeMetricFamily(
            "ondijon_campaign_gateways",
            "Gateways of each live campaign by the stage they reported.",
            labels=["campaign", "status", "stage"],
        )
        waves = GaugeMetricFamily(
            "ondijon_campaign_wave", "The wave each live campaign is in.", labels=["campaign"]
        )
        seen: set[str] = set()
        for campaign, status, wave, stage, count in self._campaigns:
            gateways.add_metric([campaign, status, _stage(stage)], count)
            if campaign not in seen:
                seen.add(campaign)
                waves.add_metric([campaign], wave)
        yield gateways
        yield waves
