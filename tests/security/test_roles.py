"""Roles and communes on every admin call, over real mutual TLS: a viewer cannot write, an
operator of one commune cannot see or switch another's equipment, admins manage identities;
stale versions and replayed or expired commands are refused, refusals change nothing and
are audited (orchestrator/access/gate.py, control.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from ondijon.admin import lamp_override
from ondijon.client import AdminClient, AdminError
from orchestrator.access.gate import SCOPE_RECHECK_S
from protos.ondijon.v1 import control_pb2, control_pb2_grpc, link_pb2
from provisioning.profile import Profile
from tests.conftest import City
from tests.edge.test_agent import lighting
from tests.security.conftest import audit_rows, enrolled, gateway_channel, snapshot, stream
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def rpc(profile: Profile, request: Message) -> Awaitable[Message]:
    """The admin call that takes ``request``."""
    client = AdminClient(profile)
    methods: dict[type[Message], Callable[[Any], Awaitable[Message]]] = {
        control_pb2.AddGatewayRequest: client.add_gateway,
        control_pb2.GetGatewayRequest: client.get_gateway,
        control_pb2.ListDevicesRequest: client.list_devices,
        control_pb2.ListEventsRequest: client.list_events,
        control_pb2.PutDesiredStateRequest: client.put_desired_state,
        control_pb2.SendCommandRequest: client.send_command,
        control_pb2.RevokeGatewayRequest: client.revoke_gateway,
        control_pb2.IssueEnrollmentTokenRequest: client.issue_enrollment_token,
        control_pb2.ListAuditRequest: client.list_audit,
    }
    return methods[type(request)](request)


async def code_of(profile: Profile, method: str, request: Message) -> grpc.StatusCode:
    try:
        await rpc(profile, request)
    except AdminError as exc:
        assert exc.code is not None, method
        return exc.code
    return grpc.StatusCode.OK


def schedule(gateway_id: str) -> control_pb2.PutDesiredStateRequest:
    return control_pb2.PutDesiredStateRequest(
        gateway_id=gateway_id, kind=link_pb2.DOCUMENT_KIND_SCHEDULE, payload=lighting(30)
    )


def override(gateway_id: str) -> control_pb2.SendCommandRequest:
    return control_pb2.SendCommandRequest(
        gateway_id=gateway_id, command=lamp_override(100, 30, 10, [])
    )


WRITES = {
    "PutDesiredState": schedule,
    "SendCommand": override,
    "RevokeGateway": lambda g: control_pb2.RevokeGatewayRequest(gateway_id=g),
    "IssueEnrollmentToken": lambda g: control_pb2.IssueEnrollmentTokenRequest(gateway_id=g),
}


async def test_a_viewer_reads_but_cannot_write(city: City) -> None:
    await city.register("dj-001", "Dijon")
    viewer = city.operator("vera", "viewer", ["Dijon"])
    assert (
        await code_of(viewer, "GetGateway", control_pb2.GetGatewayRequest(gateway_id="dj-001"))
        is grpc.StatusCode.OK
    )
    before = snapshot(city.running.app)
    for method, request in WRITES.items():
        assert (
            await code_of(viewer, method, request("dj-001")) is grpc.StatusCode.PERMISSION_DENIED
        ), method
    add = control_pb2.AddGatewayRequest(
        gateway_id="dj-009", serial="S", commune="Dijon", time_zone="UTC"
    )
    assert await code_of(viewer, "AddGateway", add) is grpc.StatusCode.PERMISSION_DENIED
    assert snapshot(city.running.app) == before
    refused = [r for r in audit_rows(city.running.app) if r["actor"].endswith("/vera")]
    assert {r["action"] for r in refused} == {
        "desired_state.put",
        "command.send",
        "gateway.revoke",
        "gateway.token",
        "gateway.add",
    }
    assert all(r["result"] == "refused" and "needs" in r["detail"] for r in refused)


async def test_an_operator_of_one_commune_cannot_touch_anothers_lamps(city: City) -> None:
    await city.register("dj-001", "Dijon")
    await city.register("ta-001", "Talant")
    talant = city.operator("theo", "operator", ["Talant"])
    before = snapshot(city.running.app)
    # Dijon's gateway is answered as if it did not exist.
    for method, request in (
        ("PutDesiredState", schedule("dj-001")),
        ("SendCommand", override("dj-001")),
        ("GetGateway", control_pb2.GetGatewayRequest(gateway_id="dj-001")),
        ("ListDevices", control_pb2.ListDevicesRequest(gateway_id="dj-001")),
        ("ListEvents", control_pb2.ListEventsRequest(gateway_id="dj-001")),
    ):
        assert await code_of(talant, method, request) is grpc.StatusCode.NOT_FOUND, method
        missing = request.__class__()
        missing.CopyFrom(request)
        missing.gateway_id = "nowhere"  # type: ignore[attr-defined]
        with pytest.raises(AdminError) as same:
            await rpc(talant, missing)
        assert same.value.code is grpc.StatusCode.NOT_FOUND, method
        assert same.value.field == "gateway_id" and "no gateway" in same.value.reason
    assert snapshot(city.running.app) == before
    listed = await AdminClient(talant).list_gateways(control_pb2.ListGatewaysRequest())
    assert [g.gateway_id for g in listed.gateways] == ["ta-001"]
    # In its own commune it acts.
    assert await code_of(talant, "SendCommand", override("ta-001")) is grpc.StatusCode.OK
    # The attempts are audited where they happened, for Dijon's admins to see.
    refused = [
        r
        for r in audit_rows(city.running.app)
        if r["result"] == "refused" and r["target"].startswith("dj-001")
    ]
    assert {(r["action"], r["commune"]) for r in refused} == {
        ("desired_state.put", "Dijon"),
        ("command.send", "Dijon"),
    }
    assert all("outside the caller's communes" in r["detail"] for r in refused)


async def test_only_admins_manage_gateways_and_only_in_their_communes(city: City) -> None:
    await city.register("dj-001", "Dijon")
    operator = city.operator("olga", "operator", ["Dijon"])
    talant_admin = city.operator("tara", "admin", ["Talant"])
    add = control_pb2.AddGatewayRequest(
        gateway_id="dj-002", serial="S-2", commune="Dijon", time_zone="Europe/Paris"
    )
    assert await code_of(operator, "AddGateway", add) is grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(talant_admin, "AddGateway", add) is grpc.StatusCode.PERMISSION_DENIED
    revoke = control_pb2.RevokeGatewayRequest(gateway_id="dj-001")
    assert await code_of(operator, "RevokeGateway", revoke) is grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(talant_admin, "RevokeGateway", revoke) is grpc.StatusCode.NOT_FOUND
    assert (
        await code_of(operator, "ListAudit", control_pb2.ListAuditRequest())
        is grpc.StatusCode.PERMISSION_DENIED
    )


async def test_a_role_change_applies_to_the_next_call(city: City) -> None:
    await city.register("dj-001", "Dijon")
    olga = city.operator("olga", "operator", ["Dijon"])
    assert await code_of(olga, "SendCommand", override("dj-001")) is grpc.StatusCode.OK
    store = city.running.app.runner.store
    with store.engine.begin() as conn:
        store.put_operator(
            conn, name="olga", role="viewer", communes=["Dijon"], now=datetime.now(UTC)
        )
    assert (
        await code_of(olga, "SendCommand", override("dj-001")) is grpc.StatusCode.PERMISSION_DENIED
    )


async def test_stale_versions_and_replayed_or_expired_commands_are_refused(city: City) -> None:
    await city.register("dj-001", "Dijon")
    first = await AdminClient(city.admin).put_desired_state(schedule("dj-001"))
    newer = schedule("dj-001")
    newer.payload = lighting(60)
    newer.expected_version = first.document.version
    await AdminClient(city.admin).put_desired_state(newer)
    before = snapshot(city.running.app)

    # An edit of version 1 when version 2 is current: refused, the operator must re-read.
    stale = schedule("dj-001")
    stale.payload = lighting(10)
    stale.expected_version = first.document.version
    with pytest.raises(AdminError) as caught:
        await AdminClient(city.admin).put_desired_state(stale)
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.field == "expected_version"

    command = override("dj-001")
    command.command.command_id = uuid.uuid4().hex
    await AdminClient(city.admin).send_command(command)
    before = snapshot(city.running.app)
    with pytest.raises(AdminError) as caught:
        await AdminClient(city.admin).send_command(command)
    assert caught.value.code is grpc.StatusCode.ALREADY_EXISTS
    assert caught.value.field == "command_id"
    expired = override("dj-001")
    expired.command.expires_at.FromDatetime(datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(AdminError) as caught:
        await AdminClient(city.admin).send_command(expired)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field == "command.expires_at"
    assert caught.value.reason.startswith("already past")
    assert snapshot(city.running.app) == before


NEW_GATEWAY_CASES = [
    ("gateway_id", "../../etc/passwd", "gateway_id"),
    ("serial", "", "serial"),
    ("serial", "x" * 200, "serial"),
    ("commune", "*", "commune"),
    ("latitude", 91.0, "latitude"),
    ("longitude", -181.0, "longitude"),
    ("time_zone", "Mars/Olympus", "time_zone"),
    ("token_ttl_s", 40 * 86400, "token_ttl_s"),
]


async def test_every_field_of_a_new_gateway_is_checked(city: City) -> None:
    before = snapshot(city.running.app)
    for field, value, named in NEW_GATEWAY_CASES:
        request = control_pb2.AddGatewayRequest(
            gateway_id="dj-001", serial="SN-1", commune="Dijon", time_zone="Europe/Paris"
        )
        setattr(request, field, value)
        with pytest.raises(AdminError) as caught:
            await AdminClient(city.admin).add_gateway(request)
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT, caught.value
        assert caught.value.field == named, caught.value
    assert snapshot(city.running.app) == before


def _later(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


COMMAND_CASES: list[tuple[Callable[[link_pb2.Command], object], str]] = [
    (lambda c: setattr(c, "command_id", "x" * 65), "command.command_id"),
    (lambda c: c.ClearField("expires_at"), "command.expires_at"),
    (lambda c: c.expires_at.FromDatetime(_later(8)), "command.expires_at"),
    (lambda c: c.ClearField("override"), "command.action"),
    (lambda c: c.override.ClearField("expiry"), "command.override"),
    (lambda c: c.bollard.SetInParent(), "command.bollard.device_id"),
    (lambda c: setattr(c, "cancel_override", ""), "command.cancel_override"),
]


async def test_every_field_of_a_command_is_checked(city: City) -> None:
    await city.register("dj-001", "Dijon")
    before = snapshot(city.running.app)
    for mutate, named in COMMAND_CASES:
        request = override("dj-001")
        mutate(request.command)
        with pytest.raises(AdminError) as caught:
            await AdminClient(city.admin).send_command(request)
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT, caught.value
        assert caught.value.field.startswith(named), caught.value
    assert snapshot(city.running.app) == before


async def test_a_command_of_another_commune_is_answered_like_a_missing_one(city: City) -> None:
    await city.register("dj-001", "Dijon")
    await city.register("gw-y", "Talant")
    sent = await AdminClient(city.admin).send_command(override("gw-y"))
    olga = city.operator("olga", "operator", ["Dijon"])
    answers = set()
    for command_id in (sent.command_id, uuid.uuid4().hex):
        with pytest.raises(AdminError) as caught:
            await AdminClient(olga).get_command(
                control_pb2.GetCommandRequest(command_id=command_id)
            )
        answers.add((caught.value.code, caught.value.details))
    assert answers == {(grpc.StatusCode.NOT_FOUND, "command_id: no such command")}
    # In scope, the command is there.
    found = await AdminClient(city.admin).get_command(
        control_pb2.GetCommandRequest(command_id=sent.command_id)
    )
    assert isinstance(found, control_pb2.GetCommandResponse) and found.gateway_id == "gw-y"


async def test_an_event_feed_stops_showing_a_commune_that_left_the_scope(city: City) -> None:
    dijon = await enrolled(city, "dj-001", "Dijon")
    talant = await enrolled(city, "ta-001", "Talant")
    watcher = city.operator("watcher", "viewer", ["Dijon", "Talant"])
    store = city.running.app.runner.store

    def event(sequence: int) -> link_pb2.ConnectRequest:
        return link_pb2.ConnectRequest(
            events=link_pb2.EventBatch(
                events=[
                    link_pb2.Event(
                        sequence=sequence,
                        priority=link_pb2.EVENT_PRIORITY_ALARM,
                        type="lamp.failed",
                        at=Timestamp(seconds=int(time.time())),
                    )
                ]
            )
        )

    async with (
        watcher.channel() as chan,
        gateway_channel(city, dijon) as dj_chan,
        gateway_channel(city, talant) as ta_chan,
        stream(dj_chan) as dj,
        stream(ta_chan) as ta,
    ):
        await dj.hello()
        await ta.hello()
        feed = control_pb2_grpc.ControlCentreStub(chan).WatchEvents(
            control_pb2.WatchEventsRequest()
        )
        received = aiter(feed)
        await eventually(lambda: len(city.running.app.hub._watchers) == 1)
        ta.send(event(1))
        assert (await asyncio.wait_for(anext(received), 5)).event.gateway_id == "ta-001"
        with store.engine.begin() as conn:
            store.put_operator(
                conn, name="watcher", role="viewer", communes=["Dijon"], now=datetime.now(UTC)
            )
        await asyncio.sleep(SCOPE_RECHECK_S * 1.5)
        ta.send(event(2))
        await asyncio.sleep(0.3)
        dj.send(event(1))
        nxt = await asyncio.wait_for(anext(received), 5)
        assert (nxt.event.gateway_id, nxt.event.event.sequence) == ("dj-001", 1)
        feed.cancel()
