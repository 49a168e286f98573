"""The console's live feed over real HTTPS (no browser): device states pushed from what the
ingest stores, within the operator's communes, at opening and while the feed is open.

Gateways send their state reports over real GatewayLink streams (mutual TLS, driven by
hand so that each report is known); consoles read ``/live`` as a browser's EventSource
would.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from orchestrator.access.gate import SCOPE_RECHECK_S
from protos.ondijon.v1 import link_pb2, schedule_pb2, state_pb2
from tests.console.conftest import ConsoleCity
from tests.security.conftest import GatewayStream, enrolled, gateway_channel, stream
from tests.waiting import eventually

pytestmark = pytest.mark.integration


@dataclass
class Feed:
    """A ``/live`` feed read as the page's EventSource reads it."""

    raw: bytearray = field(default_factory=bytearray)
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)

    def states(self, gateway_id: str) -> list[dict[str, list[str]]]:
        return [
            data["gateways"][gateway_id]
            for kind, data in self.messages
            if kind == "states" and gateway_id in data["gateways"]
        ]

    def shows(self, gateway_id: str, device_id: str, text: str) -> bool:
        return any(d.get(device_id, [""])[0] == text for d in self.states(gateway_id))


@contextlib.asynccontextmanager
async def live(client: aiohttp.ClientSession, url: str) -> AsyncIterator[Feed]:
    feed = Feed()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with client.get(url, timeout=timeout) as answer:
        assert answer.status == 200, await answer.text()
        assert answer.headers["Content-Type"].startswith("text/event-stream")

        async def read() -> None:
            kind = ""
            async for line in answer.content:
                feed.raw += line
                text = line.decode().rstrip("\n")
                if text.startswith("event: "):
                    kind = text.removeprefix("event: ")
                elif text.startswith("data: "):
                    feed.messages.append((kind, json.loads(text.removeprefix("data: "))))
                    feed.arrived.append(time.monotonic())

        reader = asyncio.create_task(read())
        try:
            yield feed
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await reader


class Cabinet:
    """A gateway's GatewayLink stream: state reports of its lamps, each acknowledged."""

    def __init__(self, link: GatewayStream) -> None:
        self.link = link
        self.batch = 0

    async def lamps(self, **levels: int) -> None:
        """Report lamps (``lamp_001=40``: lamp-001 at 40 %) and wait for the ack."""
        self.batch += 1
        now = Timestamp()
        now.FromDatetime(datetime.now(UTC))
        devices = [
            state_pb2.DeviceState(
                device_id=name.replace("_", "-"),
                kind=schedule_pb2.DEVICE_KIND_LAMP,
                observed_at=now,
                lamp=state_pb2.LampState(level=level, lit=level > 0),
            )
            for name, level in levels.items()
        ]
        self.link.send(
            link_pb2.ConnectRequest(
                state=link_pb2.StateReport(batch_id=self.batch, devices=devices)
            )
        )
        while True:
            answer = await self.link.recv()
            if answer.WhichOneof("body") == "state_ack" and answer.state_ack.batch_id == self.batch:
                return

    async def alarm(self, sequence: int) -> None:
        at = Timestamp()
        at.FromDatetime(datetime.now(UTC))
        self.link.send(
            link_pb2.ConnectRequest(
                events=link_pb2.EventBatch(
                    events=[
                        link_pb2.Event(
                            sequence=sequence,
                            priority=link_pb2.EVENT_PRIORITY_ALARM,
                            device_id="lamp-001",
                            type="lamp.failed",
                            at=at,
                        )
                    ]
                )
            )
        )


@contextlib.asynccontextmanager
async def cabinets(console: ConsoleCity, **communes: str) -> AsyncIterator[dict[str, Cabinet]]:
    """Gateways (``dj_001="Dijon"``), enrolled, each streaming, with lamp-001 at 100 %."""
    async with contextlib.AsyncExitStack() as stack:
        found = {}
        for name, commune in communes.items():
            gateway_id = name.replace("_", "-")
            config = await enrolled(console.city, gateway_id, commune)
            channel = await stack.enter_async_context(gateway_channel(console.city, config))
            link = await stack.enter_async_context(stream(channel))
            await link.hello()
            found[gateway_id] = Cabinet(link)
            await found[gateway_id].lamps(lamp_001=100)
        yield found


