"""Gateway A can never report for, read or command gateway B: the identity on the link is
the certificate's, and everything a gateway says is filed under it (GatewayLink over real
mutual TLS)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from ondijon.admin import lamp_override
from ondijon.client import AdminClient
from protos.ondijon.v1 import control_pb2, link_pb2
from tests.conftest import City
from tests.edge.test_agent import lighting
from tests.security.conftest import enrolled, gateway_channel, stream
from tests.waiting import eventually

pytestmark = pytest.mark.integration


async def command_status(city: City, command_id: str) -> int:
    response = await AdminClient(city.admin).get_command(
        control_pb2.GetCommandRequest(command_id=command_id)
    )
    return response.status


async def test_a_gateway_only_hears_and_speaks_for_itself(city: City) -> None:
    a = await enrolled(city, "dj-00a")
    await enrolled(city, "dj-00b")
    payload = lighting(70)
    await AdminClient(city.admin).put_desired_state(
        control_pb2.PutDesiredStateRequest(
            gateway_id="dj-00b", kind=link_pb2.DOCUMENT_KIND_SCHEDULE, payload=payload
        ),
    )
    sent = await AdminClient(city.admin).send_command(
        control_pb2.SendCommandRequest(gateway_id="dj-00b", command=lamp_override(90, 5, 10, [])),
    )
    b_command = sent.command_id

    async with gateway_channel(city, a) as chan, stream(chan) as s:
        welcome = await s.hello()
        assert welcome.gateway_id == "dj-00a"
        # Settle B's command, claim B's document, report an event: all as A.
        s.send(
            link_pb2.ConnectRequest(
                command_result=link_pb2.CommandResult(
                    command_id=b_command, status=link_pb2.COMMAND_STATUS_DONE
                )
            )
        )
        s.send(
            link_pb2.ConnectRequest(
                document_ack=link_pb2.DocumentAck(
                    kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
                    version=1,
                    digest=hashlib.sha256(payload).digest(),
                    accepted=True,
                )
            )
        )
        event = link_pb2.Event(
            sequence=1, priority=link_pb2.EVENT_PRIORITY_EVENT, type="door.opened"
        )
        event.at.FromDatetime(datetime.now(UTC))
        s.send(link_pb2.ConnectRequest(events=link_pb2.EventBatch(events=[event])))
        while (await s.recv()).WhichOneof("body") != "event_ack":
            pass  # nothing of B's ever arrives here: no document, no command
        # Its stream carried nothing of B's.
        assert city.running.app.hub.session("dj-00a") is not None

    assert await command_status(city, b_command) == link_pb2.COMMAND_STATUS_PENDING
    b = await AdminClient(city.admin).get_gateway(
        control_pb2.GetGatewayRequest(gateway_id="dj-00b")
    )
    assert not b.gateway.held and b.gateway.stored_sequence == 0
    events = await AdminClient(city.admin).list_events(control_pb2.ListEventsRequest())
    assert [(e.gateway_id, e.event.type) for e in events.events] == [("dj-00a", "door.opened")]


async def test_a_gateway_receives_only_its_own_documents_and_commands(city: City) -> None:
    a = await enrolled(city, "dj-00a")
    await enrolled(city, "dj-00b")
    async with gateway_channel(city, a) as chan, stream(chan) as s:
        await s.hello()
        await AdminClient(city.admin).put_desired_state(
            control_pb2.PutDesiredStateRequest(
                gateway_id="dj-00b", kind=link_pb2.DOCUMENT_KIND_SCHEDULE, payload=lighting(5)
            ),
        )
        await AdminClient(city.admin).send_command(
            control_pb2.SendCommandRequest(
                gateway_id="dj-00b", command=lamp_override(1, 5, 10, [])
            ),
        )
        mine = await AdminClient(city.admin).send_command(
            control_pb2.SendCommandRequest(
                gateway_id="dj-00a", command=lamp_override(2, 5, 10, [])
            ),
        )
        first = await s.recv()
        # The first thing A hears after B's document and command is its own command.
        assert first.WhichOneof("body") == "command"
        assert first.command.command_id == mine.command_id
    await eventually(lambda: not city.running.app.hub.connected("dj-00a"))
