"""Campaigns end to end: a failing canary halts the rollout with the rest untouched, a
campaign waits for its maintenance window and for daylight at lamp sites, operators steer
it from the CLI within their scope, and agents that predate firmware offers keep working."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest

import edge.link
from foundation.clock import ManualClock
from ondijon.cli import main
from ondijon.client import AdminClient, AdminError
from protos.ondijon.v1 import control_pb2, firmware_pb2
from tests.conftest import City
from tests.firmware_e2e.conftest import (
    BASE,
    CabinetFactory,
    Releases,
    make_releases,
)
from tests.waiting import eventually

pytestmark = pytest.mark.integration

Stage = firmware_pb2.FirmwareStage
PARIS = ZoneInfo("Europe/Paris")


async def test_a_failing_canary_halts_the_campaign_with_the_rest_untouched(
    city: City,
    releases: Releases,
    cabinets: CabinetFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateways = ["dj-c-1", "dj-c-2", "dj-c-3"]
    fleet = [await cabinets(city, g) for g in gateways]
    # Signed by a key no agent pins: whoever is offered it refuses it.
    await releases.upload(releases.build("0.2.0", key=releases.stranger))
    campaign_id = await releases.campaign(
        "0.2.0",
        gateways,
        waves=[firmware_pb2.CampaignWave(percent=1), firmware_pb2.CampaignWave(percent=100)],
    )

    async def halted() -> bool:
        return (await releases.show(campaign_id)).status == firmware_pb2.CAMPAIGN_STATUS_HALTED

    await eventually(halted)
    campaign = await releases.show(campaign_id)
    (canary,) = [g for g in campaign.gateways if g.wave == 1]
    assert canary.stage == Stage.FIRMWARE_STAGE_REFUSED
    assert "halted: wave 1 has 1/1 gateways failed" in campaign.history[-1]
    rest = [g for g in campaign.gateways if g.wave == 2]
    assert len(rest) == 2
    for outcome in rest:
        assert outcome.stage == Stage.FIRMWARE_STAGE_UNSPECIFIED
        assert not outcome.HasField("offered_at")
        cabinet = fleet[gateways.index(outcome.gateway_id)]
        assert cabinet.agent is not None and cabinet.agent.firmware.task is None
        assert cabinet.agent.firmware_version == BASE
        assert not (cabinet.state_dir / "downloads").exists()

    # Operators steer it from the CLI; the output shows waves and outcomes.
    profile = ["--profile", str(city.admin.directory)]
    assert await asyncio.to_thread(main, ["campaign", "show", campaign_id, *profile]) == 0
    shown = capsys.readouterr().out
    assert "halted" in shown and "signed only by unknown keys" in shown
    assert await asyncio.to_thread(main, ["campaign", "resume", campaign_id, *profile]) == 0
    assert "1 failure(s) acknowledged" in capsys.readouterr().out
    # The operator set the canary's failure aside: the campaign decides on wave 2, whose
    # gateways refuse the release in turn and halt it again, saying so.
    await eventually(halted)
    campaign = await releases.show(campaign_id)
    assert "wave 1 reached 0/0 updated, 1 acknowledged failure(s) set aside: wave 2 opens" in (
        " ".join(campaign.history)
    )
    assert "halted: wave 2 has " in campaign.history[-1]

    async def all_refused() -> bool:
        campaign = await releases.show(campaign_id)
        return all(g.stage == Stage.FIRMWARE_STAGE_REFUSED for g in campaign.gateways)

    await eventually(all_refused)
    # One live campaign per gateway: a second one waits for this one to end.
    with pytest.raises(AdminError, match="already in a live campaign"):
        await releases.campaign("0.2.0", ["dj-c-2"])
    args = ["campaign", "abort", campaign_id, "--reason", "bad key", *profile]
    assert await asyncio.to_thread(main, args) == 0
    assert await asyncio.to_thread(main, ["campaign", "list", *profile]) == 0
    assert "aborted" in capsys.readouterr().out
    with pytest.raises(AdminError) as caught:
        await AdminClient(city.admin).resume_campaign(
            firmware_pb2.ResumeCampaignRequest(campaign_id=campaign_id),
        )
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot resume a aborted campaign" in caught.value.details

    # Scope: an operator of another commune neither sees nor targets these gateways.
    other = city.operator("chenove-ops", "operator", ["Chenove"])
    with pytest.raises(AdminError) as caught:
        await AdminClient(other).get_campaign(
            firmware_pb2.GetCampaignRequest(campaign_id=campaign_id)
        )
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    with pytest.raises(AdminError) as caught:
        await AdminClient(other).create_campaign(
            firmware_pb2.CreateCampaignRequest(
                version="0.2.0", target=firmware_pb2.CampaignTarget(communes=["Dijon"])
            ),
        )
    assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED


def _next_local(after: datetime, hour: int) -> datetime:
    local = after.astimezone(PARIS)
    target = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if target <= local:
        target = (local + timedelta(days=1)).replace(hour=hour, minute=0, second=0, microsecond=0)
    return target


async def test_a_campaign_waits_for_its_window_and_for_daylight_at_lamp_sites(
    manual_city: tuple[City, ManualClock], cabinets: CabinetFactory
) -> None:
    city, clock = manual_city
    releases = make_releases(city)
    cabinet = await cabinets(city, "dj-w-1", lamps=1)

    async def lamps_reported() -> bool:
        response = await AdminClient(city.admin).list_devices(
            control_pb2.ListDevicesRequest(gateway_id="dj-w-1")
        )
        return bool(response.devices)

    await eventually(lamps_reported)
    await releases.upload(releases.build("0.2.0"))
    runner = city.running.app.campaigns
    assert runner is not None

    clock.set(_next_local(clock.now(), 23))
    campaign_id = await releases.campaign(
        "0.2.0", ["dj-w-1"], window="02:00-16:00", allow_night=False
    )
    campaign = await releases.show(campaign_id)
    assert "outside the maintenance window 02:00-16:00" in " ".join(campaign.reasons)
    assert not campaign.gateways[0].HasField("offered_at")

    clock.set(_next_local(clock.now(), 3))
    await runner.tick()
    campaign = await releases.show(campaign_id)
    assert "lamps are not updated at night" in " ".join(campaign.reasons)
    assert not campaign.gateways[0].HasField("offered_at")
    assert cabinet.agent is not None and cabinet.agent.firmware.task is None

    clock.set(_next_local(clock.now(), 12))
    await runner.tick()
    await releases.reaches(campaign_id, "dj-w-1", Stage.FIRMWARE_STAGE_REBOOTING)
    await eventually(cabinet.restart_requested.is_set)


async def test_agents_that_predate_firmware_offers_keep_working(
    city: City,
    releases: Releases,
    cabinets: CabinetFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(edge.link, "PROTOCOL_REVISION", 1)
    cabinet = await cabinets(city, "dj-old-1", firmware=False)
    await releases.upload(releases.build("0.2.0"))
    campaign_id = await releases.campaign("0.2.0", ["dj-old-1"])

    outcome = await releases.reaches(campaign_id, "dj-old-1", Stage.FIRMWARE_STAGE_REFUSED)
    assert "protocol revision 1 does not take firmware offers" in outcome.detail
    agent = cabinet.agent
    assert agent is not None and agent.firmware.task is None
    assert agent.link.status.connected.is_set() and agent.link.status.sessions == 1
