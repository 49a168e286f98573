"""The agent's local /metrics: outbox depth and age, last sync, device faults, clock trust."""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from edge.agent import Agent
from edge.events import EquipmentEvent, Priority
from edge.observe import AgentObserver
from foundation.clock import ManualClock
from tests.conftest import offline_agent_config

START = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # the night DST starts in Dijon


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        s.name + "".join(f"[{v}]" for v in s.labels.values()): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


async def test_the_agent_shows_its_outbox_faults_and_clock(tmp_path: Path) -> None:
    lamps = '[[lamps]]\nid = "lamp-1"\nbackend = "simulated"\nnominal_power_w = 60'
    clock = ManualClock(START)
    agent = Agent(offline_agent_config(tmp_path, "obs-1", lamps), clock)
    try:
        agent.record(
            EquipmentEvent(
                device_id="lamp-1", type="lamp.failure", priority=Priority.ALARM, at=clock.now()
            )
        )
        clock.advance(90)  # the event has waited 90 s, across 02:00 going to 03:00
        observer = AgentObserver("127.0.0.1:0", lambda: agent.readings(ready=True))
        task = asyncio.create_task(observer.run())
        try:
            await asyncio.sleep(0.2)
            samples = await asyncio.to_thread(scrape, observer.server.port)
        finally:
            task.cancel()
        assert samples["ondijon_agent_outbox_events[alarm]"] >= 1
        assert samples["ondijon_agent_outbox_oldest_age_seconds"] >= 90
        assert samples["ondijon_agent_outbox_oldest_age_seconds"] < 90 + 60
        assert samples["ondijon_agent_last_sync_timestamp_seconds"] == 0  # never connected
        assert samples["ondijon_agent_connected"] == 0
        assert samples["ondijon_agent_device_faults[lamp]"] == 0
        # A ManualClock is its own reference (edge.agent.default_clock_sync): trusted.
        assert samples["ondijon_agent_clock_trusted"] == 1
    finally:
        agent.close()
