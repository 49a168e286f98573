"""The admin API's commands (orchestrator/api/commands.py) on a busy store: an operator's
command and the gateway's answer to it are committed ahead of the ingest's queued writes,
so neither waits behind a long queue of them (the store's writer held and released by the
test, a real agent answering over mutual TLS)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from ondijon.client import AdminClient, AdminError
from orchestrator.ingest.devices import current_devices
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2
from tests.conftest import City
from tests.edge.test_agent import running
from tests.waiting import eventually

pytestmark = pytest.mark.integration

GROUP = 512  # writes committed together at most (StoreRunner's max_batch)
QUEUED = 6 * GROUP  # ingest writes waiting when the command comes


def lamps_to(level: int, agent_now: datetime) -> link_pb2.Command:
    command = link_pb2.Command(
        command_id="busy-1",
        override=schedule_pb2.Override(
            id="incident", priority=5, kind=schedule_pb2.DEVICE_KIND_LAMP, lamp_level=level
        ),
    )
    # The override lives on the agent's clock, the command's expiry on the orchestrator's.
    command.override.start.FromDatetime(agent_now - timedelta(hours=1))
    command.override.expiry.FromDatetime(agent_now + timedelta(hours=1))
    command.expires_at.FromDatetime(datetime.now(UTC) + timedelta(minutes=10))
    return command


def devices_of(runner: StoreRunner, gateway_id: str) -> list[str]:
    with runner.store.engine.connect() as conn:
        return [d.device_id for d in current_devices(runner.store, conn, gateway_id)]


def status_of(runner: StoreRunner, command_id: str) -> int:
    with runner.store.engine.connect() as conn:
        record = runner.store.get_command(conn, command_id)
    return record.status if record else 0


async def test_a_command_and_its_answer_go_ahead_of_a_long_queue_of_ingest_writes(
    city: City,
) -> None:
    config = await city.enrolled(
        "dj-busy", lamps='[[lamps]]\nid = "lamp-1"\nbackend = "simulated"\nnominal_power_w = 60'
    )
    runner = city.running.app.runner
    admin = AdminClient(city.admin)
    taken, hold, flow = threading.Event(), threading.Event(), threading.Event()
    ingested: list[int] = []
    # After each commit, from the writer: how many queued ingest writes had been
    # committed, and the command's status then.
    seen: list[tuple[int, int]] = []
    on_commit = runner.on_commit

    def committed(seconds: float) -> None:
        seen.append((len(ingested), status_of(runner, "busy-1")))

    def busy(conn: sa.Connection) -> None:
        taken.set()
        hold.wait(10)

    def ingest(conn: sa.Connection) -> None:
        flow.wait(10)
        ingested.append(1)

    async with running(config) as agent:
        await asyncio.wait_for(agent.link.status.connected.wait(), 15)
        # The agent's first report stored: from now on it reports what changes only.
        await eventually(lambda: devices_of(runner, "dj-busy"))
        runner.on_commit = committed
        try:
            held = asyncio.ensure_future(runner.write(busy))
            await eventually(taken.is_set)  # the writer is in it, alone
            queue = [asyncio.ensure_future(runner.write(ingest)) for _ in range(QUEUED)]
            sending = asyncio.ensure_future(
                admin.send_command(
                    control_pb2.SendCommandRequest(
                        gateway_id="dj-busy", command=lamps_to(100, agent.clock.now())
                    )
                )
            )
            await eventually(lambda: runner.waiting[0] == 1)
            hold.set()
            # Committed, with its audit entry, before any of the queue (held meanwhile).
            await asyncio.wait_for(sending, 10)
            assert ingested == []
            assert status_of(runner, "busy-1") == link_pb2.COMMAND_STATUS_PENDING

            # The agent acts and answers; its answer waits for the group in flight only.
            await eventually(lambda: agent.lamps[0].controller.level == 100)
            await eventually(lambda: runner.waiting[0] == 1)
            flow.set()
            await asyncio.wait_for(asyncio.gather(held, *queue), 30)
        finally:
            hold.set()
            flow.set()
            runner.on_commit = on_commit
    # Stored after the group in flight when it came (and at most one other: the lanes take
    # turns), not after the whole queue.
    done_at = [n for n, status in seen if status == link_pb2.COMMAND_STATUS_DONE]
    assert done_at and done_at[0] <= 2 * GROUP, seen
    answer = await admin.get_command(control_pb2.GetCommandRequest(command_id="busy-1"))
    assert answer.status == link_pb2.COMMAND_STATUS_DONE


async def test_get_command_waits_for_the_gateways_answer_instead_of_being_polled(
    city: City,
) -> None:
    """``GetCommand`` with ``wait_ms`` holds the call while the command is pending and
    answers as soon as the gateway's answer is committed (the CLI's `--wait` uses it); it
    answers PENDING when the wait runs out, and refuses a wait past its bound by name."""
    config = await city.enrolled(
        "dj-wait", lamps='[[lamps]]\nid = "lamp-1"\nbackend = "simulated"\nnominal_power_w = 60'
    )
    admin = AdminClient(city.admin)

    def get(command_id: str, wait_ms: int) -> asyncio.Future[control_pb2.GetCommandResponse]:
        request = control_pb2.GetCommandRequest(command_id=command_id, wait_ms=wait_ms)
        return asyncio.ensure_future(admin.get_command(request))

    # Queued while the cabinet is away: the call waits (20 s allowed; it is answered as
    # soon as the cabinet is back and has acted).
    command = lamps_to(70, datetime(2026, 6, 21, 20, 0, tzinfo=UTC))
    command.command_id = "wait-1"
    await admin.send_command(control_pb2.SendCommandRequest(gateway_id="dj-wait", command=command))
    waiting = get("wait-1", 20_000)
    await asyncio.sleep(0.5)
    assert not waiting.done(), "answered while the command was still pending"
    async with running(config) as agent:
        answer = await asyncio.wait_for(waiting, 15)  # < the 20 s asked: woken by the answer
        assert answer.status == link_pb2.COMMAND_STATUS_DONE
        assert agent.lamps[0].controller.level == 70

    # The cabinet gone again: the wait runs out, and the command is still pending.
    command.command_id = "wait-2"
    await admin.send_command(control_pb2.SendCommandRequest(gateway_id="dj-wait", command=command))
    began = asyncio.get_running_loop().time()
    answer = await get("wait-2", 300)
    assert answer.status == link_pb2.COMMAND_STATUS_PENDING
    assert asyncio.get_running_loop().time() - began >= 0.29

    with pytest.raises(AdminError, match="wait_ms: at most 20000"):
        await get("wait-2", 20_001)
    with pytest.raises(AdminError, match="no such command"):
        await get("wait-404", 20_000)
