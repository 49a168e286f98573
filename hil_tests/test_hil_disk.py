"""A full disk on the cabinet, on the bench: the whole chain (orchestrator, mutual TLS, the
cabinet process) with the cabinet's disk filled while it runs at night (``RLIMIT_FSIZE``
of the process set to 0: no file may grow, what works unprivileged in CI; the pin journal
goes through a pipe). The street must not notice, the control centre must get an alarm,
and nothing the orchestrator acknowledged may be lost.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_hil_city import SCHEDULE, night
from whole_chain import city_bench

from edge.bench.inventory import Inventory
from edge.bench.report import Record
from protos.ondijon.v1 import control_pb2, link_pb2

pytestmark = pytest.mark.integration

LONG = os.environ.get("ONDIJON_LONG", "") not in ("", "0")


@pytest.mark.timeout(300 if LONG else 120)
async def test_a_full_disk_leaves_the_street_lit_raises_an_alarm_and_loses_nothing_acked(
    tmp_path: Path, sim_bench: Inventory, inventory_file: Path, record: Record
) -> None:
    """The cabinet's disk fills up at night (10 simulated minutes, 2 hours in the long
    form) and a lamp dies meanwhile: the lamps stay lit on the pins at the night's level,
    the bollard never moves, the agent keeps running, the control centre gets an alarm,
    and every event acknowledged before is still at the orchestrator; once the disk is
    freed, what was recorded after reaches it too."""
    full_for = timedelta(hours=2) if LONG else timedelta(minutes=10)
    evening = datetime(2026, 10, 12, 20, 0, tzinfo=UTC)
    async with city_bench(
        tmp_path, sim_bench, inventory_file, kinds=["lamps", "bollards"], start=evening,
        record=record, speed=60, pipe=True,
    ) as bench:  # fmt: skip
        rig = bench.rig
        await bench.connected()
        await bench.holds(SCHEDULE, await bench.put(SCHEDULE, night(40)))
        lit = f"lamps.{sim_bench.lamps[0].id}.pwm"
        now = datetime.max.replace(tzinfo=UTC)
        await rig.wait_for(lambda: rig.level(lit, now) == 0.4)
        acked = await bench.delivered()

        full_at = await rig.disk("full")
        record.faults.append(
            {"at": full_at.isoformat(), "fault": "disk_full", "target": "cabinet",
             "detail": "RLIMIT_FSIZE 0"}
        )  # fmt: skip
        dead = sim_bench.lamps[1].id
        await bench.inject("dead_lamp", dead)
        await rig.pace(600, 0.5)
        await rig.until(full_at + full_for, timeout=240)
        assert rig.process is not None and rig.process.returncode is None, rig.tail()
        for lamp in sim_bench.lamps:
            pwm = rig.changes(f"lamps.{lamp.id}.pwm", since=full_at)
            relay = rig.changes(f"lamps.{lamp.id}.relay", since=full_at)
            record.measure(
                f"{lamp.id}.output_changes_while_full", len(pwm) + len(relay), high=0,
                description="changes of the lamp's relay and dimming lines, the disk full",
            )  # fmt: skip
            assert rig.level(f"lamps.{lamp.id}.pwm", full_at + full_for) == 0.4
        for post in sim_bench.bollards:
            moves = [
                c
                for c in rig.read_journal()
                if c.line.startswith(f"bollards.{post.id}.motor") and c.state
            ]
            record.measure(f"{post.id}.motor_runs", len(moves), high=0)
        # Nothing acknowledged before is lost.
        still = {e.event.sequence for e in await bench.stored()}
        record.measure(
            "acked_events_missing", len(set(acked) - still), high=0,
            description="events the orchestrator acknowledged before the disk filled, gone",
        )  # fmt: skip

        freed_at = await rig.disk("freed")
        freed = time.monotonic()

        async def alarmed() -> list[control_pb2.StoredEvent]:
            return [e for e in await bench.stored() if e.event.type == "storage.full"]

        while len(await alarmed()) < 2:
            assert time.monotonic() - freed < 60, rig.tail()
            await asyncio.sleep(0.1)
        record.measure(
            "alarm_after_freeing_s", time.monotonic() - freed, unit="s", low=0.0, high=10.0,
            description="the disk freed to the storage.full alarm stored at the orchestrator",
        )  # fmt: skip
        raised, cleared = [e.event for e in await alarmed()]
        assert raised.priority == link_pb2.EVENT_PRIORITY_ALARM
        assert raised.attributes["state"] == "raised" and cleared.attributes["state"] == "cleared"
        assert raised.at.ToDatetime(tzinfo=UTC) < freed_at
        sequences = await bench.delivered()
        assert sequences == list(range(1, sequences[-1] + 1))  # none missing
        stored = [e.event for e in await bench.stored()]
        failures = [e for e in stored if e.type == "lamp_failure"]
        # The lamp that died while the disk was full: its alarm, timed when it happened.
        assert failures and {e.device_id for e in failures} == {dead}
        assert failures[0].at.ToDatetime(tzinfo=UTC) < freed_at
