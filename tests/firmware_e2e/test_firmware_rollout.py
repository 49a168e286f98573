"""A release's way to a gateway, end to end: download cut and resumed, install, restart,
health check, commit; and the two ways back: a failed health check and a crash loop."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from domain.firmware.manifest import Part
from edge.firmware.grpc_fetcher import ChannelSource, GrpcChunkFetcher
from edge.firmware.launch import SLOT_ENV, exec_plan
from ondijon.client import AdminClient
from protos.ondijon.v1 import control_pb2, firmware_pb2
from tests.conftest import City
from tests.firmware_e2e.conftest import BASE, Cabinet, CabinetFactory, Releases
from tests.waiting import eventually

pytestmark = pytest.mark.integration

Stage = firmware_pb2.FirmwareStage
SIZE = 600_000


class CutOnce(GrpcChunkFetcher):
    """Cancels the first Download stream after ``cut_at`` bytes (the link went bad)."""

    cut_at: int | None = None

    async def _fetch(self, part: Part, offset: int, length: int) -> AsyncIterator[bytes]:
        async for chunk in super()._fetch(part, offset, length):
            left = CutOnce.cut_at
            if left is not None and len(chunk) >= left:
                CutOnce.cut_at = None
                yield chunk[:left]
                raise ConnectionResetError("stream cut by the test")
            if left is not None:
                CutOnce.cut_at = left - len(chunk)
            yield chunk


def cutting(channel: ChannelSource, version: str) -> GrpcChunkFetcher:
    return CutOnce(channel, version)


async def _offered_and_rebooting(
    city: City, releases: Releases, cabinet: Cabinet, gateway_id: str
) -> str:
    await releases.upload(releases.build("0.2.0", size=SIZE))
    campaign_id = await releases.campaign("0.2.0", [gateway_id])
    await releases.reaches(campaign_id, gateway_id, Stage.FIRMWARE_STAGE_REBOOTING)
    await eventually(cabinet.restart_requested.is_set)
    return campaign_id


async def test_a_cut_download_resumes_then_the_release_commits(
    city: City, releases: Releases, cabinets: CabinetFactory
) -> None:
    cabinet = await cabinets(city, "dj-up-1")
    assert cabinet.agent is not None
    cabinet.agent.firmware.fetcher = cutting
    cut = random.Random(6).randrange(1, SIZE - 1)
    CutOnce.cut_at = cut

    campaign_id = await _offered_and_rebooting(city, releases, cabinet, "dj-up-1")

    # The second stream asked for the rest only: the bytes kept at the cut were durable.
    service = city.running.app.campaigns.releases  # type: ignore[union-attr]
    first, resumed = service.downloads[0], service.downloads[-1]
    assert (first.offset, resumed.offset) == (0, cut)
    assert resumed.length == first.length - cut
    # What was in flight when the stream was cut is lost, never the whole part.
    assert service.bytes_served < 2 * first.length

    agent = await cabinet.restart()
    assert agent.firmware_version == "0.2.0"  # the launcher booted the new slot
    outcome = await releases.reaches(campaign_id, "dj-up-1", Stage.FIRMWARE_STAGE_COMMITTED)
    assert outcome.running_version == "0.2.0"
    assert cabinet.slot_state()["committed"] == cabinet.slot_state()["active"]

    async def completed() -> bool:
        campaign = await releases.show(campaign_id)
        return campaign.status == firmware_pb2.CAMPAIGN_STATUS_COMPLETED

    await eventually(completed)
    response = await AdminClient(city.admin).get_gateway(
        control_pb2.GetGatewayRequest(gateway_id="dj-up-1")
    )
    assert response.gateway.firmware_version == "0.2.0"
    # Stays committed across a further restart.
    await cabinet.restart()
    assert cabinet.boot_step() == cabinet.slot_state()["committed"]


async def test_a_release_that_fails_its_health_check_rolls_back(
    city: City, releases: Releases, cabinets: CabinetFactory
) -> None:
    cabinet = await cabinets(city, "dj-up-2")
    campaign_id = await _offered_and_rebooting(city, releases, cabinet, "dj-up-2")

    # The new version cannot reach the orchestrator: it never passes its health check.
    trial = await cabinet.restart(address="localhost:1")
    assert trial.firmware_version == "0.2.0"
    await eventually(cabinet.restart_requested.is_set)

    agent = await cabinet.restart()
    assert agent.firmware_version == BASE
    outcome = await releases.reaches(campaign_id, "dj-up-2", Stage.FIRMWARE_STAGE_ROLLED_BACK)
    assert "health check (orchestrator) did not pass within 60 s" in outcome.detail
    assert outcome.running_version == BASE

    async def halted() -> bool:
        campaign = await releases.show(campaign_id)
        return campaign.status == firmware_pb2.CAMPAIGN_STATUS_HALTED

    await eventually(halted)


async def test_a_crash_loop_rolls_back(
    city: City, releases: Releases, cabinets: CabinetFactory
) -> None:
    cabinet = await cabinets(city, "dj-up-3")
    campaign_id = await _offered_and_rebooting(city, releases, cabinet, "dj-up-3")
    await cabinet.stop()

    # The new version dies at start-up three times: the launcher counts each boot...
    for _ in range(3):
        _, env = exec_plan(cabinet.state_dir, ["-m", "edge.agent"], {}, now=cabinet.clock.now())
        assert env[SLOT_ENV] in ("a", "b")
    # ...and the fourth boots the base install again, before the agent is even imported.
    _, env = exec_plan(cabinet.state_dir, ["-m", "edge.agent"], {}, now=cabinet.clock.now())
    assert env[SLOT_ENV] == "base"

    agent = await cabinet.start()
    assert agent.firmware_version == BASE
    outcome = await releases.reaches(campaign_id, "dj-up-3", Stage.FIRMWARE_STAGE_ROLLED_BACK)
    assert "3 boots without passing the health check" in outcome.detail
