"""Firmware outcomes that must not lie, end to end in one process (real orchestrator over
mutual TLS, agents restarted the way the launcher would): an abort that stops downloads
before the point of no return and says who had passed it, a COMMITTED that the gateway's
hello contradicts, a crash after the commit that is no crash loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from domain.firmware.manifest import Part
from edge.firmware.grpc_fetcher import ChannelSource, GrpcChunkFetcher
from ondijon.client import AdminClient
from protos.ondijon.v1 import firmware_pb2
from tests.conftest import City
from tests.firmware_e2e.conftest import BASE, CabinetFactory, Releases
from tests.waiting import eventually

pytestmark = pytest.mark.integration

Stage = firmware_pb2.FirmwareStage
SIZE = 400_000


class Trickle(GrpcChunkFetcher):
    """A slow link: waits between the release's chunks, so an abort lands mid-download."""

    pause_s = 0.05

    async def _fetch(self, part: Part, offset: int, length: int) -> AsyncIterator[bytes]:
        async for chunk in super()._fetch(part, offset, length):
            for start in range(0, len(chunk), 16_384):
                await asyncio.sleep(self.pause_s)
                yield chunk[start : start + 16_384]


def trickle(channel: ChannelSource, version: str) -> GrpcChunkFetcher:
    return Trickle(channel, version)


async def _abort(releases: Releases, campaign_id: str) -> firmware_pb2.Campaign:
    response = await AdminClient(releases.profile).abort_campaign(
        firmware_pb2.AbortCampaignRequest(campaign_id=campaign_id, reason="bad release"),
    )
    return response.campaign


async def test_abort_cancels_downloads_and_names_who_passed_the_point_of_no_return(
    city: City, releases: Releases, cabinets: CabinetFactory
) -> None:
    fast = await cabinets(city, "dj-ab-1")
    slow = await cabinets(city, "dj-ab-2")
    away = await cabinets(city, "dj-ab-3")
    for cabinet in (slow, away):
        assert cabinet.agent is not None
        cabinet.agent.firmware.fetcher = trickle
    await releases.upload(releases.build("0.2.0", size=SIZE))
    campaign_id = await releases.campaign("0.2.0", ["dj-ab-1", "dj-ab-2", "dj-ab-3"])
    await releases.reaches(campaign_id, "dj-ab-1", Stage.FIRMWARE_STAGE_REBOOTING)

    async def downloading(gateway_id: str) -> bool:
        found = await releases.outcome(campaign_id, gateway_id)
        return found.stage == Stage.FIRMWARE_STAGE_DOWNLOADING and found.bytes_done > 0

    await eventually(lambda: downloading("dj-ab-2"))
    await eventually(lambda: downloading("dj-ab-3"))
    await away.stop()  # the link drops mid-download: it hears of the abort on its return

    campaign = await _abort(releases, campaign_id)
    assert campaign.status == firmware_pb2.CAMPAIGN_STATUS_ABORTED
    assert (
        "1 gateway(s) had passed the point of no return; their update goes on: dj-ab-1"
        in (campaign.history[-1])
    )

    # The gateway in mid-download stops there, keeps its version and says so.
    cancelled = await releases.reaches(campaign_id, "dj-ab-2", Stage.FIRMWARE_STAGE_CANCELLED)
    assert "cancelled before the point of no return: campaign aborted" in cancelled.detail
    assert cancelled.running_version == BASE and not cancelled.past_point_of_no_return
    assert slow.slot_state().get("trial") is None and not (slow.state_dir / "slots").exists()
    assert not slow.restart_requested.is_set()
    assert not any((slow.state_dir / "downloads").iterdir())

    # The one that was offline is told when it comes back, and cleans up.
    await away.restart()
    await releases.reaches(campaign_id, "dj-ab-3", Stage.FIRMWARE_STAGE_CANCELLED)
    assert away.slot_state().get("trial") is None
    assert not any((away.state_dir / "downloads").iterdir())

    # The one past the point of no return goes on to its outcome.
    agent = await fast.restart()
    assert agent.firmware_version == "0.2.0"
    committed = await releases.reaches(campaign_id, "dj-ab-1", Stage.FIRMWARE_STAGE_COMMITTED)
    assert committed.past_point_of_no_return and committed.hello_version == "0.2.0"
    shown = await releases.show(campaign_id)
    assert shown.reasons == [
        "1 gateway(s) had passed the point of no return; their update goes on to its outcome:"
        " dj-ab-1",
        "2 gateway(s) cancelled before the point of no return",
    ]


