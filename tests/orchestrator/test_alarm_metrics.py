"""``ondijon_alarms{state,severity}`` (orchestrator/alarms/metrics.py): the open alarms a
store holds, counted in bulk, match each alarm's own view state; closed alarms are not
counted, a shelving that ran out counts as what the alarm is underneath; every pair is
exposed, 0 included."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain import alarms as core
from domain.alarms import Alarm, Severity
from orchestrator.alarms.metrics import STATES, AlarmGauge
from orchestrator.store import alarms as sql
from orchestrator.store.database import Store
from orchestrator.store.runner import StoreRunner
from tests.orchestrator.test_store import BACKENDS, fresh_database

NOW = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # the night Europe/Paris moves to summer time


def random_alarm(rng: random.Random, i: int) -> Alarm:
    first = NOW - timedelta(minutes=rng.randint(1, 10_000))
    shelved = rng.choice([None, None, NOW - timedelta(seconds=1), NOW + timedelta(hours=2)])
    closed = rng.random() < 0.2
    return Alarm(
        gateway_id=f"g-{i % 7}",
        device_id=f"lamp-{i:04d}",
        type="lamp_failure",
        severity=rng.choice(list(Severity)),
        active=rng.random() < 0.6,
        acknowledged=rng.random() < 0.4,
        count=1,
        first_at=first,
        last_at=first,
        shelved_until=shelved,
        closed_at=NOW - timedelta(minutes=1) if closed else None,
    )


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_gauge_counts_each_open_alarm_by_its_view_state(
    backend: str, tmp_path: Path
) -> None:
    rng = random.Random(19)
    alarms = [random_alarm(rng, i) for i in range(400)]
    with fresh_database(backend, tmp_path) as url:
        store = Store.open(url)
        runner = StoreRunner(store)
        await runner.start()
        try:

            def write(conn: Any) -> None:
                for a in alarms:
                    sql.save(conn, None, a, commune="Dijon", now=NOW)

            await runner.write(write)
            gauge = AlarmGauge(runner, lambda: NOW)
            await gauge.refresh()
        finally:
            await runner.close()
            store.close()
    # Reference: each alarm on its own, through the core.
    expected = Counter((core.view_state(a, NOW), a.severity) for a in alarms if a.open)
    assert gauge.counts == dict(expected)
    assert sum(expected.values()) < len(alarms)  # some closed ones were left out
    assert expected[(core.ViewState.SHELVED, Severity.MAJOR)] > 0
    samples = {
        (s.labels["state"], s.labels["severity"]): s.value
        for family in gauge.collect()
        for s in family.samples
    }
    assert len(samples) == len(STATES) * len(Severity) == 16
    for (state, severity), value in samples.items():
        assert value == expected.get((core.ViewState(state), Severity[severity.upper()]), 0)


async def test_nothing_read_yet_is_every_pair_at_zero(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    runner = StoreRunner(store)
    gauge = AlarmGauge(runner, lambda: NOW)
    values = [s.value for family in gauge.collect() for s in family.samples]
    assert values == [0] * 16
    store.close()
