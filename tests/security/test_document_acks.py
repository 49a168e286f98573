"""A gateway's acknowledgement counts only for the document still issued to it: the one it
was sent on its stream (stored with the group commit) as well as any other (looked up one
by one). GatewayLink over real mutual TLS."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from ondijon.client import AdminClient
from protos.ondijon.v1 import control_pb2, link_pb2
from tests.conftest import City
from tests.edge.test_agent import lighting
from tests.security.conftest import GatewayStream, enrolled, gateway_channel, stream

pytestmark = pytest.mark.integration
SCHEDULE = link_pb2.DOCUMENT_KIND_SCHEDULE


async def held(city: City, gateway_id: str) -> list[int]:
    response = await AdminClient(city.admin).get_gateway(
        control_pb2.GetGatewayRequest(gateway_id=gateway_id)
    )
    return [h.version for h in response.gateway.held]


async def acknowledge(s: GatewayStream, version: int, payload: bytes, sequence: int) -> None:
    """Acknowledge a document, then wait for an event's acknowledgement: the stream's
    messages are handled in order, so the document's was written before."""
    digest = hashlib.sha256(payload).digest()
    ack = link_pb2.DocumentAck(kind=SCHEDULE, version=version, digest=digest, accepted=True)
    s.send(link_pb2.ConnectRequest(document_ack=ack))
    event = link_pb2.Event(sequence=sequence, priority=link_pb2.EVENT_PRIORITY_EVENT, type="x")
    event.at.FromDatetime(datetime.now(UTC))
    s.send(link_pb2.ConnectRequest(events=link_pb2.EventBatch(events=[event])))
    while (await s.recv()).WhichOneof("body") != "event_ack":
        pass


async def test_an_acknowledgement_counts_only_for_the_document_still_issued(city: City) -> None:
    config = await enrolled(city, "dj-ack")
    v1, v2 = lighting(70), lighting(40)
    await AdminClient(city.admin).put_desired_state(
        control_pb2.PutDesiredStateRequest(gateway_id="dj-ack", kind=SCHEDULE, payload=v1)
    )
    async with gateway_channel(city, config) as chan, stream(chan) as s:
        await s.hello()
        while (message := await s.recv()).WhichOneof("body") != "document":
            pass
        assert message.document.version == 1
        # Version 2 issued behind the stream's back (another replica, its notice not yet
        # arrived): the stream was sent version 1 and still believes it current.
        runner = city.running.app.runner
        store = runner.store
        await runner.write(
            lambda conn: store.put_document(
                conn, gateway_id="dj-ack", kind=SCHEDULE, digest=hashlib.sha256(v2).digest(),
                payload=v2, expected_version=1, issued_by="test", now=datetime.now(UTC),
            )
        )  # fmt: skip
        await acknowledge(s, 1, v1, sequence=1)
        assert await held(city, "dj-ack") == []  # version 1 is no longer issued
        await acknowledge(s, 2, v2, sequence=2)  # not sent on this stream: looked up
        assert await held(city, "dj-ack") == [2]
        await acknowledge(s, 1, v1, sequence=3)  # an old version again: nothing changes
        assert await held(city, "dj-ack") == [2]
