"""The orchestrator's store, on the embedded SQLite file and on PostgreSQL.

Every test runs on both backends against a database made for it (a fresh SQLite file, or
a fresh PostgreSQL database dropped afterwards) and migrated with Alembic, so what a city
sees does not depend on which database carries it. The last test runs a whole
orchestrator on PostgreSQL with a real agent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql

from foundation.clock import SystemClock
from orchestrator.ingest.devices import COMPACT_EVERY, compact, current_devices
from orchestrator.server import start
from orchestrator.store import migrate
from orchestrator.store.database import (
    Conflict,
    HeldRecord,
    NewEvent,
    NotFound,
    Store,
)
from orchestrator.store.schema import metadata
from protos.ondijon.v1 import link_pb2, schedule_pb2, state_pb2
from provisioning.ca import CertificateAuthority
from tests.conftest import City, orchestrator_config, postgres_url

T = TypeVar("T")

NOW = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


# -- a database per test ---------------------------------------------------------------------


def _admin_conninfo(url: sa.URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of ``backend``, removed afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    base = sa.make_url(postgres_url())
    name = f"ondijon_test_{secrets.token_hex(6)}"
    with psycopg.connect(_admin_conninfo(base), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_admin_conninfo(base), autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="module", params=BACKENDS)
def migrated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """One database per backend for the module, migrated once."""
    with fresh_database(request.param, tmp_path_factory.mktemp("store")) as url:
        opened = Store.open(url)
        try:
            yield opened
        finally:
            opened.close()


@pytest.fixture
def store(migrated: Store) -> Store:
    """The module's store, emptied for this test."""
    with migrated.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    return migrated


def write(store: Store, fn: Callable[[sa.Connection], T]) -> T:
    with store.engine.begin() as conn:
        return fn(conn)


def add_gateway(store: Store, gateway_id: str, commune: str = "Dijon") -> None:
    write(
        store,
        lambda c: store.add_gateway(
            c,
            gateway_id=gateway_id,
            serial=f"SN-{gateway_id}",
            commune=commune,
            latitude=47.322,
            longitude=5.0415,
            time_zone="Europe/Paris",
            tags=["centre", "pilot"],
            now=NOW,
        ),
    )


def wait_for_lock_wait(engine: sa.Engine) -> None:
    """On PostgreSQL, return once some session of this database waits on a lock."""
    if engine.dialect.name != "postgresql":
        return
    deadline = time.monotonic() + 10
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar()
            conn.rollback()
            if waiting:
                return
    raise AssertionError("the second transaction never waited for the first")


def race_lost(store: Store) -> tuple[type[Exception], ...]:
    """What the loser of a race between two transactions gets.

    PostgreSQL makes the second wait for the first and then refuses it with a
    :class:`Conflict`. SQLite refuses a write from a transaction that read before another
    one committed ("database is locked"); in the orchestrator it never happens, since one
    writer thread serializes writes to the file.
    """
    if store.engine.dialect.name == "postgresql":
        return (Conflict,)
    return (Conflict, sa.exc.OperationalError)


