"""Nothing lost when the agent process is killed, the orchestrator restarts or the link is cut.

The real agent runs in its own process (:mod:`tests.nothing_lost.agent_driver`) with 100
simulated lamps metered every quarter hour on a clock running an hour per second, and one
lamp whose failure flaps (alarms and clearances), while an operator sends overrides (state
file writes). It is killed with SIGKILL at random moments, many times; the orchestrator is
restarted and the link cut in the middle of a message. At the end every event the agent
ever said was durable is stored by the orchestrator exactly once, with the same content,
under contiguous sequence numbers, and the agent's files were readable after every kill.
"""

from __future__ import annotations

import asyncio
import functools
import random
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.config import AgentConfig
from edge.storage.outbox import Outbox
from edge.storage.state import AgentState
from foundation.clock import ManualClock
from tests.conftest import City
from tests.nothing_lost.agent_driver import wire_fingerprint
from tests.nothing_lost.harness import (
    AgentProcess,
    LinkProxy,
    gateway,
    lamp_override,
    send_command,
    stored_events,
)
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The street's clock starts now (the orchestrator refuses commands that expired on its own
# clock) and runs ahead of it.
START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
SPEED = 3600.0  # an hour of street per second: 400 metering records a second


def assert_files_readable(config: AgentConfig, scratch: Path) -> None:
    """The state file and the outbox open as they are, without any recovery.

    Checked on a copy so the next run of the agent finds the files exactly as the kill left
    them (a write-ahead log to replay included).
    """
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    for name in ("state.json", "state.json.bak", "outbox.sqlite", "outbox.sqlite-wal"):
        if (config.state_dir / name).exists():
            shutil.copy2(config.state_dir / name, scratch / name)
    recoveries: list[object] = []
    with AgentState(scratch / "state.json", on_recovery=recoveries.append) as state:
        state.all_counters()
    assert recoveries == [], "the state file was torn by a kill"
    with Outbox(scratch / "outbox.sqlite", clock=ManualClock(START)) as outbox:
        assert outbox.recovered is None, "the outbox was corrupted by a kill"


def merge(promised: dict[int, str], run: AgentProcess) -> None:
    for sequence, fp in run.promised.items():
        assert promised.setdefault(sequence, fp) == fp, f"sequence {sequence} reused"


async def stored_up_to(city: City, gateway_id: str, sequence: int, timeout: float = 20) -> None:
    """Wait until the orchestrator holds every sequence from 1 to ``sequence``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        g = await gateway(city, gateway_id)
        if g.stored_sequence >= sequence and all(r.first > sequence for r in g.missing):
            return
        assert asyncio.get_running_loop().time() < deadline, f"not stored up to {sequence}"
        await asyncio.sleep(0.1)


async def drain_and_check(
    city: City, config: AgentConfig, promised: dict[int, str], start: datetime, **options: str
) -> None:
    """Run the agent with its clock (nearly) stopped until its outbox is empty; then check
    that the orchestrator holds exactly what was promised, once, contiguously."""
    assert config.source is not None
    final = AgentProcess(config.source, start=start, speed=0.001, **options)
    await final.start()
    await eventually(lambda: final.pending == 0 and final.last_sequence > 0, timeout=30)
    await final.stop()
    merge(promised, final)
    last = final.last_sequence

    events = await stored_events(city, config.gateway_id)
    sequences = [e.event.sequence for e in events]
    assert sequences == list(range(1, last + 1)), "stored sequences are not contiguous"
    g = await gateway(city, config.gateway_id)
    assert g.stored_sequence == last and not g.missing
    stored = [wire_fingerprint(e.event) for e in events]
    assert len(set(stored)) == len(stored), "an event was stored twice under two sequences"
    for sequence, fp in promised.items():
        assert stored[sequence - 1] == fp, f"event {sequence} is not what the agent recorded"
    with Outbox(config.state_dir / "outbox.sqlite", clock=ManualClock(START)) as outbox:
        assert outbox.pending_count == 0 and outbox.last_sequence == last


async def test_sigkill_at_random_points_loses_and_duplicates_nothing(
    city: City, lamp_table: Callable[[int], str], tmp_path: Path
) -> None:
    config = await city.enrolled("nl-kill", lamps=lamp_table(100))
    assert config.source is not None
    rng = random.Random(20260302)
    promised: dict[int, str] = {}
    clock_at = START
    for kill in range(12):
        run = AgentProcess(config.source, start=clock_at, speed=SPEED, flap="lamp-007")
        await run.start()
        if kill % 3 == 1:
            command = lamp_override(f"o{kill}", 30, run.simulated_now(), minutes=90)
            await send_command(city, config.gateway_id, command)
        await eventually(functools.partial(bool, run.promised))
        await asyncio.sleep(rng.uniform(0.05, 1.0))
        await run.kill()
        merge(promised, run)
        clock_at = run.simulated_now()
        assert_files_readable(config, tmp_path / "scratch")

    await drain_and_check(city, config, promised, clock_at)
    assert len(promised) > 2000


async def test_orchestrator_restarts_and_cut_links_lose_and_duplicate_nothing(
    city: City, lamp_table: Callable[[int], str], tmp_path: Path
) -> None:
    config = await city.enrolled("nl-cut", lamps=lamp_table(100))
    assert config.source is not None
    rng = random.Random(20260303)
    promised: dict[int, str] = {}
    clock_at = START
    async with LinkProxy(lambda: city.running.port) as proxy:
        run = AgentProcess(
            config.source, start=clock_at, speed=SPEED, flap="lamp-042", address=proxy.address
        )
        await run.start()
        for round_ in range(9):
            # A backlog builds up while the link is away, so the cut lands mid-drain.
            proxy.online = False
            proxy.cut_now()
            await asyncio.sleep(rng.uniform(0.3, 0.8))
            proxy.online = True
            what = (round_ + 2) % 3  # kill, cut, restart; the last process sees both
            if what == 0:
                proxy.cut_after(rng.randint(2_000, 60_000))
                before = proxy.cuts

                def cut(before: int = before) -> bool:
                    return proxy.cuts > before

                await eventually(cut)
            elif what == 1:
                await asyncio.sleep(rng.uniform(0.1, 0.6))
                await city.restart()
            else:
                await asyncio.sleep(rng.uniform(0.1, 0.6))
                await run.kill()
                merge(promised, run)
                clock_at = run.simulated_now()
                assert_files_readable(config, tmp_path / "scratch")
                run = AgentProcess(
                    config.source,
                    start=clock_at,
                    speed=SPEED,
                    flap="lamp-042",
                    address=proxy.address,
                )
                await run.start()
        # The same process, without a restart, fills every gap the cuts and restarts left
        # (what was in flight is sent again on the next stream).
        await eventually(lambda: len(run.promised) > 100)
        await stored_up_to(city, config.gateway_id, max(run.promised))
        await run.kill()
        merge(promised, run)
        clock_at = run.simulated_now()
        assert proxy.cuts >= 3
        await drain_and_check(city, config, promised, clock_at, address=proxy.address)
    assert len(promised) > 2000