async def test_a_commit_the_hello_contradicts_is_a_failure_and_final_outcomes_stay(
    city: City, releases: Releases, cabinets: CabinetFactory
) -> None:
    cabinet = await cabinets(city, "dj-lie-1")
    await releases.upload(releases.build("0.2.0"))
    campaign_id = await releases.campaign("0.2.0", ["dj-lie-1"])
    await releases.reaches(campaign_id, "dj-lie-1", Stage.FIRMWARE_STAGE_REBOOTING)
    assert cabinet.agent is not None and cabinet.agent.firmware_version == BASE
    runner = city.running.app.campaigns
    assert runner is not None

    # What an agent that lies says (the hawkBit trap: a rolled-back process answering a
    # re-offer), while its hello reported the old version.
    lie = firmware_pb2.FirmwareProgress(
        campaign_id=campaign_id,
        version="0.2.0",
        stage=Stage.FIRMWARE_STAGE_COMMITTED,
        detail="0.2.0 is already running",
        running_version="0.2.0",
    )
    await runner.on_progress("dj-lie-1", lie)
    shown = await releases.show(campaign_id)
    (row,) = shown.gateways
    assert row.stage == Stage.FIRMWARE_STAGE_COMMITTED and row.hello_version == BASE
    # The campaign does not count it as updated: its hello says 0.1.0.
    await runner.tick()
    shown = await releases.show(campaign_id)
    assert shown.status == firmware_pb2.CAMPAIGN_STATUS_HALTED
    assert (shown.waves[0].committed, shown.waves[0].failed) == (0, 1)
    assert "dj-lie-1 (reported committed but its hello reports 0.1.0)" in shown.history[-1]

    rolled = firmware_pb2.FirmwareProgress(
        campaign_id=campaign_id,
        version="0.2.0",
        stage=Stage.FIRMWARE_STAGE_ROLLED_BACK,
        detail="health check (orchestrator) did not pass within 60 s",
        running_version=BASE,
    )
    await runner.on_progress("dj-lie-1", rolled)
    await runner.on_progress("dj-lie-1", lie)  # later, and final: changes nothing
    (row,) = (await releases.show(campaign_id)).gateways
    assert row.stage == Stage.FIRMWARE_STAGE_ROLLED_BACK
    assert row.detail == "health check (orchestrator) did not pass within 60 s"


async def test_a_crash_after_the_commit_is_no_crash_loop(
    city: City, releases: Releases, cabinets: CabinetFactory
) -> None:
    cabinet = await cabinets(city, "dj-cc-1")
    await releases.upload(releases.build("0.2.0"))
    campaign_id = await releases.campaign("0.2.0", ["dj-cc-1"])
    await releases.reaches(campaign_id, "dj-cc-1", Stage.FIRMWARE_STAGE_REBOOTING)
    await eventually(cabinet.restart_requested.is_set)
    await cabinet.restart()
    await releases.reaches(campaign_id, "dj-cc-1", Stage.FIRMWARE_STAGE_COMMITTED)
    committed = cabinet.slot_state()["committed"]

    # It crashes once (no clean stop), comes back on the committed release and runs its
    # stability period: the count of unstable starts goes back to 0.
    await cabinet.stop()
    assert cabinet.boot_step() == committed
    assert cabinet.slot_state()["starts"] == 1
    agent = await cabinet.start()
    assert agent.firmware_version == "0.2.0"
    await eventually(lambda: cabinet.slot_state()["starts"] == 0)

    async def completed() -> bool:
        shown = await releases.show(campaign_id)
        return shown.status == firmware_pb2.CAMPAIGN_STATUS_COMPLETED

    await eventually(completed)
    (row,) = (await releases.show(campaign_id)).gateways
    assert (row.stage, row.hello_version) == (Stage.FIRMWARE_STAGE_COMMITTED, "0.2.0")
