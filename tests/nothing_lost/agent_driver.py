"""Runs the real cabinet agent in its own process, for the kill-loop tests.

    python -m tests.nothing_lost.agent_driver --config AGENT.toml --start ISO --speed 3600

This is ``ondijon edge run`` (the same :class:`edge.agent.Agent`, the same files) with what
a test harness needs and production does not:

- every event the agent makes durable is reported on stdout as ``R <sequence>
  <fingerprint>`` *after* the outbox append returned, so whatever was reported before a
  SIGKILL was promised to the orchestrator;
- the simulated clock starts at ``--start`` (the parent continues the simulated time from
  one run to the next, so metering quarters are never reported twice);
- ``--flap LAMP`` makes that simulated lamp fail and recover every ``--flap-every-s``
  simulated seconds (alarms and their clearances, as on the bench);
- counters are made durable every ``--persist-every-s`` wall seconds instead of every
  minute of the agent's clock, so kills land in state-file writes too;
- the link backs off for at most ``--backoff-cap-s`` (tests do not wait a minute);
- ``--address`` points the link elsewhere (a proxy that cuts it).

Prints ``READY`` once the agent runs, and ``P <pending> <last sequence>`` when the outbox's
figures change.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import edge.agent
from edge.agent import Agent
from edge.config import AgentConfig
from edge.equipment.sim.lantern import SimulatedLamp
from edge.events import EquipmentEvent, Priority
from edge.link import Backoff
from foundation.clock import Clock, SimulatedClock
from protos.ondijon.v1 import link_pb2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_WIRE_PRIORITY = {
    Priority.ALARM: link_pb2.EVENT_PRIORITY_ALARM,
    Priority.EVENT: link_pb2.EVENT_PRIORITY_EVENT,
    Priority.METERING: link_pb2.EVENT_PRIORITY_METERING,
}


def fingerprint(
    type_: str, device_id: str, priority: int, at_us: int, attributes: dict[str, str]
) -> str:
    """What identifies an event's content, on the agent's side and the orchestrator's."""
    text = json.dumps([type_, device_id, priority, at_us, sorted(attributes.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def event_fingerprint(event: EquipmentEvent) -> str:
    """:func:`fingerprint` of an event as the agent records it."""
    at_us = (event.at - _EPOCH) // _MICROSECOND
    return fingerprint(
        event.type,
        event.device_id,
        _WIRE_PRIORITY[Priority(event.priority)],
        at_us,
        dict(event.attributes),
    )


def wire_fingerprint(event: link_pb2.Event) -> str:
    """:func:`fingerprint` of an event as the orchestrator stored it."""
    at_us = event.at.seconds * 1_000_000 + event.at.nanos // 1000
    return fingerprint(
        event.type, event.device_id, int(event.priority), at_us, dict(event.attributes)
    )


def report_appends(agent: Agent) -> None:
    """Print each durable append's sequences and fingerprints once the append returned
    (``R sequence fingerprint``), and where each renumbering moved an event (``C old new``)."""
    outbox = agent.outbox
    append_many = outbox.append_many

    def reporting(events: Iterable[EquipmentEvent]) -> list[int]:
        listed = list(events)
        sequences = append_many(listed)
        lines = [f"R {s} {event_fingerprint(e)}\n" for s, e in zip(sequences, listed, strict=True)]
        sys.stdout.write("".join(lines))
        sys.stdout.flush()
        return sequences

    outbox.append_many = reporting  # type: ignore[method-assign]
    reissue = outbox.reissue

    def reporting_reissue(
        ranges: Iterable[tuple[int, int]], *, conflict: bool = False
    ) -> list[int]:
        # Which numbers were moved where (a copy keeps its event: the ledger follows it).
        ranges = list(ranges)
        with outbox._lock:
            moved = [s for a, b in outbox._pending_in(ranges, below=None) for s in range(a, b + 1)]
            new = reissue(ranges, conflict=conflict)
        sys.stdout.write("".join(f"C {o} {n}\n" for o, n in zip(moved, new, strict=True)))
        sys.stdout.flush()
        return new

    outbox.reissue = reporting_reissue  # type: ignore[method-assign]


def simulated_lamp(agent: Agent, device_id: str) -> SimulatedLamp:
    """The simulator behind one of the agent's lamps (the bench injects failures there)."""
    for lamp in agent.lamps:
        if lamp.controller.device_id == device_id:
            driver = lamp.controller._driver
            assert isinstance(driver, SimulatedLamp), f"{device_id} is not simulated"
            return driver
    raise SystemExit(f"--flap: no lamp {device_id!r}")


async def flap(lamp: SimulatedLamp, clock: Clock, every_s: float) -> None:
    while True:
        await clock.sleep(every_s)
        lamp.dead = not lamp.dead


async def report_pending(agent: Agent) -> None:
    """Print ``P <pending> <last sequence>`` whenever it changes (the parent waits on 0)."""
    said = None
    while True:
        now = (agent.outbox.pending_count, agent.outbox.last_sequence)
        if now != said:
            print(f"P {now[0]} {now[1]}", flush=True)
            said = now
        await asyncio.sleep(0.05)


async def main(args: argparse.Namespace) -> None:
    config = AgentConfig.load(args.config)
    if args.address:
        config = dataclasses.replace(config, address=args.address)
    clock = SimulatedClock(start=datetime.fromisoformat(args.start), speed=args.speed)
    # The agent's interval is on its own (fast) clock; the option is in wall seconds.
    edge.agent.PERSIST_INTERVAL_S = args.persist_every_s * args.speed
    agent = Agent(config, clock)
    report_appends(agent)
    agent.link.backoff = Backoff(base_s=0.05, cap_s=args.backoff_cap_s)
    tasks = [asyncio.create_task(agent.run(ready=lambda: print("READY", flush=True)))]
    tasks.append(asyncio.create_task(report_pending(agent)))
    if args.flap:
        lamp = simulated_lamp(agent, args.flap)
        tasks.append(asyncio.create_task(flap(lamp, clock, args.flap_every_s)))
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        task.result()


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--start", required=True, help="simulated start, ISO 8601 with offset")
    parser.add_argument("--speed", type=float, default=3600.0)
    parser.add_argument("--flap", default="")
    parser.add_argument("--flap-every-s", type=float, default=600.0)
    parser.add_argument("--persist-every-s", type=float, default=0.2)
    parser.add_argument("--backoff-cap-s", type=float, default=0.5)
    parser.add_argument("--address", default="")
    return parser.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(_arguments()))
