"""A campaign on the balena backend, through the admin API, against the local fake of the
balena API v7 (tests/orchestrator/test_balena_backend.py): each wave's devices are pinned to
the release, and their status reported by balena decides the next wave."""

from __future__ import annotations

import pytest

from ondijon.client import AdminClient, AdminError
from orchestrator.firmware.runner import balena_from_environment
from protos.ondijon.v1 import firmware_pb2
from tests.conftest import City
from tests.orchestrator import test_balena_backend as fake
from tests.orchestrator.test_balena_backend import COMMIT, KEY, UUIDS, FakeBalena

pytestmark = pytest.mark.integration

balena_api = fake.balena_api  # the loopback fake of the balena API, as a fixture here too


async def test_a_balena_campaign_pins_waves_and_follows_device_status(
    city: City, balena_api: tuple[FakeBalena, str]
) -> None:
    fake, url = balena_api
    runner = city.running.app.campaigns
    assert runner is not None
    # What the orchestrator reads at start-up when balena is configured.
    runner.balena = balena_from_environment(
        {"ONDIJON_BALENA_API_KEY": KEY, "ONDIJON_BALENA_API_URL": url}
    )
    gateways = ["dj-b-1", "dj-b-2", "dj-b-3"]
    for gateway_id in gateways:
        await city.register(gateway_id)
    request = firmware_pb2.CreateCampaignRequest(
        version="2.0.0",
        target=firmware_pb2.CampaignTarget(communes=["Dijon"]),
        waves=[firmware_pb2.CampaignWave(percent=33), firmware_pb2.CampaignWave(percent=100)],
        allow_night=True,
        backend=firmware_pb2.CAMPAIGN_BACKEND_BALENA,
        balena_release=COMMIT,
        balena_devices=dict(zip(gateways, UUIDS, strict=True)),
    )
    response = await AdminClient(city.admin).create_campaign(request)
    campaign = response.campaign
    (canary,) = [g.gateway_id for g in campaign.gateways if g.wave == 1]
    device = fake.devices[UUIDS[gateways.index(canary)]]
    assert device["is_pinned_on__release"] == {"__id": 11}
    assert sum(d["is_pinned_on__release"] is not None for d in fake.devices.values()) == 1

    device.update(is_running__release={"__id": 11})
    await runner.tick()  # the canary runs the release: the second wave is pinned
    assert all(d["is_pinned_on__release"] == {"__id": 11} for d in fake.devices.values())
    for d in fake.devices.values():
        d.update(is_running__release={"__id": 11})
    await runner.tick()
    shown = await AdminClient(city.admin).get_campaign(
        firmware_pb2.GetCampaignRequest(campaign_id=campaign.campaign_id)
    )
    assert shown.campaign.status == firmware_pb2.CAMPAIGN_STATUS_COMPLETED
    assert {g.stage for g in shown.campaign.gateways} == {firmware_pb2.FIRMWARE_STAGE_COMMITTED}
    assert all("running release 11" in g.detail for g in shown.campaign.gateways)


async def test_a_balena_campaign_needs_a_device_for_every_gateway_and_a_good_release(
    city: City, balena_api: tuple[FakeBalena, str]
) -> None:
    _, url = balena_api
    runner = city.running.app.campaigns
    assert runner is not None
    runner.balena = balena_from_environment(
        {"ONDIJON_BALENA_API_KEY": KEY, "ONDIJON_BALENA_API_URL": url}
    )
    await city.register("dj-b-9")
    request = firmware_pb2.CreateCampaignRequest(
        version="2.0.0",
        target=firmware_pb2.CampaignTarget(gateway_ids=["dj-b-9"]),
        backend=firmware_pb2.CAMPAIGN_BACKEND_BALENA,
        balena_release=COMMIT,
    )
    with pytest.raises(AdminError, match=r"balena_devices\.dj-b-9: no balena device"):
        await AdminClient(city.admin).create_campaign(request)
    request.balena_devices["dj-b-9"] = UUIDS[0]
    request.balena_release = "d" * 32  # a failed build
    with pytest.raises(AdminError, match=r"balena_release: .* is failed, not success"):
        await AdminClient(city.admin).create_campaign(request)
    # Nothing was created by the refusals.
    listed = await AdminClient(city.admin).list_campaigns(firmware_pb2.ListCampaignsRequest())
    assert not listed.campaigns
