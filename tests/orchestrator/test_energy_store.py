"""The energy report summed by the database matches the pure reference (domain.energy).

Random lamp-days, some written in two parts (the update path at ingest), on SQLite and
PostgreSQL: for every grouping and scope, :func:`orchestrator.store.energy.summaries` and
:func:`~orchestrator.store.energy.flagged` give what :func:`domain.energy.summarise` gives
over the same rows read back one by one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from domain import energy as core
from domain.energy import LampDay
from orchestrator.store import energy as sql
from orchestrator.store import migrate
from orchestrator.store.database import Store
from tests.orchestrator.test_store import BACKENDS, fresh_database

DAY0 = date(2026, 3, 27)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with fresh_database(request.param, tmp_path) as url:
        opened = Store.open(url)
        try:
            yield opened
        finally:
            opened.close()


def random_day(rng: random.Random) -> LampDay:
    peak = rng.choice([0.0, rng.uniform(20, 150)])
    night = rng.choice([0.0, rng.uniform(0, 15 * 3600)])
    return LampDay(
        wh=rng.uniform(0, 2000),
        on_seconds=rng.uniform(0, 86400),
        covered_seconds=rng.uniform(0, 86400),
        day_wh=rng.choice([0.0, rng.uniform(0, 30)]),
        night_seconds=night,
        night_on_seconds=night * rng.choice([0.0, rng.random()]),
        peak_w=peak,
        profile=[rng.choice([0.0, rng.uniform(0, 150)]) for _ in range(24)],
    )


def reference(
    rows: list[sql.StoredDay], by: str | None
) -> tuple[dict[str, core.Summary], list[str], list[str]]:
    groups: dict[str, list[tuple[str, LampDay]]] = {}
    burners, dark = [], []
    for r in rows:
        lamp = f"{r.gateway_id}/{r.device_id}"
        key = {
            None: "",
            "commune": r.commune,
            "gateway": r.gateway_id,
            "lamp": lamp,
            "day": r.day.isoformat(),
        }[by]
        groups.setdefault(key, []).append((lamp, r.totals))
        if r.totals.day_burner:
            burners.append(f"{lamp} {r.day.isoformat()}")
        if r.totals.dark_at_night:
            dark.append(f"{lamp} {r.day.isoformat()}")
    return {k: core.summarise(v) for k, v in groups.items()}, sorted(burners), sorted(dark)


def same(got: core.Summary, want: core.Summary) -> None:
    assert got.lamps == want.lamps
    assert got.day_burners == want.day_burners
    assert got.dark_at_night == want.dark_at_night
    for name in ("kwh", "burning_hours", "baseline_kwh"):
        assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-9, abs=1e-9)
    # Rounded to 0.1 % on both sides: sums in another order may round the other way.
    assert got.profile == pytest.approx(want.profile, abs=0.1 + 1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_the_report_summed_in_sql_matches_the_reference(store: Store, seed: int) -> None:
    rng = random.Random(seed)
    communes = ["Dijon", "Talant", "Chenôve", "Quetigny"]
    gateways = [(f"gw-{i:02d}", rng.choice(communes)) for i in range(12)]
    with store.engine.begin() as conn:
        for gateway_id, commune in gateways:
            days = {
                (f"lamp-{lamp}", DAY0 + timedelta(days=d)): random_day(rng)
                for lamp in range(rng.randint(1, 6))
                for d in range(4)
                if rng.random() < 0.8
            }
            sql.add_days(conn, gateway_id, commune, days)
            # A later batch of metering for some of the same lamp-days (folded in).
            later = {k: random_day(rng) for k in days if rng.random() < 0.3}
            sql.add_days(conn, gateway_id, commune, later)
    scopes = [
        sql.Scope(DAY0, DAY0 + timedelta(days=3), None),
        sql.Scope(DAY0 + timedelta(days=1), DAY0 + timedelta(days=2), None),
        sql.Scope(DAY0 + timedelta(days=2), DAY0 + timedelta(days=2), None),  # one day
        sql.Scope(DAY0, DAY0 + timedelta(days=3), ["Dijon", "Talant"]),
        sql.Scope(DAY0, DAY0 + timedelta(days=3), None, commune="Chenôve"),
        sql.Scope(DAY0, DAY0 + timedelta(days=3), ["Dijon"], gateway_id=gateways[3][0]),
        sql.Scope(DAY0 + timedelta(days=9), DAY0 + timedelta(days=9), None),
    ]
    checked = 0
    with store.engine.connect() as conn:
        for scope in scopes:
            rows = sql.select_days(
                conn,
                scope.since,
                scope.until,
                communes=scope.communes,
                commune=scope.commune,
                gateway_id=scope.gateway_id,
            )
            for by in (None, *sql.GROUPINGS):
                want, burners, dark = reference(rows, by)
                got = sql.summaries(conn, scope, by=by)
                assert sorted(got) == sorted(want)
                for key in want:
                    same(got[key], want[key])
                    checked += 1
            assert sql.flagged(conn, scope) == (burners, dark)
    assert checked > 100


@pytest.mark.parametrize("backend", BACKENDS)
def test_lamp_days_stored_before_the_hour_columns_keep_their_profile(
    backend: str, tmp_path: Path
) -> None:
    with fresh_database(backend, tmp_path) as url:
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                command.upgrade(migrate.alembic_config(conn), "0009_public_reports")
                profile = [0.0] * 18 + [50.5, 60.0, 30.25, 0.0, 12.0, 40.0]
                conn.execute(
                    sa.table("energy_days", *old_columns()).insert(),
                    [
                        {"gateway_id": "gw-1", "device_id": "lamp-1", "day": DAY0,
                         "commune": "Dijon", "wh": sum(profile), "on_seconds": 3600.0,
                         "covered_seconds": 86400.0, "day_wh": 0.0, "night_seconds": 3600.0,
                         "night_on_seconds": 3600.0, "peak_w": 60.0, "profile": profile}
                    ],
                )  # fmt: skip
            migrate.upgrade(engine)
            with engine.connect() as conn:
                got = sql.summaries(conn, sql.Scope(DAY0, DAY0, None), by="lamp")["gw-1/lamp-1"]
                rows = sql.select_days(conn, DAY0, DAY0, communes=None)
            assert got.profile == core.summarise([("gw-1/lamp-1", rows[0].totals)]).profile
            assert got.profile[18] == round(100 * 50.5 / 60.0, 1)
        finally:
            engine.dispose()


def old_columns() -> list[sa.ColumnClause[object]]:
    """energy_days as migration 0009 left it."""
    return [
        *(sa.column(n) for n in ("gateway_id", "device_id", "commune")),
        sa.column("day", sa.Date),
        sa.column("profile", sa.JSON),
        *(sa.column(n) for n in ("wh", "on_seconds", "covered_seconds", "day_wh")),
        *(sa.column(n) for n in ("night_seconds", "night_on_seconds", "peak_w")),
    ]
