"""The orchestrator's /metrics, /livez and /readyz, scraped from a real running orchestrator,
and the Grafana dashboard checked against that scrape."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from domain.alarms import Occurrence
from edge.agent import Agent
from foundation.clock import SystemClock
from ondijon.client import AdminClient
from ondijon.demo import lighting_program
from orchestrator.alarms.service import apply
from orchestrator.metrics import NAMES, Metrics
from orchestrator.observe.observer import Observer
from orchestrator.server import start
from protos.ondijon.v1 import control_pb2, link_pb2
from provisioning.ca import CertificateAuthority
from tests.conftest import City, orchestrator_config

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "ondijon.json"


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def scrape(port: int) -> dict[str, float]:
    """Every sample of /metrics: ``name{label="v",...}`` -> value (labels sorted)."""
    status, text = await asyncio.to_thread(get, port, "/metrics")
    assert status == 200
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


async def series(port: int) -> set[str]:
    """Every series name /metrics declares (a family without samples yet included)."""
    status, text = await asyncio.to_thread(get, port, "/metrics")
    assert status == 200
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ())}
        names |= {s.name for s in family.samples}
    return names


def total(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


async def lamp_alarm(city: City, gateway_id: str) -> int:
    """A lamp of ``gateway_id`` found dark: its alarm stored as the link's ingest hook stores
    it, and the alarm gauge refreshed (as its task does every 15 s); the alarm's id."""
    now = datetime.now(UTC)
    found = [Occurrence(gateway_id, "lamp-1", "lamp_failure", True, now, "no current")]
    [alarm_id] = await city.running.app.runner.write(lambda c: apply(c, "Dijon", found, now))
    await city.running.app.alarm_gauge.refresh()
    return alarm_id


@contextlib.asynccontextmanager
async def observed_city(tmp_path: Path, ca: CertificateAuthority) -> AsyncIterator[City]:
    config = replace(orchestrator_config(tmp_path), observe_listen="127.0.0.1:0")
    running = await start(config, SystemClock(), ca=ca)
    city = City(tmp_path, ca, config, running, admin=None)  # type: ignore[arg-type]
    city.admin = city.operator("admin", "admin", ["*"])
    try:
        yield city
    finally:
        await city.running.stop(0)


async def test_a_scrape_shows_what_the_orchestrator_is_doing(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    async with observed_city(tmp_path, ca) as city:
        assert city.running.observer is not None and city.running.observer.server is not None
        port = city.running.observer.server.port
        assert await asyncio.to_thread(get, port, "/livez") == (200, "alive\n")
        assert await asyncio.to_thread(get, port, "/readyz") == (200, "ready\n")

        before = await scrape(port)
        assert set(NAMES) <= await series(port)
        assert before["ondijon_gateways_connected"] == 0

        # One gateway connects and reports; another is registered but never comes.
        lamps = '[[lamps]]\nid = "lamp-1"\nbackend = "simulated"\nnominal_power_w = 60'
        config = await city.enrolled("obs-online", lamps=lamps)
        await city.register("obs-offline")
        put = await AdminClient(city.admin).put_desired_state(
            control_pb2.PutDesiredStateRequest(
                gateway_id="obs-offline",
                kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
                payload=lighting_program().SerializeToString(),
            )
        )
        assert put.document.version > 0
        agent = Agent(config, SystemClock())
        task = asyncio.create_task(agent.run())
        try:
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                samples = await scrape(port)
                if (
                    samples["ondijon_gateways_connected"] == 1
                    and samples["ondijon_device_states_stored_total"] >= 1
                ):
                    break
                assert asyncio.get_running_loop().time() < deadline, samples
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await city.running.observer.refresh()
        after = await scrape(port)
        assert after["ondijon_streams_opened_total"] == 1
        assert after['ondijon_documents_not_converged{kind="schedule"}'] == 1
        # Every write above was a commit the histogram timed.
        assert (
            after["ondijon_store_commit_seconds_count"]
            > before["ondijon_store_commit_seconds_count"]
        )
        # Nothing was refused.
        assert total(after, "ondijon_streams_refused_total") == 0

        # A lamp fails: one major alarm, unacknowledged; acknowledged, it moves.
        assert total(after, "ondijon_alarms") == 0
        alarm_id = await lamp_alarm(city, "obs-online")
        raised = await scrape(port)
        major = 'ondijon_alarms{severity="major",state="%s"}'
        assert raised[major % "unacknowledged"] == 1 and total(raised, "ondijon_alarms") == 1
        await AdminClient(city.admin).acknowledge_alarm(
            control_pb2.AcknowledgeAlarmRequest(alarm_id=alarm_id, text="crew on the way")
        )
        await city.running.app.alarm_gauge.refresh()
        acknowledged = await scrape(port)
        assert acknowledged[major % "unacknowledged"] == 0
        assert acknowledged[major % "acknowledged"] == 1


async def test_every_panel_of_the_dashboard_reads_a_series_the_orchestrator_exposes(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(dashboard["panels"]) >= 8 and all(exprs)
    async with observed_city(tmp_path, ca) as city:
        assert city.running.observer is not None and city.running.observer.server is not None
        await city.register("obs-alarm")
        await lamp_alarm(city, "obs-alarm")  # the alarms panel reads a count that is not 0
        port = city.running.observer.server.port
        exposed = await series(port)
        assert total(await scrape(port), "ondijon_alarms") == 1
    for panel in dashboard["panels"]:
        names = {n for t in panel["targets"] for n in re.findall(r"\bondijon_[a-z_]+", t["expr"])}
        assert names, panel["title"]
        assert names <= exposed, (panel["title"], names - exposed)


async def test_not_ready_while_the_store_is_migrated_then_ready() -> None:
    # What start() does: the endpoint first, the store (and its migrations) after.
    observer = Observer(Metrics(), "127.0.0.1:0")
    try:
        assert observer.server is not None
        status, text = await asyncio.to_thread(get, observer.server.port, "/readyz")
        assert (status, text) == (503, "not ready: migrating the store\n")
        samples = await scrape(observer.server.port)
        assert samples["ondijon_migrating"] == 1 and samples["ondijon_ready"] == 0
        assert (await asyncio.to_thread(get, observer.server.port, "/livez"))[0] == 200
    finally:
        observer.close()


async def test_not_ready_while_the_store_is_unreachable(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    async with observed_city(tmp_path, ca) as city:
        running = city.running
        assert running.observer is not None and running.observer.server is not None
        readiness = running.app.readiness
        assert readiness is not None
        # The store goes away under the replica: its file is made unreadable.
        running.app.runner.store.engine.dispose()
        db = tmp_path / "orchestrator.db"
        db.chmod(0)
        db.rename(tmp_path / "gone.db")
        (tmp_path / "orchestrator.db").mkdir()  # a directory where the database was
        port = running.observer.server.port
        deadline = asyncio.get_running_loop().time() + 15
        while (await asyncio.to_thread(get, port, "/readyz"))[0] != 503:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        _, text = await asyncio.to_thread(get, port, "/readyz")
        assert text.startswith("not ready: store unreachable")
        assert (await scrape(port))["ondijon_ready"] == 0