def race(store: Store, first: Callable[[sa.Connection], Any]) -> Any:
    """Run ``first`` in a transaction left open while the same call runs in another one,
    then commit the first; returns the second's result or raises its error."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with store.engine.connect() as conn, conn.begin():
            first(conn)
            second = pool.submit(write, store, first)
            wait_for_lock_wait(store.engine)
        return second.result(timeout=30)


# -- migrations ------------------------------------------------------------------------------


def test_migrations_bring_an_empty_database_to_the_schema_queries_use(store: Store) -> None:
    migrate.upgrade(store.engine)  # a second run changes nothing
    head = ScriptDirectory(str(migrate.MIGRATIONS)).get_current_head()
    with store.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


@pytest.mark.postgres
def test_replicas_starting_together_migrate_one_at_a_time(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        engine = sa.create_engine(url)
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                with engine.connect() as replica, replica.begin():
                    replica.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": migrate.MIGRATION_LOCK},
                    )
                    other = pool.submit(migrate.upgrade, engine)
                    wait_for_lock_wait(engine)  # the other replica waits its turn
                    assert not other.done()
                other.result(timeout=30)
            assert sa.inspect(engine).has_table("gateways")
        finally:
            engine.dispose()


# -- gateways --------------------------------------------------------------------------------


def test_gateways_are_registered_once_and_listed_by_commune(store: Store) -> None:
    add_gateway(store, "dj-002")
    add_gateway(store, "dj-001")
    add_gateway(store, "ch-001", commune="Chenôve")
    with pytest.raises(Conflict, match="gateway_id: 'dj-001' is already registered"):
        add_gateway(store, "dj-001", commune="Talant")

    with store.engine.connect() as conn:
        assert [g.gateway_id for g in store.list_gateways(conn)] == ["ch-001", "dj-001", "dj-002"]
        assert [g.gateway_id for g in store.list_gateways(conn, "Chenôve")] == ["ch-001"]
        record = store.get_gateway(conn, "dj-001")
        assert record.commune == "Dijon"
        assert record.tags == ("centre", "pilot")
        assert record.created_at == NOW and record.created_at.tzinfo == UTC
        assert record.enrolled_at is None and record.last_seen is None
        with pytest.raises(NotFound, match="gateway_id: no gateway 'dj-404'"):
            store.get_gateway(conn, "dj-404")


def test_two_registrations_of_one_gateway_at_once_one_wins(store: Store) -> None:
    def register(conn: sa.Connection) -> None:
        store.add_gateway(
            conn,
            gateway_id="dj-001",
            serial="SN-1",
            commune="Dijon",
            latitude=47.3,
            longitude=5.0,
            time_zone="Europe/Paris",
            tags=[],
            now=NOW,
        )

    with pytest.raises(race_lost(store)):
        race(store, register)
    with store.engine.connect() as conn:
        assert len(store.list_gateways(conn)) == 1


def test_instants_come_back_in_utc_whatever_zone_they_were_given_in(store: Store) -> None:
    paris_summer = timezone(timedelta(hours=2))
    add_gateway(store, "dj-001")
    write(
        store,
        lambda c: store.record_hello(
            c,
            "dj-001",
            firmware_version="1.4.0",
            reported_sequence=42,
            held=[HeldRecord(link_pb2.DOCUMENT_KIND_SCHEDULE, 3, b"\x01" * 32)],
            now=datetime(2026, 7, 1, 12, 0, tzinfo=paris_summer),
        ),
    )
    with store.engine.connect() as conn:
        record = store.get_gateway(conn, "dj-001")
        assert record.last_seen == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
        assert record.last_seen is not None and record.last_seen.utcoffset() == timedelta(0)
        assert (record.firmware_version, record.reported_sequence) == ("1.4.0", 42)
        assert store.held_for(conn, "dj-001") == [
            HeldRecord(link_pb2.DOCUMENT_KIND_SCHEDULE, 3, b"\x01" * 32)
        ]
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        write(store, lambda c: store.touch(c, "dj-001", datetime(2026, 7, 1, 12, 0)))


# -- enrollment tokens -----------------------------------------------------------------------


def _token(
    store: Store, token: str = "a" * 64, expires_at: datetime = NOW + timedelta(hours=72)
) -> None:
    write(
        store,
        lambda c: store.add_token(
            c, token_sha256=token, gateway_id="dj-001", serial="SN-dj-001", expires_at=expires_at
        ),
    )


def _consume(
    store: Store, *, token: str = "a" * 64, gateway_id: str = "dj-001", serial: str = "SN-dj-001"
) -> Callable[[sa.Connection], None]:
    return lambda c: store.consume_token(
        c, token_sha256=token, gateway_id=gateway_id, serial=serial, now=NOW
    )


def test_a_token_enrolls_its_own_gateway_once(store: Store) -> None:
    add_gateway(store, "dj-001")
    add_gateway(store, "dj-002")
    _token(store)
    refusals = [
        (_consume(store, serial="SN-other"), Conflict, "serial: the token is bound to another"),
        (_consume(store, gateway_id="dj-002"), Conflict, "token: unknown enrollment token"),
        (_consume(store, token="b" * 64), Conflict, "token: unknown enrollment token"),
        # An unregistered gateway is answered like a wrong token: ids cannot be enumerated.
        (_consume(store, gateway_id="dj-404"), Conflict, "token: unknown enrollment token"),
    ]
    for attempt, error, message in refusals:
        with pytest.raises(error, match=message):
            write(store, attempt)
    # Refused attempts spent nothing: the rightful enrollment still works, once.
    write(store, _consume(store))
    with pytest.raises(Conflict, match="token: already used"):
        write(store, _consume(store))
    with store.engine.connect() as conn:
        assert store.get_gateway(conn, "dj-001").enrolled_at == NOW
        assert store.get_gateway(conn, "dj-002").enrolled_at is None


def test_an_expired_token_is_refused(store: Store) -> None:
    add_gateway(store, "dj-001")
    _token(store, expires_at=NOW)
    with pytest.raises(Conflict, match="token: expired"):
        write(store, _consume(store))


def test_two_enrollments_with_one_token_at_once_one_wins(store: Store) -> None:
    add_gateway(store, "dj-001")
    _token(store)
    with pytest.raises(race_lost(store)):
        race(store, _consume(store))
    with store.engine.connect() as conn:
        used = conn.execute(
            sa.text("SELECT count(*) FROM enrollment_tokens WHERE used_at IS NOT NULL")
        )
        assert used.scalar() == 1


# -- certificates ----------------------------------------------------------------------------


def test_revocation_covers_every_live_certificate_of_one_identity(store: Store) -> None:
    def record(serial: str, name: str, role: str = "gateway") -> None:
        write(
            store,
            lambda c: store.record_certificate(
                c,
                serial_hex=serial,
                role=role,
                name=name,
                not_before=NOW,
                not_after=NOW + timedelta(days=7),
            ),
        )

    record("a1", "dj-001")
    record("a2", "dj-001")
    record("b1", "dj-002")
    record("c1", "dj-001", role="operator")
    later = NOW + timedelta(hours=1)
    revoke = lambda c: store.revoke_certificates(  # noqa: E731
        c, role="gateway", name="dj-001", reason="cabinet stolen", now=later
    )
    assert sorted(write(store, revoke)) == ["a1", "a2"]
    assert write(store, revoke) == []  # already revoked: nothing new
    with store.engine.connect() as conn:
        a1 = store.get_certificate(conn, "a1")
        assert a1 is not None and a1.revoked_at == later and a1.name == "dj-001"
        b1, c1 = store.get_certificate(conn, "b1"), store.get_certificate(conn, "c1")
        assert b1 is not None and b1.revoked_at is None
        assert c1 is not None and c1.revoked_at is None
        assert store.get_certificate(conn, "ff") is None
        assert sorted(r.serial_hex for r in store.revoked_certificates(conn)) == ["a1", "a2"]


def test_operators_are_updated_in_place(store: Store) -> None:
    write(
        store,
        lambda c: store.put_operator(c, name="ana", role="viewer", communes=["Dijon"], now=NOW),
    )
    write(
        store,
        lambda c: store.put_operator(
            c, name="ana", role="operator", communes=["Dijon", "Talant"], now=NOW
        ),
    )
    with store.engine.connect() as conn:
        ana = store.get_operator(conn, "ana")
        assert ana is not None
        assert (ana.role, ana.communes, ana.disabled) == ("operator", ("Dijon", "Talant"), False)
        assert store.get_operator(conn, "bob") is None


# -- desired and held documents --------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 4  # every byte value, NULs included


def _put(
    store: Store,
    digest: bytes,
    *,
    expected_version: int = 0,
    kind: int = 1,
    gateway_id: str = "dj-001",
) -> int:
    document = write(
        store,
        lambda c: store.put_document(
            c,
            gateway_id=gateway_id,
            kind=kind,
            digest=digest,
            payload=PAYLOAD + digest,
            expected_version=expected_version,
            issued_by="ana",
            now=NOW,
        ),
    )
    return document.version


def test_document_versions_only_go_up(store: Store) -> None:
    add_gateway(store, "dj-001")
    assert _put(store, b"\x01" * 32) == 1
    assert _put(store, b"\x02" * 32) == 2
    assert _put(store, b"\x02" * 32) == 2  # the same document again is not a new version
    assert _put(store, b"\x03" * 32, expected_version=2) == 3
    with pytest.raises(Conflict, match="expected_version: document is at version 3, not 2"):
        _put(store, b"\x04" * 32, expected_version=2)
    assert _put(store, b"\x01" * 32) == 4  # going back to old content is a new version
    assert _put(store, b"\x09" * 32, kind=2) == 1
    with store.engine.connect() as conn:
        schedule = store.get_document(conn, "dj-001", 1)
        assert schedule is not None
        assert (schedule.version, schedule.digest) == (4, b"\x01" * 32)
        assert schedule.payload == PAYLOAD + b"\x01" * 32
        assert schedule.issued_at == NOW
        assert [(d.kind, d.version) for d in store.documents_for(conn, "dj-001")] == [
            (1, 4),
            (2, 1),
        ]
        assert store.get_document(conn, "dj-001", 3) is None
    with pytest.raises(NotFound, match="gateway_id"):
        _put(store, b"\x01" * 32, gateway_id="dj-404")


def test_two_first_versions_at_once_one_wins(store: Store) -> None:
    add_gateway(store, "dj-001")

    def first_version(conn: sa.Connection) -> None:
        store.put_document(
            conn,
            gateway_id="dj-001",
            kind=1,
            digest=secrets.token_bytes(32),
            payload=b"",
            expected_version=0,
            issued_by="ana",
            now=NOW,
        )

    # Either the second waited and lost, or it came after the first and made version 2:
    # never two versions 1, never a database error leaking out.
    try:
        race(store, first_version)
        expected_version = 2
    except race_lost(store):
        expected_version = 1
    with store.engine.connect() as conn:
        document = store.get_document(conn, "dj-001", 1)
        assert document is not None and document.version == expected_version


def test_held_documents_follow_what_the_gateway_reports(store: Store) -> None:
    add_gateway(store, "dj-001")
    for version in (1, 2):
        held = HeldRecord(2, version, bytes([version]) * 32)
        write(store, lambda c, h=held: store.set_held(c, "dj-001", h, now=NOW))  # type: ignore[misc]
    write(store, lambda c: store.set_held(c, "dj-001", HeldRecord(1, 7, b"\x07" * 32), now=NOW))
    with store.engine.connect() as conn:
        assert store.held_for(conn, "dj-001") == [
            HeldRecord(1, 7, b"\x07" * 32),
            HeldRecord(2, 2, b"\x02" * 32),
        ]


def test_listing_reads_of_many_gateways_match_each_gateways_own(store: Store) -> None:
    """A fleet listing reads held and desired documents, the stored sequence and the gaps of
    all its gateways at once: the same as reading them gateway by gateway, whatever the
    events (gaps at the start, in the middle, none at all, no events)."""
    rng = random.Random(18)
    gateways = [f"dj-{i:03d}" for i in range(12)]
    for g in gateways:
        add_gateway(store, g)
    for g in gateways:
        held = sorted(rng.sample(range(1, 4), rng.randint(0, 3)))
        for kind in held:
            h = HeldRecord(kind, rng.randint(1, 9), bytes([rng.randint(0, 255)]) * 32)
            write(store, lambda c, g=g, h=h: store.set_held(c, g, h, now=NOW))  # type: ignore[misc]
        for kind in sorted(rng.sample(range(1, 4), rng.randint(0, 3))):
            _put(store, bytes([kind]) * 32, kind=kind, gateway_id=g)
        if g == gateways[0]:
            continue  # no events at all
        sequences = sorted(rng.sample(range(1, 60), rng.randint(1, 40)))
        write(store, lambda c, g=g, s=sequences: store.add_events(c, g, _events(*s), now=NOW))  # type: ignore[misc]
    asked = [*gateways[::-1], "dj-none"]  # order does not matter; unknown ones are empty
    with store.engine.connect() as conn:
        held_of = store.held_of(conn, asked)
        documents_of = store.documents_of(conn, asked)
        stored = store.stored_sequences(conn, asked)
        missing = store.missing_ranges_of(conn, asked)
        for g in asked:
            assert held_of[g] == store.held_for(conn, g)
            assert documents_of[g] == store.documents_for(conn, g)
            assert stored[g] == store.stored_sequence(conn, g)
            assert missing[g] == store.missing_ranges(conn, g)
    assert any(missing[g] for g in gateways), "the random events left no gap to compare"
    assert any(held_of[g] for g in gateways) and any(documents_of[g] for g in gateways)


# -- device state ----------------------------------------------------------------------------


def _report(*levels: tuple[str, int]) -> bytes:
    return link_pb2.StateReport(
        devices=[
            state_pb2.DeviceState(
                device_id=device,
                kind=schedule_pb2.DEVICE_KIND_LAMP,
                lamp=state_pb2.LampState(level=level),
            )
            for device, level in levels
        ]
    ).SerializeToString()


def test_current_devices_are_the_last_state_of_each_before_and_after_compaction(
    store: Store,
) -> None:
    add_gateway(store, "dj-001")
    add_gateway(store, "dj-002")
    expected: dict[str, int] = {}
    for seq in range(1, COMPACT_EVERY + 6):
        changes = [(f"lamp-{seq % 3}", seq), (f"lamp-{seq % 5}", 100 - seq)]
        expected.update(changes)
        write(
            store,
            lambda c, s=seq, ch=changes: store.add_device_report(  # type: ignore[misc]
                c, "dj-001", s, _report(*ch), updates=2, now=NOW
            ),
        )
        if seq == COMPACT_EVERY:
            write(store, lambda c: compact(store, c, "dj-001"))
    write(
        store,
        lambda c: store.add_device_report(c, "dj-002", 1, _report(("x", 1)), updates=1, now=NOW),
    )

    with store.engine.connect() as conn:
        devices = current_devices(store, conn, "dj-001")
        assert {d.device_id: d.lamp.level for d in devices} == expected
        assert [d.device_id for d in devices] == sorted(expected)
        assert store.last_report_seq(conn, "dj-001") == COMPACT_EVERY + 5
        assert store.device_updates_total(conn) == 2 * (COMPACT_EVERY + 5) + 1
        rows = conn.execute(
            sa.text("SELECT count(*) FROM device_reports WHERE gateway_id='dj-001'")
        )
        assert rows.scalar() == 5  # the compacted reports are gone

    write(store, lambda c: compact(store, c, "dj-001"))
    with store.engine.connect() as conn:
        assert {
            d.device_id: d.lamp.level for d in current_devices(store, conn, "dj-001")
        } == expected
        assert store.last_report_seq(conn, "dj-001") == COMPACT_EVERY + 5
        assert [d.device_id for d in current_devices(store, conn, "dj-002")] == ["x"]
        assert current_devices(store, conn, "dj-404") == []


# -- events ----------------------------------------------------------------------------------


def _events(*sequences: int, type_: str = "lamp.failure") -> list[NewEvent]:
    return [
        NewEvent(
            sequence=s,
            at=NOW + timedelta(seconds=s),
            priority=link_pb2.EVENT_PRIORITY_ALARM,
            device_id="lamp-001",
            type=type_,
            payload=bytes([s % 256]) * 3,
        )
        for s in sequences
    ]


def test_events_are_stored_once_per_gateway_and_sequence(store: Store) -> None:
    add_gateway(store, "dj-001")
    add_gateway(store, "dj-002")
    assert write(store, lambda c: store.add_events(c, "dj-001", _events(1, 2, 3), now=NOW)) == 3
    replay = _events(2, 3, 4, type_="replayed")
    assert write(store, lambda c: store.add_events(c, "dj-001", replay, now=NOW)) == 1
    assert write(store, lambda c: store.add_events(c, "dj-002", _events(1), now=NOW)) == 1
    assert write(store, lambda c: store.add_events(c, "dj-002", [], now=NOW)) == 0

    with store.engine.connect() as conn:
        stored = store.list_events(conn, "dj-001", after_sequence=0, limit=100)
        assert [(e.sequence, e.type) for e in stored] == [
            (1, "lamp.failure"),
            (2, "lamp.failure"),
            (3, "lamp.failure"),
            (4, "replayed"),
        ]
        assert stored[0].at == NOW + timedelta(seconds=1) and stored[0].payload == b"\x01" * 3
        assert [
            e.sequence for e in store.list_events(conn, "dj-001", after_sequence=2, limit=1)
        ] == [3]
        assert len(store.list_events(conn, "", after_sequence=0, limit=100)) == 5
        assert store.stored_sequence(conn, "dj-001") == 4
        assert store.stored_sequence(conn, "dj-404") == 0


def test_copies_are_found_by_their_first_number_and_marked(store: Store) -> None:
    """The rows an event just stored may copy (or be copied by) are read by first number,
    on both backends; a marked copy is no longer news for the feeds."""
    add_gateway(store, "dj-001")
    add_gateway(store, "dj-002")

    def numbered(sequence: int, first: int | None, payload: bytes) -> NewEvent:
        return replace(_events(sequence)[0], first_sequence=first, payload=payload)

    write(store, lambda c: store.add_events(c, "dj-001", _events(1, 2, 3, 4), now=NOW))
    write(store, lambda c: store.add_events(c, "dj-002", [numbered(6, 2, b"other")], now=NOW))
    copy = [numbered(5, 2, b"\x02" * 3), numbered(7, 9, b"x")]
    write(store, lambda c: store.add_events(c, "dj-001", copy, now=NOW))
    with store.engine.connect() as conn:
        # A copy of 2: 2 itself and the copies of 2 (this one), not another gateway's.
        family = store.copy_family(conn, "dj-001", [copy[0]])
        assert [(s, f, c) for s, f, c, _ in family] == [(2, 2, None), (5, 2, None)]
        # An original just stored: the copies made of its number.
        assert [r[0] for r in store.copy_family(conn, "dj-001", _events(2, 3))] == [5]
        assert store.copy_family(conn, "dj-001", _events(3, 4)) == []
    write(store, lambda c: store.mark_copies(c, "dj-001", {5: 2}))
    with store.engine.connect() as conn:
        listed = store.list_events(conn, "dj-001", after_sequence=0, limit=10)
        assert [(e.sequence, e.copy_of) for e in listed] == [
            (1, None),
            (2, None),
            (3, None),
            (4, None),
            (5, 2),
            (7, None),
        ]
        news = store.events_received_since(conn, NOW, limit=10)
        assert [(e.gateway_id, e.sequence) for e in news if e.gateway_id == "dj-001"] == [
            ("dj-001", s) for s in (1, 2, 3, 4, 7)
        ]


def test_missing_ranges_name_the_gaps_including_a_leading_one(store: Store) -> None:
    add_gateway(store, "dj-001")
    add_gateway(store, "dj-002")

    def missing(gateway_id: str = "dj-001") -> list[tuple[int, int]]:
        with store.engine.connect() as conn:
            return store.missing_ranges(conn, gateway_id)

    assert missing() == []
    write(store, lambda c: store.add_events(c, "dj-001", _events(1, 2, 3), now=NOW))
    assert missing() == []
    write(store, lambda c: store.add_events(c, "dj-001", _events(6, 9, 10), now=NOW))
    assert missing() == [(4, 5), (7, 8)]
    write(store, lambda c: store.add_events(c, "dj-001", _events(4, 5), now=NOW))
    assert missing() == [(7, 8)]
    write(store, lambda c: store.add_events(c, "dj-002", _events(5, 6), now=NOW))
    assert missing("dj-002") == [(1, 4)]


# -- commands --------------------------------------------------------------------------------


def test_commands_run_once_and_each_gateway_sees_only_its_own(store: Store) -> None:
    add_gateway(store, "dj-001")
    add_gateway(store, "dj-002")

    def send(command_id: str, gateway_id: str, minute: int) -> None:
        write(
            store,
            lambda c: store.add_command(
                c,
                command_id=command_id,
                gateway_id=gateway_id,
                payload=b"\x00override",
                expires_at=NOW + timedelta(hours=1),
                status=link_pb2.COMMAND_STATUS_PENDING,
                created_by="ana",
                now=NOW + timedelta(minutes=minute),
            ),
        )

    send("c2", "dj-001", 2)
    send("c1", "dj-001", 1)
    send("c3", "dj-002", 0)
    with pytest.raises(Conflict, match="command_id: 'c1' was already sent"):
        send("c1", "dj-002", 3)
    with pytest.raises(NotFound, match="gateway_id"):
        send("c4", "dj-404", 3)

    pending = [link_pb2.COMMAND_STATUS_PENDING]
    # A gateway cannot settle another gateway's command.
    assert not write(
        store,
        lambda c: store.set_command_status(
            c, "c3", status=link_pb2.COMMAND_STATUS_DONE, detail="", now=NOW, gateway_id="dj-001"
        ),
    )
    assert write(
        store,
        lambda c: store.set_command_status(
            c,
            "c1",
            status=link_pb2.COMMAND_STATUS_REFUSED,
            detail="é" * 5000,
            now=NOW,
            gateway_id="dj-001",
        ),
    )
    with store.engine.connect() as conn:
        assert [c.command_id for c in store.commands_with_status(conn, "dj-001", pending)] == ["c2"]
        assert [c.command_id for c in store.commands_with_status(conn, "dj-002", pending)] == ["c3"]
        c1 = store.get_command(conn, "c1")
        assert c1 is not None and c1.status == link_pb2.COMMAND_STATUS_REFUSED
        assert c1.detail == "é" * 1024 and c1.payload == b"\x00override"
        assert store.get_command(conn, "c9") is None


# -- audit -----------------------------------------------------------------------------------


def test_audit_entries_keep_their_order_and_long_values_are_cut(store: Store) -> None:
    for i in range(3):
        write(
            store,
            lambda c, i=i: store.audit(  # type: ignore[misc]
                c,
                at=NOW + timedelta(seconds=i),
                actor="operator:ana",
                action="desired.put",
                target=f"dj-00{i}" + ("x" * 300 if i == 2 else ""),
                commune="Dijon" + ("-lès-Dijon" * 20 if i == 2 else ""),
                result="ok" if i != 1 else "refused",
                detail="x" * 3000,
            ),
        )
    with store.engine.connect() as conn:
        entries = store.audit_entries(conn)
        assert [(e["target"][:6], e["result"]) for e in entries] == [
            ("dj-000", "ok"),
            ("dj-001", "refused"),
            ("dj-002", "ok"),
        ]
        # An oversized value is cut to its column, not refused (PostgreSQL would refuse).
        assert (len(entries[2]["target"]), len(entries[2]["commune"])) == (256, 128)
        assert entries[1]["at"] == NOW + timedelta(seconds=1)
        assert len(entries[0]["detail"]) == 2048
        assert len(store.audit_entries(conn, limit=2)) == 2


# -- the whole orchestrator on PostgreSQL ----------------------------------------------------


@pytest.mark.postgres
@pytest.mark.integration
async def test_the_orchestrator_runs_an_agent_on_postgresql(
    tmp_path: Path, ca: CertificateAuthority, lamp_table: Callable[[int], str]
) -> None:
    from tests.edge.test_agent import gateway, lighting, put_schedule, running
    from tests.waiting import eventually

    with fresh_database("postgresql", tmp_path) as url:
        config = replace(orchestrator_config(tmp_path), store_url=url)
        city = City(tmp_path, ca, config, await start(config, SystemClock(), ca=ca), admin=None)  # type: ignore[arg-type]
        try:
            city.admin = city.operator("admin", "admin", ["*"])
            agent_config = await city.enrolled("pg-001", lamps=lamp_table(2))
            async with running(agent_config) as agent:
                await asyncio.wait_for(agent.link.status.connected.wait(), 15)
                version = await put_schedule(city, "pg-001", lighting(55))
                await eventually(lambda: all(lamp.controller.level == 55 for lamp in agent.lamps))

                for _ in range(300):
                    g = await gateway(city, "pg-001")
                    if g.held and g.connected:
                        break
                    await asyncio.sleep(0.05)
                assert [h.version for h in g.held] == [version]
            store = city.running.app.runner.store
            with store.engine.connect() as conn:
                assert conn.dialect.name == "postgresql"
                assert store.get_gateway(conn, "pg-001").enrolled_at is not None
                assert store.held_for(conn, "pg-001")[0].version == version
        finally:
            await city.running.stop(0)
