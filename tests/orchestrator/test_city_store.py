"""The city's SQL on SQLite and PostgreSQL: an import applied in one transaction registers
its cabinets as gateways and is idempotent; a group document reaches exactly the gateways
the documented precedence gives it, a document put on one gateway is never overwritten, and
versions only go up; each agrees with the pure resolution for random assignments."""

from __future__ import annotations

import collections
import random
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from domain.city.generator import generate
from domain.city.inventory import diff
from domain.city.targets import Level, Target, resolve
from orchestrator.store import assets as asset_sql
from orchestrator.store import groups as group_sql
from orchestrator.store.database import Store
from tests.orchestrator.test_store import BACKENDS, NOW, fresh_database, write

SCHEDULE = 1
CITY = generate(3, cabinets=60, lamps=300, crossings=6, bollard_sites=2)


@pytest.fixture(params=BACKENDS)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    with fresh_database(request.param, tmp_path_factory.mktemp("city")) as url:
        opened = Store.open(url)
        try:
            yield opened
        finally:
            opened.close()


def imported(store: Store) -> None:
    def run(c: sa.Connection) -> None:
        asset_sql.apply_diff(c, diff(asset_sql.load_register(c), list(CITY.assets)), now=NOW)

    write(store, run)


def test_an_import_registers_cabinets_and_a_reimport_changes_nothing(store: Store) -> None:
    imported(store)
    with store.engine.connect() as c:
        register = asset_sql.load_register(c)
        gateways = store.list_gateways(c)
    assert register == {a.key: a for a in CITY.assets}
    assert {g.gateway_id for g in gateways} == {a.asset_id for a in CITY.cabinets}
    assert diff(register, list(CITY.assets)).empty
    with store.engine.connect() as c:
        page = asset_sql.list_assets(c, kind="lamp", limit=7)
        after = asset_sql.list_assets(
            c, kind="lamp", limit=7, after=(page[-1].kind.value, page[-1].asset_id)
        )
    assert [a.asset_id for a in page + after] == sorted(
        a.asset_id for a in CITY.assets if a.kind.value == "lamp"
    )[:14]


def _put(store: Store, target: Target, payload: bytes) -> list[group_sql.Written]:
    def run(c: sa.Connection) -> list[group_sql.Written]:
        group_sql.put_group_document(
            c,
            kind=SCHEDULE,
            target=target,
            digest=payload.ljust(32, b"."),
            payload=payload,
            issued_by="test",
            now=NOW,
        )
        return group_sql.reconcile(c, SCHEDULE, now=NOW)

    return write(store, run)


def test_group_documents_follow_the_precedence_and_spare_a_pinned_gateway(store: Store) -> None:
    imported(store)
    rng = random.Random(12)
    communes = sorted({a.commune for a in CITY.cabinets})
    pinned_id = CITY.cabinets[5].asset_id
    write(
        store,
        lambda c: store.put_document(
            c,
            gateway_id=pinned_id,
            kind=SCHEDULE,
            digest=b"own".ljust(32, b"."),
            payload=b"own",
            expected_version=0,
            issued_by="test",
            now=NOW,
        ),
    )
    written = _put(store, Target(Level.CITY), b"city")
    assert len(written) == len(CITY.cabinets) - 1  # not the pinned one
    targets = [Target(Level.CITY)]
    for n in range(12):
        target = rng.choice(
            [
                Target(Level.COMMUNE, rng.choice(communes)),
                Target(Level.TAG, rng.choice(("parc", "residentiel", "zone-activite"))),
                Target(
                    Level.LIST,
                    f"l{n % 2}",
                    gateway_ids=tuple(rng.sample([a.asset_id for a in CITY.cabinets], 5)),
                ),
                Target(
                    Level.AREA,
                    f"a{n % 2}",
                    polygon=((47.30, 5.00), (47.30, 5.06), (47.34, 5.06), (47.34, 5.00)),
                ),
                Target(Level.CITY),
            ]
        )
        _put(store, target, f"doc-{n}".encode())
        targets.append(target)
    with store.engine.connect() as c:
        groups = group_sql.group_documents_of(c, SCHEDULE)
        sites = group_sql.sites(c)
        docs = {g.gateway_id: store.get_document(c, g.gateway_id, SCHEDULE) for g in sites}
        standings = {s.gateway_id: s for s in group_sql.standings(c, SCHEDULE)}
        counted = group_sql.winners(c, SCHEDULE)
    assert counted == collections.Counter(
        s.assignment_id for s in standings.values() if s.assignment_id is not None
    )
    winners = resolve(sites, [g.assignment for g in groups], pinned=[pinned_id])
    by_id = {g.assignment_id: g for g in groups}
    for site in sites:
        doc = docs[site.gateway_id]
        assert doc is not None
        if site.gateway_id == pinned_id:
            assert (doc.payload, doc.version) == (b"own", 1)
            assert standings[pinned_id].assignment_id is None
            continue
        winner = by_id[winners[site.gateway_id].assignment_id]
        assert doc.payload == winner.payload
        assert standings[site.gateway_id].assignment_id == winner.assignment_id
    # Putting the same thing again writes nothing, and versions never went down.
    versions = {g: d.version for g, d in docs.items() if d}
    assert write(store, lambda c: group_sql.reconcile(c, SCHEDULE, now=NOW)) == []

    # Releasing the pin brings the pinned gateway to its group's document.
    def release(c: sa.Connection) -> list[group_sql.Written]:
        group_sql.release_pin(c, pinned_id, SCHEDULE)
        return group_sql.reconcile(c, SCHEDULE, now=NOW, only=[pinned_id])

    [moved] = write(store, release)
    assert moved.gateway_id == pinned_id and moved.version == versions[pinned_id] + 1
