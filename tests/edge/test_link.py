"""The agent's link: jittered backoff, reconnection, and state reports that coalesce.

The backoff is checked as a pure function; the rest runs a GatewayLinkClient (with a small
in-memory agent and outbox) against a real orchestrator over mutual TLS on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import sqlite3
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import pytest

from edge.config import AgentConfig
from edge.events import EquipmentEvent
from edge.identity import Credentials
from edge.link import Backoff, GatewayLinkClient
from edge.storage.loss import Settlement
from protos.ondijon.v1 import firmware_pb2, link_pb2, link_pb2_grpc, schedule_pb2, state_pb2
from tests.conftest import City, offline_agent_config

# -- backoff ---------------------------------------------------------------------------------


class _Extreme(random.Random):
    """Always draws the top (or the bottom) of the interval asked for."""

    def __init__(self, top: bool) -> None:
        super().__init__(0)
        self.top = top

    def uniform(self, a: float, b: float) -> float:
        return b if self.top else a


def test_backoff_bound_doubles_up_to_the_cap_and_jitter_starts_at_zero() -> None:
    backoff = Backoff(base_s=1.0, cap_s=60.0)
    bounds = [backoff.delay(attempt, _Extreme(top=True)) for attempt in range(9)]
    assert bounds == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert {backoff.delay(attempt, _Extreme(top=False)) for attempt in range(9)} == {0}


def test_backoff_spreads_a_crowd_over_the_whole_interval() -> None:
    # A thousand cabinets at their fourth attempt: spread over [0, 16) s, not bunched.
    rng = random.Random(2026)
    delays = [Backoff().delay(4, rng) for _ in range(1000)]
    assert all(0 <= d <= 16 for d in delays)
    per_second = [sum(1 for d in delays if s <= d < s + 1) for s in range(16)]
    assert max(per_second) < 2 * min(per_second)


def test_backoff_survives_days_offline() -> None:
    assert Backoff().delay(5000, random.Random(1)) <= 60


# -- against an orchestrator -----------------------------------------------------------------


@dataclass
class FakeAgent:
    """The agent side the link talks to, with nothing behind it."""

    firmware_version: str = "1.0.0"
    states: list[state_pb2.DeviceState] = field(default_factory=list)
    connections: int = 0

    def held_documents(self) -> list[link_pb2.HeldDocument]:
        return []

    async def accept_document(self, document: link_pb2.DesiredDocument) -> str:
        return ""

    async def handle_command(self, command: link_pb2.Command) -> link_pb2.CommandResult:
        return link_pb2.CommandResult(
            command_id=command.command_id, status=link_pb2.COMMAND_STATUS_DONE
        )

    def device_states(self) -> list[state_pb2.DeviceState]:
        return list(self.states)

    async def on_connected(self, channel: grpc.aio.Channel, credentials: Credentials) -> None:
        self.connections += 1

    async def on_firmware_offer(self, offer: firmware_pb2.FirmwareOffer) -> None:
        return None


class EmptyOutbox:
    last_sequence = 0

    def __init__(self) -> None:
        self.on_recovery: list[object] = []

    def held_after(self) -> int:
        return 0

    def settle_losses(self, **_: object) -> Settlement:
        return Settlement(lost=[], rewound=False)

    def reissue(self, ranges: object, *, conflict: bool = False) -> list[int]:
        return []

    def next_batch(self, max_events: int, max_bytes: int) -> list[link_pb2.Event]:
        return []

    def ack(self, ranges: object) -> int:
        return 0

    def requeue_in_flight(self) -> int:
        return 0

    def raise_sequence_floor(self, stored_sequence: int) -> bool:
        return False

    def append_many(self, events: Iterable[EquipmentEvent]) -> list[int]:
        return []


@dataclass(frozen=True)
class RecordingBackoff(Backoff):
    """Records the attempt number of every retry."""

    attempts: list[int] = field(default_factory=list)

    def delay(self, attempt: int, rng: random.Random) -> float:
        self.attempts.append(attempt)
        return 0.0


def closed_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"localhost:{sock.getsockname()[1]}"


class BrokenOutbox(EmptyOutbox):
    """An outbox whose reads fail a few times, as one on a failing disk would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def next_batch(self, max_events: int, max_bytes: int) -> list[link_pb2.Event]:
        if self.failures:
            self.failures -= 1
            raise sqlite3.DatabaseError("database disk image is malformed")
        return []


@contextlib.asynccontextmanager
async def linked(
    config: AgentConfig,
    agent: FakeAgent | None = None,
    outbox: EmptyOutbox | None = None,
    **options: float,
) -> AsyncIterator[tuple[GatewayLinkClient, RecordingBackoff]]:
    backoff = RecordingBackoff()

    async def pace(delay: float) -> None:
        await asyncio.sleep(0.02)  # not timing anything: keeps retries from spinning

    client = GatewayLinkClient(
        config,
        agent or FakeAgent(),
        outbox or EmptyOutbox(),
        backoff=backoff,
        sleep=pace,
        **options,  # type: ignore[arg-type]
    )
    task = asyncio.create_task(client.run())
    try:
        yield client, backoff
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: object, timeout: float = 15) -> None:
    async def poll() -> None:
        for _ in range(int(timeout / 0.02)):
            if check():  # type: ignore[operator]
                return
            await asyncio.sleep(0.02)
        raise AssertionError("condition not reached in time")

    await poll()


