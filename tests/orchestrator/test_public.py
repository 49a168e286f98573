"""The public side of a real orchestrator over real HTTPS: every file of the export valid
against its schema and free of the personal data planted in the store; ETag and
Last-Modified answered 304; rate limits; citizens' reports raising or joining alarms, one
use per challenge, followed by reference, deleted after retention (injected clock); on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from domain.alarms import Occurrence
from domain.city.generator import generate
from domain.city.inventory import AssetKind, diff
from domain.opendata import reports as core
from domain.opendata.privacy import scan
from foundation.clock import SystemClock
from orchestrator.access.limits import BucketMap
from orchestrator.alarms.service import apply
from orchestrator.config import Public
from orchestrator.public.reports import ReportService
from orchestrator.server import Running, start
from orchestrator.store import alarms as alarm_sql
from orchestrator.store import assets as asset_sql
from orchestrator.store import public as public_sql
from orchestrator.store.database import Store
from protos.ondijon.v1 import access_pb2, link_pb2
from provisioning.ca import CertificateAuthority
from tests.conftest import orchestrator_config
from tests.opendata_checks import validate_export
from tests.orchestrator.test_store import BACKENDS, fresh_database

PERSONAL = [
    "jeanne.martin",  # an operator: author of commands, documents, alarm actions
    "AB-123-CD",  # a plate in an access list's label
    "Mme Dupont",  # a resident in an access list
    "06 12 34 56 78",  # a caller's number in an alarm comment
    "3f9a0c2b7d4e8f1a",  # part of a badge's credential digest
]


def plant_personal_data(store: Store, city: Any, now: datetime) -> None:
    """Personal data where the store holds it: an operator, an access list with plates and
    names, a command's author, an alarm acknowledged by an operator with a caller's number."""
    site = next(a for a in city.assets if a.kind == AssetKind.BOLLARD_SITE)
    lamp = next(a for a in city.assets if a.kind == AssetKind.LAMP)
    grants = access_pb2.AccessList(
        grants=[
            access_pb2.AccessGrant(
                credential_sha256="3f9a0c2b7d4e8f1a" * 4, label="AB-123-CD Mme Dupont"
            )
        ]
    ).SerializeToString()
    import hashlib

    with store.engine.begin() as conn:
        store.put_operator(conn, name="jeanne.martin", role="admin", communes=["*"], now=now)
        store.put_document(
            conn,
            gateway_id=site.gateway_id,
            kind=link_pb2.DOCUMENT_KIND_ACCESS_LIST,
            digest=hashlib.sha256(grants).digest(),
            payload=grants,
            expected_version=0,
            issued_by="jeanne.martin",
            now=now,
        )
        store.add_command(
            conn,
            command_id="cmd-1",
            gateway_id=lamp.gateway_id,
            payload=b"",
            expires_at=now + timedelta(hours=1),
            status=1,
            created_by="jeanne.martin",
            now=now,
        )
        (alarm_id,) = apply(
            conn,
            lamp.commune,
            [Occurrence(lamp.gateway_id, lamp.device_id, "lamp_failure", True, now, "dark")],
            now,
        )
        stored = alarm_sql.get(conn, alarm_id)
        assert stored is not None
        acked = replace(
            stored.alarm,
            acknowledged=True,
            acknowledged_by="jeanne.martin",
            comment="caller 06 12 34 56 78 says it flickers",
        )
        alarm_sql.save(conn, alarm_id, acked, commune=lamp.commune, now=now)


@dataclass
class Site:
    running: Running
    store_url: str
    city: Any
    session: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.running.public_port}{path}"

    async def get(self, path: str, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
        async with self.session.get(self.url(path), headers=headers) as r:
            return r.status, CIMultiDict(r.headers), await r.read()


@pytest.fixture(params=BACKENDS)
async def site(
    request: pytest.FixtureRequest, tmp_path: Path, ca: CertificateAuthority
) -> AsyncIterator[Site]:
    with fresh_database(request.param, tmp_path) as url:
        now = datetime.now(UTC)
        city = generate(5, cabinets=50, lamps=600, crossings=5, bollard_sites=4)
        store = Store.open(url)
        with store.engine.begin() as conn:
            asset_sql.apply_diff(conn, diff({}, city.assets), now=now)
        plant_personal_data(store, city, now)
        store.close()
        config = replace(
            orchestrator_config(tmp_path),
            store_url=url,
            public=Public(
                listen="127.0.0.1:0",
                challenge_bits=8,
                refresh_s=3600,
                request_burst=1000,
                requests_per_s=1000,
                report_burst=5,
            ),
        )
        running = await start(config, SystemClock(), ca=ca)
        context = ssl.create_default_context(cadata=ca.root_pem.decode())
        try:
            assert running.app.public is not None
            await running.app.public.ready(60)
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context)
            ) as session:
                yield Site(running, url, city, session)
        finally:
            await running.stop()


@pytest.mark.integration
async def test_every_file_served_is_valid_and_holds_no_personal_data(site: Site) -> None:
    status, _, body = await site.get("/opendata/")
    assert status == 200
    import json

    names = list(json.loads(body)["files"])
    files = {}
    for name in names:
        status, _headers, data = await site.get(f"/opendata/{name}")
        assert status == 200, name
        files[name] = data
        assert not scan(name, data, planted=PERSONAL), name
    rows = validate_export(files)
    assert len(rows["streetlights"]) == 600
    assert {r["id"] for r in rows["access_sites"]} == {
        a.asset_id
        for a in site.city.assets
        if a.kind in (AssetKind.BOLLARD_SITE, AssetKind.CROSSING)
    }
    # The lamp with the open failure is published as defective only once it reported a state;
    # the outage counts it today.
    today = [r for r in rows["outages"] if r["lampsOut"] > 0]
    assert today and sum(r["lampsOut"] for r in today) >= 1


@pytest.mark.integration
async def test_conditional_requests_get_304_and_the_rate_limit_429(site: Site) -> None:
    status, headers, _body = await site.get("/opendata/streetlights.geojson")
    assert status == 200 and headers["Content-Type"].startswith("application/geo+json")
    etag, modified = headers["ETag"], headers["Last-Modified"]
    status, _, again = await site.get("/opendata/streetlights.geojson", **{"If-None-Match": etag})
    assert status == 304 and again == b""
    status, _, _ = await site.get(
        "/opendata/streetlights.geojson", **{"If-Modified-Since": modified}
    )
    assert status == 304
    status, _, _ = await site.get("/opendata/streetlights.geojson", **{"If-None-Match": '"x"'})
    assert status == 200
    # A rebuild that changes nothing keeps the validators: re-users' caches keep hitting.
    assert site.running.app.public is not None
    await site.running.app.public.refresh()
    _, headers2, _ = await site.get("/opendata/streetlights.geojson")
    assert headers2["ETag"] == etag and headers2["Last-Modified"] == modified
    async with site.session.post(site.url("/opendata/streetlights.csv")) as r:
        assert r.status == 405
    # The report page and its script, under a CSP that allows nothing from elsewhere.
    status, headers, page = await site.get("/report")
    assert status == 200 and b'src="/static/report.js"' in page
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, _, script = await site.get("/static/report.js")
    assert status == 200 and b"crypto.subtle.digest" in script
    # Tight budget: a burst of requests from one address meets 429 with Retry-After.
    site.running.app.public.requests = BucketMap(0.5, 5, 100)
    statuses = [(await site.get("/opendata/"))[0] for _ in range(8)]
    assert statuses.count(429) >= 2 and statuses[0] == 200


async def report(site: Site, **body: Any) -> tuple[int, dict[str, Any]]:
    async with site.session.get(site.url("/api/reports/challenge")) as r:
        challenge = (await r.json())["challenge"]
    body = {"challenge": challenge, "nonce": core.solve(challenge)} | body
    async with site.session.post(site.url("/api/reports"), json=body) as r:
        return r.status, await r.json()


@pytest.mark.integration
async def test_reports_raise_or_join_alarms_and_are_followed(site: Site) -> None:
    lamps = [a for a in site.city.assets if a.kind == AssetKind.LAMP]
    failed = lamps[0]  # its lamp_failure alarm is open (planted)
    other = next(a for a in lamps if a.gateway_id != failed.gateway_id)
    status, known = await report(
        site, kind="lamp_out", latitude=failed.latitude, longitude=failed.longitude
    )
    assert status == 201, known
    assert known["already_known"] is True
    status, new = await report(
        site,
        kind="lamp_out",
        detail="flickering",
        latitude=other.latitude,
        longitude=other.longitude,
    )
    assert status == 201 and new["already_known"] is False and new["asset"] == other.asset_id
    store = site.running.app.runner.store
    with store.engine.connect() as conn:
        raised = alarm_sql.open_of_type(conn, "reported")
    assert [(a.alarm.gateway_id, a.alarm.device_id) for a in raised] == [
        (other.gateway_id, other.device_id)
    ]
    assert "jeanne" not in raised[0].alarm.message
    # Followed by its reference; nothing else found by guessing.
    async with site.session.get(site.url(new["follow"])) as r:
        followed = await r.json()
    assert followed["status"] == "received" and followed["asset"] == other.asset_id
    async with site.session.get(site.url("/api/reports/AAAAAAAAAAAAAAAA")) as r:
        assert r.status == 404
    # A challenge serves once; a position with no lamp near is refused, nothing kept.
    async with site.session.get(site.url("/api/reports/challenge")) as r:
        challenge = (await r.json())["challenge"]
    body = {
        "challenge": challenge,
        "nonce": core.solve(challenge),
        "kind": "lamp_out",
        "latitude": other.latitude,
        "longitude": other.longitude,
    }
    async with site.session.post(site.url("/api/reports"), json=body) as r:
        assert r.status == 201
    async with site.session.post(site.url("/api/reports"), json=body) as r:
        assert r.status == 422 and (await r.json())["field"] == "challenge"
    status, refused = await report(site, kind="lamp_out", latitude=47.3, longitude=4.95)
    assert status == 422 and refused["field"] in ("latitude", "rate")
    with store.engine.connect() as conn:
        assert public_sql.count_reports(conn) == 3


@pytest.mark.integration
async def test_reports_are_deleted_after_the_retention_period(site: Site) -> None:
    lamp = next(a for a in site.city.assets if a.kind == AssetKind.LAMP)
    instant = [datetime(2026, 10, 24, 22, 0, tzinfo=UTC)]  # before the autumn DST change
    service = ReportService(
        runner=site.running.app.runner,
        now=lambda: instant[0],
        secret=b"s" * 32,
        difficulty=4,
        retention=timedelta(days=90),
    )
    made = []
    for _ in range(2):
        challenge = service.challenge()["challenge"]
        done = await service.submit(
            {
                "kind": "lamp_out",
                "latitude": lamp.latitude,
                "longitude": lamp.longitude,
                "challenge": challenge,
                "nonce": core.solve(challenge),
            }
        )
        made.append(done.reference)
        instant[0] += timedelta(days=1)
    instant[0] = datetime(2026, 10, 24, 22, 0, tzinfo=UTC) + timedelta(days=90)
    assert await service.sweep() == 1
    assert await service.follow(made[0]) is None
    assert (await service.follow(made[1]) or {})["deleted_on"] == "2027-01-23"
    instant[0] += timedelta(days=1)
    assert await service.sweep() == 1
    assert await service.follow(made[1]) is None


async def test_public_side_is_off_unless_configured(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    running = await start(orchestrator_config(tmp_path), SystemClock(), ca=ca)
    try:
        assert running.public is None and running.app.public is None
    finally:
        await running.stop()
    await asyncio.sleep(0)
