"""The orchestrator's side of "nothing lost": a gateway speaking on a raw GatewayLink stream
(its own enrolled certificate, no agent) replays and duplicates event batches and skips
sequences; what is stored, acknowledged and shown to operators is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from edge.config import AgentConfig
from edge.identity import channel_options, load_credentials
from protos.ondijon.v1 import control_pb2, control_pb2_grpc, link_pb2, link_pb2_grpc
from tests.conftest import City
from tests.nothing_lost.harness import gateway, stored_events

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def event(sequence: int, message: str = "", priority: int = 3) -> link_pb2.Event:
    e = link_pb2.Event(
        sequence=sequence,
        priority=priority,  # type: ignore[arg-type]
        device_id=f"lamp-{sequence % 7:03d}",
        type="energy_interval",
        message=message,
        attributes={"wh": f"{sequence}.5"},
    )
    e.at.FromDatetime(T0 + timedelta(minutes=15 * sequence))
    return e


class RawStream:
    """One GatewayLink stream: send requests, read the responses one by one."""

    def __init__(
        self, call: grpc.aio.StreamStreamCall[link_pb2.ConnectRequest, link_pb2.ConnectResponse]
    ) -> None:
        self.call = call

    async def send_batch(self, events: list[link_pb2.Event]) -> link_pb2.EventAck:
        await self.call.write(link_pb2.ConnectRequest(events=link_pb2.EventBatch(events=events)))
        return await self.next_ack()

    async def next_ack(self) -> link_pb2.EventAck:
        while True:
            response = await asyncio.wait_for(self.call.read(), 10)
            assert response is not grpc.aio.EOF, "the orchestrator closed the stream"
            if response.WhichOneof("body") == "event_ack":
                return response.event_ack


@contextlib.asynccontextmanager
async def raw_stream(
    config: AgentConfig, held_after: int | None = None
) -> AsyncIterator[tuple[RawStream, link_pb2.Welcome]]:
    credentials = load_credentials(config)
    async with grpc.aio.secure_channel(
        config.address, credentials.channel_credentials(), options=channel_options(config)
    ) as channel:
        call = link_pb2_grpc.GatewayLinkStub(channel).Connect()
        await call.write(
            link_pb2.ConnectRequest(
                hello=link_pb2.Hello(
                    firmware_version="raw",
                    protocol_revision=1,
                    held_after=held_after or 0,
                    list_held_after=held_after is not None,
                )
            )
        )
        first = await asyncio.wait_for(call.read(), 10)
        assert first is not grpc.aio.EOF and first.WhichOneof("body") == "welcome"
        try:
            yield RawStream(call), first.welcome
        finally:
            call.cancel()


def ranges(ack: link_pb2.EventAck) -> list[tuple[int, int]]:
    return [(r.first, r.last) for r in ack.stored]


async def test_a_replayed_or_duplicated_batch_changes_nothing_and_is_acknowledged(
    city: City,
) -> None:
    config = await city.enrolled("nl-raw")
    watched: list[int] = []

    async def watch() -> None:
        async with city.admin.channel() as channel:
            stub = control_pb2_grpc.ControlCentreStub(channel)
            async for item in stub.WatchEvents(control_pb2.WatchEventsRequest(gateway_id="nl-raw")):
                watched.append(item.event.event.sequence)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.3)  # the watch is registered before anything is sent
    try:
        async with raw_stream(config) as (stream, welcome):
            assert welcome.stored_sequence == 0
            assert ranges(await stream.send_batch([event(s) for s in range(1, 6)])) == [(1, 5)]
            before = await stored_events(city, "nl-raw")
            # The same batch again, and a replay whose content differs (a bug, a forgery):
            # acknowledged, since those sequences are stored, and nothing changes.
            assert ranges(await stream.send_batch([event(s) for s in range(1, 6)])) == [(1, 5)]
            forged = [event(s, message="replayed") for s in (2, 3)]
            ack = await stream.send_batch(forged)
            assert ranges(ack) == [(2, 3)]
            # ... but never silently: the ack says those sequences hold other events.
            assert [(r.first, r.last) for r in ack.conflicting] == [(2, 3)]
            assert not (await stream.send_batch([event(s) for s in range(1, 6)])).conflicting
            assert await stored_events(city, "nl-raw") == before
        # A new stream (a reconnection) replays what it never saw acknowledged.
        async with raw_stream(config, held_after=3) as (stream, welcome):
            assert welcome.stored_sequence == 5
            # Asked, it says what it holds above a sequence (for an agent that lost some).
            assert welcome.held_after_listed
            assert [(r.first, r.last) for r in welcome.held_after] == [(4, 5)]
            assert ranges(await stream.send_batch([event(4), event(5), event(6)])) == [(4, 6)]
        await asyncio.sleep(0.3)  # the live feed has had time to deliver
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await watcher

    stored = await stored_events(city, "nl-raw")
    assert [e.event.sequence for e in stored] == [1, 2, 3, 4, 5, 6]
    assert all(e.event.message == "" for e in stored)
    assert stored[:5] == before
    # Operators watching live saw each event once, not once per replay.
    assert watched == [1, 2, 3, 4, 5, 6]


async def test_a_gap_in_sequences_is_visible_to_operators(city: City) -> None:
    config = await city.enrolled("nl-gap")
    async with raw_stream(config) as (stream, _):
        # An alarm overtakes the metering backlog: a gap that closes once it is sent.
        await stream.send_batch([event(9, priority=1)])
        assert [(r.first, r.last) for r in (await gateway(city, "nl-gap")).missing] == [(1, 8)]
        await stream.send_batch([event(s) for s in (1, 2, 3, 6, 8)])
        g = await gateway(city, "nl-gap")
        assert g.stored_sequence == 9
        assert [(r.first, r.last) for r in g.missing] == [(4, 5), (7, 7)]
        await stream.send_batch([event(s) for s in (4, 5, 7)])
    g = await gateway(city, "nl-gap")
    assert g.stored_sequence == 9 and not g.missing


def gap(sequence: int, listed: str) -> link_pb2.Event:
    e = link_pb2.Event(
        sequence=sequence,
        priority=link_pb2.EVENT_PRIORITY_ALARM,
        device_id="outbox",
        type="outbox.gap",
        message="outbox full",
        attributes={"sequences": listed},
    )
    e.at.FromDatetime(T0)
    return e


async def test_the_welcome_says_what_stored_gap_events_list_as_lost(city: City) -> None:
    """An agent whose outbox was damaged asks which of its numbers the orchestrator holds;
    those its delivered gap events listed as lost are accounted for too, and the answer
    says so (else its loss alarm lists them a second time)."""
    config = await city.enrolled("nl-listed")
    async with raw_stream(config) as (stream, _):
        await stream.send_batch([event(s) for s in (1, 2, 6, 7, 12)])
        await stream.send_batch([gap(8, "3-5"), gap(13, "9-11,14")])  # 14: not yet stored
        await stream.send_batch([gap(15, "not a list")])  # unreadable: counts for nothing
    async with raw_stream(config, held_after=4) as (_, welcome):
        assert [(r.first, r.last) for r in welcome.held_after] == [(6, 8), (12, 13), (15, 15)]
        assert [(r.first, r.last) for r in welcome.listed_lost_after] == [(5, 5), (9, 11), (14, 14)]
    async with raw_stream(config, held_after=None) as (_, welcome):
        assert not welcome.listed_lost_after  # not asked, not answered


def metering(sequence: int, first_sequence: int = 0, wh: float = 40.0) -> link_pb2.Event:
    """A lamp's quarter of an hour of metering (the energy report counts it); a copy when
    ``first_sequence`` is given."""
    e = event(sequence)
    start = T0 + timedelta(minutes=15 * (first_sequence or sequence))
    e.at.FromDatetime(start + timedelta(minutes=15))
    e.attributes.clear()
    e.attributes.update(
        {
            "interval_start": start.isoformat(),
            "interval_end": (start + timedelta(minutes=15)).isoformat(),
            "wh": str(wh),
            "on_seconds": "900",
            "covered_seconds": "900",
        }
    )
    e.device_id = "lamp-001"
    e.first_sequence = first_sequence
    return e


async def test_an_event_sent_again_as_a_copy_is_kept_as_a_copy_and_counted_once(
    city: City,
) -> None:
    """An agent whose storage went back records again, under new numbers, events whose
    numbers a gap event listed lost (each copy says the number it was first recorded
    under). A later image can bring back an event whose copy was already delivered: sent
    again (as a new copy, or under its first number), it is kept under its sequence,
    marked a copy of the stored one, and is not news: no second feed item, no energy
    counted twice. Another event that had the same first number is stored as an event."""
    config = await city.enrolled("nl-copy")
    watched: list[int] = []

    async def watch() -> None:
        async with city.admin.channel() as channel:
            stub = control_pb2_grpc.ControlCentreStub(channel)
            async for item in stub.WatchEvents(
                control_pb2.WatchEventsRequest(gateway_id="nl-copy")
            ):
                watched.append(item.event.event.sequence)

    async def watt_hours() -> float:
        async with city.admin.channel() as channel:
            report = await control_pb2_grpc.OperationsStub(channel).EnergyReport(
                control_pb2.EnergyReportRequest(
                    since="2026-01-05", by="gateway", gateway_id="nl-copy"
                )
            )
        return report.total.kwh * 1000

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.3)  # the watch is registered before anything is sent
    try:
        async with raw_stream(config) as (stream, _):
            # The lost life: 1-3 delivered, the event first numbered 4 delivered as a copy
            # under 5 (4 was listed lost by the gap event 6).
            await stream.send_batch([metering(s) for s in (1, 2, 3)])
            await stream.send_batch([metering(5, first_sequence=4), gap(6, "4")])
            assert await watt_hours() == pytest.approx(4 * 40.0)
            # An image put back holds that event under 4: a copy again, under 7 ...
            ack = await stream.send_batch([metering(7, first_sequence=4)])
            assert ranges(ack) == [(7, 7)] and not ack.conflicting
            # ... or sent under its first number by a run that did not know 4 was listed.
            assert ranges(await stream.send_batch([metering(4)])) == [(4, 4)]
            # Another event numbered 4 too (numbers given twice), copied under 8: an event.
            await stream.send_batch([metering(8, first_sequence=4, wh=25.0)])
            # A copy sent again after a cut is a replay, as any event.
            assert ranges(await stream.send_batch([metering(7, first_sequence=4)])) == [(7, 7)]
        await asyncio.sleep(0.3)  # the live feed has had time to deliver
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await watcher

    stored = {e.event.sequence: e for e in await stored_events(city, "nl-copy")}
    assert sorted(stored) == list(range(1, 9))  # every sequence accounted for
    assert {s: e.copy_of for s, e in stored.items() if e.copy_of} == {7: 5, 4: 5}
    assert watched == [1, 2, 3, 5, 6, 8]
    assert await watt_hours() == pytest.approx(4 * 40.0 + 25.0)
    g = await gateway(city, "nl-copy")
    assert g.stored_sequence == 8 and not g.missing