@pytest.mark.integration
async def test_failures_count_up_and_a_connection_is_made_when_possible(city: City) -> None:
    config = await city.enrolled("dj-001")
    async with linked(replace(config, address=closed_address())) as (client, backoff):
        await until(lambda: len(backoff.attempts) >= 3)
        assert backoff.attempts[:3] == [1, 2, 3]
        assert "UNAVAILABLE" in client.status.last_error
        assert not client.status.connected.is_set()

        client.config = config  # the orchestrator is reachable again
        await asyncio.wait_for(client.status.connected.wait(), 15)
        assert client.status.sessions == 1


@pytest.mark.integration
async def test_a_task_of_the_stream_that_fails_ends_the_stream_and_the_link_reconnects(
    city: City, caplog: pytest.LogCaptureFixture
) -> None:
    config = await city.enrolled("dj-001")
    async with linked(config, outbox=BrokenOutbox(failures=2)) as (client, _):
        # Each failure of the sending task closes its stream (never a stream left up,
        # "connected", with nothing sent), is logged, and the link opens a new one.
        await until(lambda: client.status.sessions >= 3)
        await asyncio.wait_for(client.status.connected.wait(), 15)
        assert "malformed" in client.status.last_error
    assert "link failed" in caplog.text


class MuteOrchestrator(link_pb2_grpc.GatewayLinkServicer):
    """Takes the stream, reads the hello, never answers (an orchestrator that hangs)."""

    def __init__(self) -> None:
        self.hellos = 0

    async def Connect(self, request_iterator, context):  # type: ignore[no-untyped-def]
        async for _ in request_iterator:
            self.hellos += 1
            await asyncio.Event().wait()
        yield link_pb2.ConnectResponse()  # pragma: no cover - never reached


@pytest.mark.integration
async def test_a_hello_left_unanswered_ends_the_stream_and_the_link_tries_again(
    city: City,
) -> None:
    config = await city.enrolled("dj-001")
    served = city.tmp_path / "orchestrator"
    server = grpc.aio.server()
    mute = MuteOrchestrator()
    link_pb2_grpc.add_GatewayLinkServicer_to_server(mute, server)
    credentials = grpc.ssl_server_credentials(
        [((served / "server.key").read_bytes(), (served / "server.pem").read_bytes())],
        root_certificates=(served / "client-ca.pem").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        mute_config = replace(config, address=f"localhost:{port}")
        async with linked(mute_config, welcome_within_s=0.3) as (client, backoff):
            await until(lambda: mute.hellos >= 3)
            assert "no welcome within" in client.status.last_error
            assert client.status.sessions == 0 and not client.status.connected.is_set()
            assert len(backoff.attempts) >= 2
    finally:
        await server.stop(None)


@pytest.mark.integration
async def test_backoff_starts_again_from_zero_after_a_working_session(city: City) -> None:
    config = await city.enrolled("dj-001")
    async with linked(replace(config, address=closed_address())) as (client, backoff):
        await until(lambda: len(backoff.attempts) >= 2)
        client.config = config
        await asyncio.wait_for(client.status.connected.wait(), 15)
        failures = len(backoff.attempts)

        await city.restart()
        await until(lambda: client.status.sessions == 2)
        assert backoff.attempts[failures] == 0


@pytest.mark.integration
async def test_several_changes_of_one_device_make_one_entry(city: City) -> None:
    config = await city.enrolled("dj-001")

    def lamp(device_id: str, level: int) -> state_pb2.DeviceState:
        return state_pb2.DeviceState(
            device_id=device_id,
            kind=schedule_pb2.DEVICE_KIND_LAMP,
            lamp=state_pb2.LampState(level=level),
        )

    agent = FakeAgent(states=[lamp("lamp-001", 0), lamp("lamp-002", 0)])
    store = city.running.app.runner.store

    def stored() -> list[tuple[str, int]]:
        with store.engine.connect() as conn:
            log, _ = store.get_devices(conn, "dj-001")
        report = link_pb2.StateReport.FromString(log)
        return [(d.device_id, d.lamp.level) for d in report.devices]

    async with linked(config, agent) as (client, _):
        await asyncio.wait_for(client.status.connected.wait(), 15)
        # On connecting, every device is reported once.
        await until(lambda: len(stored()) == 2)
        assert sorted(stored()) == [("lamp-001", 0), ("lamp-002", 0)]

        for level in (10, 20, 30, 40):
            client.state_changed(lamp("lamp-001", level))
        client.state_changed(lamp("lamp-002", 5))
        # One report, one entry per device: naming both devices, it became the stored
        # state as it is (a report with four lamp-001 entries would show them all here).
        await until(lambda: sorted(stored()) == [("lamp-001", 40), ("lamp-002", 5)])


async def test_a_command_sent_again_is_answered_again_without_running_twice(
    tmp_path: Path,
) -> None:
    """The orchestrator resends a command until it hears the answer (the first answer may
    have died with a stream): the agent gives the same answer and does not act twice."""
    ran: list[str] = []

    class Counting(FakeAgent):
        async def handle_command(self, command: link_pb2.Command) -> link_pb2.CommandResult:
            ran.append(command.command_id)
            return link_pb2.CommandResult(
                command_id=command.command_id,
                status=link_pb2.COMMAND_STATUS_REFUSED,
                detail=f"run {len(ran)}",
            )

    config = offline_agent_config(tmp_path, "dj-001", "")
    client = GatewayLinkClient(config, Counting(), EmptyOutbox())
    command = link_pb2.Command(command_id="cmd-1")
    first = await client.answer(command)
    again = await client.answer(command)
    other = await client.answer(link_pb2.Command(command_id="cmd-2"))
    assert ran == ["cmd-1", "cmd-2"]
    assert again == first and first.detail == "run 1"
    assert other.detail == "run 2"
