"""The orchestrator's Prometheus metrics: what each part counts as it works.

One :class:`Metrics` per orchestrator process (tests run several in one interpreter, so
nothing is registered in prometheus_client's global registry). The parts that do the work
increment its counters; gauges that are a reading of the present (connected gateways,
documents not converged, campaign progress, readiness) are collected at scrape time by
:mod:`orchestrator.observe`, which serves ``/metrics``.

Another subsystem adds its own series with :meth:`Metrics.add_collector`: a function
called at each scrape that yields ``prometheus_client`` metric families. The alarms
subsystem hooks in that way (``ondijon_alarms{state,severity}``,
:mod:`orchestrator.alarms.metrics`).

Every name is listed in :data:`NAMES` with its type; the Grafana dashboard
(``deploy/grafana/ondijon.json``) is checked against a real scrape in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

# Why a stream is refused: a fixed set, so the label's cardinality is bounded.
REFUSALS = ("not_ready", "unauthenticated", "unregistered", "rate_limited")


class _Collect(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


class Metrics:
    """Counters and histograms of one orchestrator, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.streams_opened = Counter(
            "ondijon_streams_opened", "GatewayLink streams accepted.", registry=r
        )
        self.streams_refused = Counter(
            "ondijon_streams_refused",
            "GatewayLink streams refused, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in REFUSALS:
            self.streams_refused.labels(reason)
        self.events_stored = Counter(
            "ondijon_events_stored", "Gateway events stored (new ones, not replays).", registry=r
        )
        self.device_reports_stored = Counter(
            "ondijon_device_states_stored", "Device states received in state reports.", registry=r
        )
        self.store_commit_seconds = Histogram(
            "ondijon_store_commit_seconds",
            "Time to commit one group of writes to the store.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.enrollment_failures = Counter(
            "ondijon_enrollment_failures",
            "Enrollments refused (bad request, token or key; or too many from an address).",
            ["reason"],
            registry=r,
        )
        for reason in ("refused", "rate_limited"):
            self.enrollment_failures.labels(reason)
        self.admission_refusals = Counter(
            "ondijon_admission_refusals",
            "Calls refused by admission limits (rates, stream caps).",
            registry=r,
        )

    def add_collector(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Have ``collect()`` called at each scrape; it yields metric families."""
        self.registry.register(_Collect(collect))


# Every series the orchestrator exposes, with its Prometheus type (counters end in _total).
NAMES = {
    "ondijon_streams_opened_total": "counter",
    "ondijon_streams_refused_total": "counter",
    "ondijon_events_stored_total": "counter",
    "ondijon_device_states_stored_total": "counter",
    "ondijon_store_commit_seconds": "histogram",
    "ondijon_enrollment_failures_total": "counter",
    "ondijon_admission_refusals_total": "counter",
    "ondijon_gateways_connected": "gauge",
    "ondijon_ready": "gauge",
    "ondijon_migrating": "gauge",
    "ondijon_documents_not_converged": "gauge",
    "ondijon_campaign_gateways": "gauge",
    "ondijon_campaign_wave": "gauge",
    "ondijon_alarms": "gauge",
}