async def test_an_operator_of_one_commune_never_receives_another_communes_states(
    console: ConsoleCity,
) -> None:
    console.account("dijon-desk", "operator", ["Dijon"])
    console.account("metropole", "operator", ["*"])
    async with cabinets(console, dj_001="Dijon", ch_001="Chenôve") as gw:
        ours, _ = await console.signed_in("dijon-desk")
        theirs, _ = await console.signed_in("metropole")
        async with ours, theirs:
            # Asking for another commune's cabinet refuses the whole feed, as its page would.
            for query in ("gateways=dj-001,ch-001", "gateways=ch-001", "gateway=ch-001"):
                async with ours.get(f"{console.url}/live?{query}") as refused:
                    assert refused.status == 404
                    assert b"lamp-001" not in await refused.read()
            async with (
                live(ours, f"{console.url}/live?gateways=dj-001") as desk,
                live(ours, f"{console.url}/live") as city_events,
                live(theirs, f"{console.url}/live?gateways=dj-001,ch-001") as all_of_it,
            ):
                await eventually(lambda: desk.shows("dj-001", "lamp-001", "100 % lit"))
                for level in (10, 20, 30):
                    await gw["ch-001"].lamps(lamp_001=level)
                await gw["ch-001"].alarm(1)
                await gw["dj-001"].lamps(lamp_001=40)
                # The operator allowed both sees both, so they were on the push...
                await eventually(lambda: all_of_it.shows("ch-001", "lamp-001", "30 % lit"))
                await eventually(lambda: all_of_it.shows("dj-001", "lamp-001", "40 % lit"))
                await eventually(
                    lambda: any(
                        k == "event" and d["gateway"] == "ch-001" for k, d in all_of_it.messages
                    )
                )
                # ...and Dijon's desk saw its own change, nothing of Chenôve's.
                await eventually(lambda: desk.shows("dj-001", "lamp-001", "40 % lit"))
                await asyncio.sleep(0.5)
                for feed in (desk, city_events):
                    assert b"ch-001" not in feed.raw


async def test_a_commune_leaving_the_scope_stops_its_states_and_coming_back_sends_them_whole(
    console: ConsoleCity,
) -> None:
    console.account("both", "operator", ["Dijon", "Chenôve"])
    store = console.city.running.app.runner.store
    async with cabinets(console, dj_001="Dijon", ch_001="Chenôve") as gw:
        client, _ = await console.signed_in("both")
        async with client, live(client, f"{console.url}/live?gateways=dj-001,ch-001") as feed:
            await eventually(lambda: feed.shows("ch-001", "lamp-001", "100 % lit"))
            with store.engine.begin() as conn:
                store.put_operator(
                    conn, name="both", role="operator", communes=["Dijon"], now=datetime.now(UTC)
                )
            await asyncio.sleep(SCOPE_RECHECK_S * 1.5)
            narrowed = len(feed.messages)
            await gw["ch-001"].lamps(lamp_001=10)
            await asyncio.sleep(0.5)
            await gw["dj-001"].lamps(lamp_001=50)
            await eventually(lambda: feed.shows("dj-001", "lamp-001", "50 % lit"))
            await asyncio.sleep(0.5)
            assert not any("ch-001" in json.dumps(d) for _, d in feed.messages[narrowed:])
            # Back in scope: Chenôve's cabinet as it is now, though it did not change since.
            with store.engine.begin() as conn:
                store.put_operator(
                    conn,
                    name="both",
                    role="operator",
                    communes=["Dijon", "Chenôve"],
                    now=datetime.now(UTC),
                )
            await eventually(lambda: feed.shows("ch-001", "lamp-001", "10 % lit"))


async def test_consoles_following_a_cabinet_share_one_read_and_get_only_what_changed(
    console: ConsoleCity,
) -> None:
    for n in range(3):
        console.account(f"desk-{n}", "viewer", ["*"])
    states = console.city.running.app.console.states  # type: ignore[union-attr]
    async with cabinets(console, dj_001="Dijon") as gw:
        clients = [(await console.signed_in(f"desk-{n}"))[0] for n in range(3)]
        async with contextlib.AsyncExitStack() as stack:
            for client in clients:
                await stack.enter_async_context(client)
            feeds = [
                await stack.enter_async_context(live(c, f"{console.url}/live?gateway=dj-001"))
                for c in clients
            ]
            for feed in feeds:
                await eventually(lambda feed=feed: feed.shows("dj-001", "lamp-001", "100 % lit"))
            reads = states.reads
            before = [len(feed.messages) for feed in feeds]
            for level in range(1, 21):
                await gw["dj-001"].lamps(lamp_001=level, lamp_002=100)
                await asyncio.sleep(0.05)
            for feed, start in zip(feeds, before, strict=True):
                await eventually(lambda feed=feed: feed.shows("dj-001", "lamp-001", "20 % lit"))
                frames = [
                    (at, data["gateways"]["dj-001"])
                    for (kind, data), at in zip(feed.messages, feed.arrived, strict=True)
                    if kind == "states"
                ][start:]
                # lamp-002 came once, then never again: it did not change.
                assert sum("lamp-002" in f for _, f in frames) == 1
                # Twenty reports over a second or more: a frame a quarter second at most,
                # each with the latest level.
                assert 2 <= len(frames) < 20
                gaps = [b - a for (a, _), (b, _) in itertools.pairwise(frames)]
                assert min(gaps) > 0.15, gaps
            assert states.reads == reads  # nothing read from the store for any of them
    await eventually(lambda: states.followed() == set())
