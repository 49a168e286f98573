"""A monitoring pass that closes more metering than one outbox append takes (the agent's
loop held up for most of an hour, or a clock stepped forward within the metering's gap
limit) records all of it, in parts, instead of failing the monitor and losing it."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from edge.agent import Agent
from foundation.clock import ManualClock
from tests.conftest import offline_agent_config

EVENING = datetime(2026, 1, 15, 18, 0, tzinfo=UTC)


def lamps(n: int) -> str:
    return "\n".join(
        f'[[lamps]]\nid = "lamp-{i:03d}"\nbackend = "simulated"\nnominal_power_w = 60'
        for i in range(n)
    )


def test_a_pass_that_closes_an_hour_of_quarters_for_100_lamps_records_them_all(
    tmp_path: Path,
) -> None:
    config = offline_agent_config(
        tmp_path, "meter-1", lamps(100) + "\n[outbox]\nmax_bytes = 1048576"
    )
    clock = ManualClock(EVENING)
    agent = Agent(config, clock)
    try:
        limit = agent.outbox.limits.max_append_bytes
        agent.monitor()  # the first samples: no interval closed yet
        clock.advance(3600)  # the loop held up for an hour (the metering's gap limit)
        agent.monitor()
        readings = agent.outbox.next_batch(10**6, 10**9)
    finally:
        agent.close()
    per_lamp = Counter(e.device_id for e in readings if e.type == "energy_interval")
    # 18:00 to 19:00: four quarters closed, for every lamp.
    assert per_lamp == {f"lamp-{i:03d}": 4 for i in range(100)}
    assert sum(len(e.SerializeToString()) for e in readings) > limit  # more than one append
    sequences = [e.sequence for e in readings]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
