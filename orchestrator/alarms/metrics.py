"""``ondijon_alarms{state,severity}``: the open alarms of the city, as Prometheus sees them.

Open alarms (grouped ones included: a mains loss counts its cabinet's lamps too) by view
state (unacknowledged, acknowledged, cleared, shelved; :func:`domain.alarms.state_of`) and
severity (warning, minor, major, critical). Every pair is exposed, 0 included, so a panel
or an alert rule never reads a series that is missing. The counts are fleet-wide (the
same on every replica) and read from the store every :data:`REFRESH_SECONDS`; a scrape
never waits on the store, and a failed refresh keeps the last counts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric

from domain.alarms import Severity, ViewState, state_of
from orchestrator.store import alarms as sql
from orchestrator.store.runner import StoreRunner

REFRESH_SECONDS = 15.0
STATES = tuple(s for s in ViewState if s is not ViewState.CLOSED)

Counts = dict[tuple[ViewState, Severity], int]


def count(rows: Iterable[tuple[int, bool, bool, datetime | None, int]], now: datetime) -> Counts:
    """The rows of :func:`orchestrator.store.alarms.open_counts` by (view state, severity)."""
    counts: Counts = {}
    for severity, active, acknowledged, shelved_until, n in rows:
        state = state_of(
            closed=False,
            active=active,
            acknowledged=acknowledged,
            shelved_until=shelved_until,
            now=now,
        )
        key = (state, Severity(severity))
        counts[key] = counts.get(key, 0) + n
    return counts


class AlarmGauge:
    """The counts behind ``ondijon_alarms``; :meth:`collect` is a :class:`Metrics` collector."""

    def __init__(self, runner: StoreRunner, now: Callable[[], datetime]) -> None:
        self.runner = runner
        self.now = now
        self.counts: Counts = {}

    async def run(self) -> None:
        """Refresh until cancelled (owned by the server's task set)."""
        while True:
            await self.refresh()
            await asyncio.sleep(REFRESH_SECONDS)

    async def refresh(self) -> None:
        if not self.runner.available:
            return
        with contextlib.suppress(Exception):  # store trouble: readiness says so
            rows = await self.runner.read(sql.open_counts)
            self.counts = count(rows, self.now())

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "ondijon_alarms",
            "Open alarms (grouped ones included) by view state and severity.",
            labels=["state", "severity"],
        )
        for state in STATES:
            for severity in Severity:
                family.add_metric(
                    [state.value, severity.name.lower()], self.counts.get((state, severity), 0)
                )
        yield family
