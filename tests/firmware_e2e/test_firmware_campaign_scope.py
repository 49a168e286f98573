"""Who sees and does what with campaigns: a campaign over two communes shows an operator of
one of them only its own gateways (ids, counts, reasons, history), and every refused write,
whoever tries it, is in the audit log."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest
from google.protobuf import text_format

from ondijon import firmware_cli
from ondijon.client import AdminClient, AdminError
from protos.ondijon.v1 import control_pb2, firmware_pb2, firmware_pb2_grpc
from tests.conftest import City
from tests.firmware_e2e.conftest import CabinetFactory, Releases
from tests.security.conftest import gateway_channel
from tests.waiting import eventually

pytestmark = pytest.mark.integration


async def _refusals(city: City, action: str) -> list[control_pb2.AuditEntry]:
    response = await AdminClient(city.admin).list_audit(
        control_pb2.ListAuditRequest(action=action, result="refused")
    )
    return list(response.entries)


async def test_an_operator_sees_only_its_communes_gateways_in_a_campaign(
    city: City, releases: Releases, cabinets: CabinetFactory
) -> None:
    await cabinets(city, "dj-sc-1")
    await cabinets(city, "bn-sc-1", commune="Beaune")
    # Signed by a key no agent pins: both refuse it, and the halt names them.
    await releases.upload(releases.build("0.2.0", key=releases.stranger))
    campaign_id = await releases.campaign("0.2.0", ["dj-sc-1", "bn-sc-1"])

    async def halted() -> bool:
        shown = await releases.show(campaign_id)
        return shown.status == firmware_pb2.CAMPAIGN_STATUS_HALTED

    await eventually(halted)
    everything = text_format.MessageToString(await releases.show(campaign_id))
    assert "bn-sc-1" in everything and "Beaune" in everything

    dijon = city.operator("dijon-ops", "operator", ["Dijon"])
    response = await AdminClient(dijon).get_campaign(
        firmware_pb2.GetCampaignRequest(campaign_id=campaign_id)
    )
    shown = response.campaign
    text = text_format.MessageToString(shown)
    assert "bn-sc-1" not in text and "Beaune" not in text
    assert shown.target_count == 1
    assert [g.gateway_id for g in shown.gateways] == ["dj-sc-1"]
    assert sum(w.gateways for w in shown.waves) == 1
    assert shown.history[0].endswith("started; waves of 1")
    listed = await AdminClient(dijon).list_campaigns(firmware_pb2.ListCampaignsRequest())
    (summary,) = listed.campaigns
    assert summary.target_count == 1
    assert "bn-sc-1" not in text_format.MessageToString(summary)


async def test_every_refused_campaign_write_is_audited(
    city: City, releases: Releases, cabinets: CabinetFactory
) -> None:
    cabinet = await cabinets(city, "dj-au-1")
    await releases.upload(releases.build("0.2.0", key=releases.stranger))
    campaign_id = await releases.campaign("0.2.0", ["dj-au-1"])
    viewer = city.operator("dijon-viewer", "viewer", ["Dijon"])
    operator = city.operator("dijon-ops", "operator", ["Dijon"])
    other = city.operator("chenove-ops", "operator", ["Chenove"])

    async def refused(call: Awaitable[object], code: grpc.StatusCode) -> None:
        with pytest.raises(AdminError) as caught:
            await call
        assert caught.value.code is code

    DENIED, NOT_FOUND = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND
    create = firmware_pb2.CreateCampaignRequest(
        campaign_id="by-viewer",
        version="0.2.0",
        target=firmware_pb2.CampaignTarget(gateway_ids=["dj-au-1"]),
    )
    await refused(AdminClient(viewer).create_campaign(create), DENIED)
    pause = firmware_pb2.PauseCampaignRequest(campaign_id=campaign_id)
    abort = firmware_pb2.AbortCampaignRequest(campaign_id=campaign_id)
    resume = firmware_pb2.ResumeCampaignRequest(campaign_id=campaign_id)
    await refused(AdminClient(viewer).pause_campaign(pause), DENIED)
    await refused(AdminClient(viewer).abort_campaign(abort), DENIED)
    # Another commune's operator: answered as if there were no such campaign.
    await refused(AdminClient(other).pause_campaign(pause), NOT_FOUND)
    await refused(AdminClient(other).abort_campaign(abort), NOT_FOUND)
    await refused(AdminClient(other).resume_campaign(resume), NOT_FOUND)
    await refused(
        firmware_cli.upload_release(AdminClient(operator), releases.build("0.3.0")), DENIED
    )

    # A gateway's certificate on the operators' service.
    async with gateway_channel(city, cabinet.config) as channel:
        stub = firmware_pb2_grpc.CampaignsStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await stub.CreateCampaign(create)
        assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED

    creates = await _refusals(city, "campaign.create")
    actors = {e.actor.rsplit("/", 1)[-1] for e in creates}
    assert actors == {"dijon-viewer", "dj-au-1"}
    assert all(e.target == "by-viewer" for e in creates)
    by_action = {
        action: [(e.actor.rsplit("/", 1)[-1], e.commune) for e in await _refusals(city, action)]
        for action in ("campaign.pause", "campaign.abort", "campaign.resume")
    }
    assert by_action == {
        "campaign.pause": [("dijon-viewer", ""), ("chenove-ops", "Dijon")],
        "campaign.abort": [("dijon-viewer", ""), ("chenove-ops", "Dijon")],
        "campaign.resume": [("chenove-ops", "Dijon")],
    }
    outside = (await _refusals(city, "campaign.resume"))[0]
    assert outside.detail == f"campaign {campaign_id!r} is outside the caller's communes"
    (upload,) = await _refusals(city, "release.upload")
    assert upload.actor.endswith("/dijon-ops")
    assert upload.detail == "role operator may not do this (needs admin)"
