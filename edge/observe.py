"""The agent's metrics and health on an optional local port (``[observe] listen``).

``/metrics`` (Prometheus), ``/livez`` and ``/readyz`` (ready once the agent drives its
equipment). Series:

- ``ondijon_agent_outbox_events{priority}``: events recorded and not yet acknowledged;
- ``ondijon_agent_outbox_oldest_age_seconds``: how long the oldest of them has waited
  (on the agent's clock; 0 when the outbox is empty);
- ``ondijon_agent_last_sync_timestamp_seconds``: when the orchestrator last answered
  (Unix time, real clock; 0 before the first answer), and ``ondijon_agent_connected``;
- ``ondijon_agent_device_faults{kind}``: devices reporting at least one fault, by kind;
- ``ondijon_agent_clock_trusted``: 1 once the wall clock is trusted (synchronised or RTC).

Readings are taken on the agent's event loop every :data:`REFRESH_SECONDS` (the outbox's
SQLite connection and the devices belong to it) and served from that snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from foundation.observe import ObserveServer

REFRESH_SECONDS = 5.0
KINDS = ("lamp", "bollard", "signal", "cabinet")


@dataclass(frozen=True)
class Readings:
    """What the agent shows its monitoring, at one instant."""

    ready: bool = False
    outbox_events: dict[str, int] = field(default_factory=dict)  # by priority name
    oldest_age_s: float = 0.0
    last_sync: float = 0.0
    connected: bool = False
    device_faults: dict[str, int] = field(default_factory=dict)  # by kind
    clock_trusted: bool = False


class _Collector(Collector):
    def __init__(self, observer: AgentObserver) -> None:
        self._observer = observer

    def collect(self) -> Iterable[Metric]:
        r = self._observer.readings
        outbox = GaugeMetricFamily(
            "ondijon_agent_outbox_events",
            "Events recorded and not yet acknowledged, by priority.",
            labels=["priority"],
        )
        for priority, count in sorted(r.outbox_events.items()):
            outbox.add_metric([priority], count)
        yield outbox
        yield GaugeMetricFamily(
            "ondijon_agent_outbox_oldest_age_seconds",
            "How long the oldest unacknowledged event has waited.",
            value=r.oldest_age_s,
        )
        yield GaugeMetricFamily(
            "ondijon_agent_last_sync_timestamp_seconds",
            "When the orchestrator last answered (Unix time; 0: never).",
            value=r.last_sync,
        )
        yield GaugeMetricFamily(
            "ondijon_agent_connected", "1 while the link is up.", value=int(r.connected)
        )
        faults = GaugeMetricFamily(
            "ondijon_agent_device_faults", "Devices reporting a fault, by kind.", labels=["kind"]
        )
        for kind in KINDS:
            faults.add_metric([kind], r.device_faults.get(kind, 0))
        yield faults
        yield GaugeMetricFamily(
            "ondijon_agent_clock_trusted",
            "1 once the wall clock is trusted.",
            value=int(r.clock_trusted),
        )


class AgentObserver:
    """Serves the readings ``read()`` gives on ``listen`` (``host:port``)."""

    def __init__(self, listen: str, read: Callable[[], Readings]) -> None:
        self.read = read
        self.readings = Readings()
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        self.server = ObserveServer(listen, self.registry, self._ready)

    def _ready(self) -> tuple[bool, str]:
        return (True, "") if self.readings.ready else (False, "equipment not driven yet")

    async def run(self) -> None:
        """Serve, refreshing the readings, until cancelled."""
        self.server.start()
        try:
            while True:
                self.readings = self.read()
                await asyncio.sleep(REFRESH_SECONDS)
        finally:
            await asyncio.to_thread(self.server.stop)
