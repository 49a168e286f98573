"""StoreRunner: writes from many handlers grouped into few commits, on SQLite and PostgreSQL.

What a gateway notices: its write returns only once committed, a neighbour's bad write
does not fail it, and reads are not held up behind the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from orchestrator.ingest.devices import current_devices
from orchestrator.store.database import Conflict, Store
from orchestrator.store.runner import StoreRunner
from orchestrator.store.schema import gateways, metadata
from protos.ondijon.v1 import link_pb2, schedule_pb2, state_pb2
from tests.conftest import postgres_url

NOW = datetime(2026, 1, 15, 18, 0, tzinfo=UTC)


@contextlib.contextmanager
def fresh_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of ``backend`` (PostgreSQL: created here, dropped afterwards)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'runner.db'}"
        return
    base = sa.make_url(postgres_url())
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"ondijon_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ],
)
def migrated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    with fresh_database(request.param, tmp_path_factory.mktemp("runner")) as url:
        store = Store.open(url)
        try:
            yield store
        finally:
            store.close()


@pytest.fixture
async def runner(migrated: Store) -> AsyncIterator[StoreRunner]:
    with migrated.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    started = StoreRunner(migrated)
    await started.start()
    try:
        yield started
    finally:
        # close() would dispose of nothing here: the module's store outlives the runner.
        await started.close()


def register(store: Store, gateway_id: str) -> Callable[[sa.Connection], None]:
    def add(conn: sa.Connection) -> None:
        store.add_gateway(
            conn,
            gateway_id=gateway_id,
            serial=f"SN-{gateway_id}",
            commune="Dijon",
            latitude=47.3,
            longitude=5.0,
            time_zone="Europe/Paris",
            tags=[],
            now=NOW,
        )

    return add


@contextlib.asynccontextmanager
async def writer_busy(runner: StoreRunner) -> AsyncIterator[None]:
    """Keep the writer thread busy, so writes queued meanwhile form one group."""
    release = threading.Event()
    busy = asyncio.ensure_future(runner.write(lambda conn: release.wait(10)))
    await asyncio.sleep(0)  # let the writer take the busy job
    try:
        yield
    finally:
        release.set()
        await busy


def registered(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [g.gateway_id for g in store.list_gateways(conn)]


async def test_many_concurrent_writes_share_few_commits(runner: StoreRunner) -> None:
    store = runner.store
    ids = [f"dj-{i:03d}" for i in range(60)]

    async def add(gateway_id: str) -> str:
        def fn(conn: sa.Connection) -> str:
            register(store, gateway_id)(conn)
            return gateway_id

        return await runner.write(fn)

    assert await asyncio.gather(*(add(g) for g in ids)) == ids
    assert registered(store) == ids  # each write returned only once committed
    assert 1 <= runner.commits < len(ids) // 4


async def test_a_failing_write_fails_alone(runner: StoreRunner) -> None:
    store = runner.store
    await runner.write(register(store, "dj-001"))

    def half_then_fail(conn: sa.Connection) -> None:
        register(store, "dj-half")(conn)
        raise RuntimeError("cabinet sent nonsense")

    async with writer_busy(runner):
        writes = asyncio.gather(
            runner.write(register(store, "dj-002")),
            runner.write(register(store, "dj-001")),  # already registered
            runner.write(half_then_fail),
            runner.write(register(store, "dj-003")),
            return_exceptions=True,
        )
        await asyncio.sleep(0)
    results = await writes
    assert results[0] is None and results[3] is None
    assert isinstance(results[1], Conflict)
    assert isinstance(results[2], RuntimeError)
    # The failed writes left nothing behind, the others are committed once each.
    assert registered(store) == ["dj-001", "dj-002", "dj-003"]


def _report(device: str, level: int) -> bytes:
    return link_pb2.StateReport(
        devices=[
            state_pb2.DeviceState(
                device_id=device,
                kind=schedule_pb2.DEVICE_KIND_LAMP,
                lamp=state_pb2.LampState(level=level),
            )
        ]
    ).SerializeToString()


async def test_state_reports_of_many_gateways_are_stored_in_one_group(
    runner: StoreRunner,
) -> None:
    store = runner.store
    for gateway_id in ("dj-001", "dj-002"):
        await runner.write(register(store, gateway_id))
    commits = runner.commits
    # Two reports of one gateway in the same group: the counter row is upserted twice.
    rows = [
        store.device_report_rows(g, seq, _report(f"lamp-{seq}", seq), updates=1, now=NOW)
        for g in ("dj-001", "dj-002")
        for seq in (1, 2, 3)
    ]
    await asyncio.gather(*(runner.write_rows(r) for r in rows))
    assert runner.commits - commits < len(rows)

    def levels(conn: sa.Connection) -> dict[str, int]:
        return {d.device_id: d.lamp.level for d in current_devices(store, conn, "dj-002")}

    assert await runner.read(levels) == {"lamp-1": 1, "lamp-2": 2, "lamp-3": 3}
    assert await runner.read(store.device_updates_total) == 6

    # A report stored twice (same sequence) fails alone; the neighbour's is stored.
    again = store.device_report_rows("dj-001", 3, _report("lamp-3", 9), updates=1, now=NOW)
    fresh = store.device_report_rows("dj-002", 4, _report("lamp-4", 4), updates=1, now=NOW)
    async with writer_busy(runner):
        both = asyncio.gather(
            runner.write_rows(again), runner.write_rows(fresh), return_exceptions=True
        )
        await asyncio.sleep(0)
    outcome = await both
    assert isinstance(outcome[0], sa.exc.IntegrityError) and outcome[1] is None
    assert (await runner.read(levels))["lamp-4"] == 4
    assert await runner.read(store.device_updates_total) == 7


async def test_a_first_write_is_committed_ahead_of_a_long_queue_apart_from_it(
    runner: StoreRunner,
) -> None:
    store = runner.store
    await runner.write(register(store, "dj-000"))
    seen_by_first: list[int] = []

    def answer(conn: sa.Connection) -> str:
        # What the first write's transaction sees of the queued ones: none of them ran.
        seen_by_first.append(len(store.list_gateways(conn)))
        register(store, "dj-first")(conn)
        return "committed"

    async with writer_busy(runner):
        queued = [
            asyncio.ensure_future(runner.write(register(store, f"q-{i:04d}"))) for i in range(600)
        ]
        first = asyncio.ensure_future(runner.write_first(answer))
        await asyncio.sleep(0)
    assert await first == "committed"
    assert seen_by_first == [1]
    # Returned once committed, while the long queue is still to be written.
    assert "dj-first" in registered(store)
    assert not any(q.done() for q in queued)
    await asyncio.gather(*queued)
    assert len(registered(store)) == 602


async def test_the_lanes_take_turns_so_first_writes_never_starve_the_others(
    runner: StoreRunner,
) -> None:
    store = runner.store
    order: list[str] = []

    def write(name: str) -> Callable[[sa.Connection], None]:
        def fn(conn: sa.Connection) -> None:
            register(store, name)(conn)
            order.append(name)

        return fn

    release = threading.Event()

    def busy(conn: sa.Connection) -> None:
        release.wait(10)
        order.append("busy-first")

    in_flight = asyncio.ensure_future(runner.write_first(busy))
    await asyncio.sleep(0)  # the writer took the first group
    writes = [
        asyncio.ensure_future(runner.write(write("queued-1"))),
        asyncio.ensure_future(runner.write_first(write("first-1"))),
        asyncio.ensure_future(runner.write(write("queued-2"))),
        asyncio.ensure_future(runner.write_first(write("first-2"))),
    ]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(in_flight, *writes)
    # After a first group, the writes queued meanwhile go, then the next first ones.
    assert order == ["busy-first", "queued-1", "queued-2", "first-1", "first-2"]


async def test_a_failing_first_write_fails_alone(runner: StoreRunner) -> None:
    store = runner.store
    await runner.write(register(store, "dj-001"))
    async with writer_busy(runner):
        writes = asyncio.gather(
            runner.write_first(register(store, "dj-001")),  # already registered
            runner.write_first(register(store, "dj-002")),
            return_exceptions=True,
        )
        await asyncio.sleep(0)
    results = await writes
    assert isinstance(results[0], Conflict) and results[1] is None
    assert registered(store) == ["dj-001", "dj-002"]


async def test_reads_do_not_wait_behind_a_slow_write(runner: StoreRunner) -> None:
    store = runner.store
    await runner.write(register(store, "dj-001"))
    release = threading.Event()

    def slow(conn: sa.Connection) -> None:
        conn.execute(gateways.update().values(firmware_version="2.0.0"))
        release.wait(10)

    write = asyncio.ensure_future(runner.write(slow))
    try:
        gateway = await asyncio.wait_for(
            runner.read(lambda c: store.get_gateway(c, "dj-001")), timeout=5
        )
        assert gateway.firmware_version == ""  # the write is not committed yet
        assert not write.done()
    finally:
        release.set()
    await write
    assert (await runner.read(lambda c: store.get_gateway(c, "dj-001"))).firmware_version == "2.0.0"
