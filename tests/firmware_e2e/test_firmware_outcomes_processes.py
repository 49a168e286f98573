"""Firmware outcomes with real agent processes, the real launcher and a faulty or cut-off
release (see :mod:`tests.firmware_e2e.processes`): what the campaign believes is what the
gateway runs.

The short form runs in ``make test`` with the shipped unit's times scaled to a fifth. The
long form runs every failure kind with the shipped unit as it is and prints the time to
rollback of each::

    ONDIJON_FIRMWARE_LONG=1 .venv/bin/pytest tests/firmware_e2e -m slow -s
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from ondijon.client import AdminClient
from protos.ondijon.v1 import control_pb2, firmware_pb2
from tests.conftest import City
from tests.firmware_e2e.processes import (
    BASE,
    FAULTS,
    NEW,
    ProcessCabinet,
    Timing,
    campaign,
    measure_rollback,
    outcome,
    process_cabinet,
    show,
    upload,
)

pytestmark = pytest.mark.integration
LONG = pytest.mark.skipif(
    not os.environ.get("ONDIJON_FIRMWARE_LONG"),
    reason="long firmware-outcome run: set ONDIJON_FIRMWARE_LONG=1",
)
Stage = firmware_pb2.FirmwareStage


@pytest.fixture
async def started() -> AsyncIterator[list[ProcessCabinet]]:
    cabinets: list[ProcessCabinet] = []
    yield cabinets
    for cabinet in cabinets:
        await cabinet.stop()


async def _events(city: City, gateway_id: str, kind: str) -> list[control_pb2.StoredEvent]:
    response = await AdminClient(city.admin).list_events(
        control_pb2.ListEventsRequest(gateway_id=gateway_id)
    )
    return [e for e in response.events if e.event.type == kind]


async def test_a_trial_cut_off_from_the_orchestrator_is_rolled_back_and_counted_so(
    city: City, started: list[ProcessCabinet]
) -> None:
    cabinet = await process_cabinet(city, "dj-proc-1", Timing.short())
    started.append(cabinet)
    await upload(city, NEW, "cut_off")
    campaign_id = await campaign(city, NEW, ["dj-proc-1"])

    rollback = await measure_rollback(city, cabinet, "cut_off", campaign_id, timeout=60)

    # The trial really ran the new release, and what came back runs the old one.
    assert [s.status.split()[-1] for s in rollback.starts[:2]] == [NEW, BASE]
    found = rollback.outcome
    assert found is not None
    assert "health check (orchestrator) did not pass within 4 s" in found.detail
    assert (found.running_version, found.hello_version) == (BASE, BASE)
    assert found.past_point_of_no_return
    # Re-offered on the reconnection (the row said REBOOTING): still rolled back, and the
    # campaign counts a failure, not an update.
    await asyncio.sleep(1.0)
    assert (await outcome(city, campaign_id, "dj-proc-1")).stage == Stage.FIRMWARE_STAGE_ROLLED_BACK
    shown = await show(city, campaign_id)
    assert shown.status == firmware_pb2.CAMPAIGN_STATUS_HALTED
    assert (shown.waves[0].committed, shown.waves[0].failed) == (0, 1)
    (event,) = await _events(city, "dj-proc-1", "firmware.rolled_back")
    assert event.event.attributes["version"] == NEW
    assert event.event.attributes["running_version"] == BASE
    assert not await _events(city, "dj-proc-1", "firmware.committed")


async def test_a_release_that_crash_loops_after_its_commit_falls_back_and_says_so(
    city: City, started: list[ProcessCabinet]
) -> None:
    cabinet = await process_cabinet(city, "dj-proc-2", Timing.short())
    started.append(cabinet)
    await upload(city, NEW, "crash_loop_after_commit")
    campaign_id = await campaign(city, NEW, ["dj-proc-2"])

    rollback = await measure_rollback(
        city, cabinet, "crash_loop_after_commit", campaign_id, timeout=90
    )

    versions = [s.status.split()[-1] for s in rollback.starts if s.ready is not None]
    # The trial committed after its stability period, then crashed; three more starts of
    # the committed release crashed too; the launcher fell back to the base install.
    assert versions == [NEW, NEW, NEW, NEW, BASE]
    assert all(s.result == "exited 70" for s in rollback.starts[:4])
    found = rollback.outcome
    assert found is not None
    assert found.detail.startswith("crash loop after commit: 3 starts in a row ended before")
    assert found.detail.endswith("falling back to the base install")
    assert (found.running_version, found.hello_version) == (BASE, BASE)
    # Committed, reported by the release itself (again by a start that crashed before it
    # could note the report was made: at least once, merged idempotently).
    committed = await _events(city, "dj-proc-2", "firmware.committed")
    assert committed and all(e.event.attributes["running_version"] == NEW for e in committed)
    shown = await show(city, campaign_id)
    assert (shown.waves[0].committed, shown.waves[0].failed) == (0, 1)


@LONG
@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_time_to_rollback_of_each_failure_kind_with_the_shipped_unit(
    city: City, started: list[ProcessCabinet]
) -> None:
    timing = Timing.shipped(stability_s=30.0)
    results = {}
    for kind in FAULTS:
        gateway_id = f"dj-long-{kind.replace('_', '-')}"
        cabinet = await process_cabinet(city, gateway_id, timing)
        started.append(cabinet)
        version = f"0.2.{len(results) + 1}"
        await upload(city, version, kind)
        campaign_id = await campaign(city, version, [gateway_id])
        results[kind] = await measure_rollback(
            city, cabinet, kind, campaign_id, timeout=900, version=version
        )
    for kind, rollback in results.items():
        print(f"{kind}: rolled back in {rollback.seconds:.1f} s, {len(rollback.starts)} starts")
        assert rollback.outcome is not None
        assert rollback.outcome.running_version == BASE
