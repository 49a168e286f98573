"""The store's bounds and the stream registry: a store that stops answering is found out
within the deadline and found back by itself; which replica holds a gateway's stream is
recorded, refreshed, replaced and forgotten as the fleet view needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.store.connection import StoreSettings, StoreUnavailable
from orchestrator.store.database import Store
from orchestrator.store.runner import StoreRunner
from tests.orchestrator.test_runner import fresh_database, register
from tests.replicas.cluster import StoreProxy

NOW = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
BOUNDS = StoreSettings(connect_timeout_s=2, statement_timeout_s=3, deadline_s=1.5)


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[str, StoreProxy]]:
    """A fresh PostgreSQL database reached through a proxy that can stall."""
    with fresh_database("postgresql", tmp_path) as url:
        parsed = sa.make_url(url)
        proxy = StoreProxy(parsed.port or 5432)
        try:
            yield parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(False), proxy
        finally:
            proxy.close()


@pytest.mark.postgres
async def test_a_stalled_store_is_answered_unavailable_within_the_deadline_and_found_back(
    proxied: tuple[str, StoreProxy],
) -> None:
    url, proxy = proxied
    store = Store.open(url, BOUNDS)
    runner = StoreRunner(store)
    troubles: list[str] = []
    runner.on_trouble = troubles.append
    await runner.start()
    try:
        await runner.write(register(store, "dj-001"))
        proxy.stall()  # bytes held, no error: the server never sees the query
        for operation in (
            runner.read(lambda c: store.get_gateway(c, "dj-001")),
            runner.write(register(store, "dj-002")),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await operation
            assert time.monotonic() - started < BOUNDS.deadline_s + 1
        assert troubles, "the readiness probe was told"
        assert not await runner.probe(1.0)

        proxy.resume()
        for _ in range(50):
            if await runner.probe(1.0):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the store was not found back")
        await runner.write(register(store, "dj-003"))
        ids = await runner.read(lambda c: [g.gateway_id for g in store.list_gateways(c)])
        assert "dj-001" in ids and "dj-003" in ids
    finally:
        proxy.resume()
        await runner.close()
        store.close()


@pytest.mark.postgres
def test_every_connection_carries_the_server_side_timeouts_and_its_name(
    proxied: tuple[str, StoreProxy],
) -> None:
    url, _ = proxied
    store = Store.open(url, StoreSettings(statement_timeout_s=3, application_name="replica-x"))
    try:
        with store.engine.connect() as conn:
            shown = {
                name: conn.execute(sa.text(f"SHOW {name}")).scalar()
                for name in (
                    "statement_timeout",
                    "idle_in_transaction_session_timeout",
                    "application_name",
                )
            }
            with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
                conn.execute(sa.text("SELECT pg_sleep(5)"))
    finally:
        store.close()
    assert shown == {
        "statement_timeout": "3s",
        "idle_in_transaction_session_timeout": "15s",
        "application_name": "replica-x",
    }


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_streams_are_recorded_replaced_refreshed_and_forgotten(
    backend: str, tmp_path: Path
) -> None:
    with fresh_database(backend, tmp_path) as url:
        store = Store.open(url)
        try:
            with store.engine.begin() as c:
                for gateway_id in ("dj-001", "dj-002"):
                    register(store, gateway_id)(c)
                store.open_stream(c, "dj-001", replica="A", stream="s1", now=NOW)
                store.open_stream(c, "dj-002", replica="A", stream="s2", now=NOW)
                # dj-001 comes back through replica B: its newer stream replaces the row.
                store.open_stream(c, "dj-001", replica="B", stream="s3", now=NOW)
                later = NOW + timedelta(seconds=30)
                kept = store.refresh_streams(c, "A", ["s1", "s2"], now=later)
                assert kept == {"s2"}, "A learns that s1 is no longer dj-001's stream"
                assert store.stream_of(c, "dj-001") == "s3"
                # B's row was not refreshed: past its lease, dj-001 is not shown connected.
                assert store.live_streams(c, seen_since=later - timedelta(seconds=20)) == {
                    "dj-002": "A"
                }
                store.close_stream(c, "dj-001", "s1")  # a stale close changes nothing
                assert store.stream_of(c, "dj-001") == "s3"
                store.close_stream(c, "dj-001", "s3")
                store.release_replica(c, "A")
                assert store.live_streams(c, seen_since=NOW - timedelta(days=1)) == {}
        finally:
            store.close()
