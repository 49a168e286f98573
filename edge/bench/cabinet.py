"""The cabinet on the bench: the real agent in its own process, the street behind its pins.

    python -m edge.bench.cabinet --config AGENT.toml --inventory BENCH.toml --journal FILE \\
        --start ISO [--kinds lamps,bollards] [--speed 600] [--step 0.5] [--address HOST:PORT]
        [--resume]

What a Raspberry Pi wired to equipment is on a real bench, this process is on gpiozero's
mock pins: the agent (:class:`edge.agent.Agent`, built from its TOML as ``ondijon edge
run`` builds it, talking to its orchestrator over mutual TLS) drives pins, and the street
of the inventory (:class:`edge.bench.street.SimulatedStreet`: lanterns, posts, the
crossing's controller, the cabinet) answers on the same pins, since mock pins live in one
process. The bench, in another process, sees only what a multimeter on the pins would:

- the **journal** (``--journal``): one line per pin change, written unbuffered as it
  happens so a SIGKILL loses nothing: ``P <monotonic s> <agent-clock ISO time> <line>
  <state>`` (a PWM line's state is its duty); ``B <ISO>`` when the process starts;
- **stdout**: ``READY``; ``T <ISO> <monotonic s> <last sequence> <pending>`` every
  simulated minute (the agent's clock and its outbox, for the bench to follow);
  ``DOC <kind> <version>`` when a desired-state document starts being taken in (the moment
  a power cut lands *during* an update); ``F <ISO> <fault> <target>`` for each fault;
- **stdin**, one command a line: ``inject FAULT TARGET [DETAIL]``
  (:data:`edge.bench.street.FAULTS`), ``speed SPEED STEP``, ``disk full`` / ``disk
  freed`` (the cabinet's disk fills up: this process may no longer grow any file, its
  ``RLIMIT_FSIZE`` set to 0, as an unprivileged CI can; and freed again). A full disk also
  stops the journal growing unless it is a pipe (``--journal`` a FIFO the bench reads).

Time is the agent's own: a :class:`~foundation.clock.ManualClock` from ``--start``, moved
``--step`` simulated seconds every ``step / speed`` wall seconds, so a night takes a minute
and every pin change is stamped with the agent's time (to within a step). The network is
real and runs in real time; the link's backoff is capped at ``--backoff-cap-s``.
SIGTERM stops the agent as ``ondijon edge run`` does; SIGKILL is a power cut.

Under systemd (or its stand-in, :mod:`edge.firmware.systemd_standin`, as the firmware
scenario runs it through the A/B launcher) it says ``READY=1`` with the same status as
``ondijon edge run`` and pings the watchdog. ``--resume`` starts the clock where the
journal left it (its last ``P`` or ``C`` line, written every simulated minute) when that is
later than ``--start``: a restart by the supervisor does not turn the street's clock back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import resource
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.agent import Agent
from edge.bench.inventory import KINDS, Inventory, load_inventory, subset
from edge.bench.street import SimulatedStreet
from edge.config import AgentConfig
from edge.equipment.sim.bollard import PinChange
from edge.equipment.sim.lantern import clocked_pwm_factory
from edge.firmware.notify import Notifier, watchdog_interval
from edge.link import Backoff
from foundation.clock import ManualClock
from protos.ondijon.v1 import link_pb2


class Journal(list[PinChange]):
    """A pin factory's history that also goes to the journal file, line by line."""

    def __init__(self, fd: int, inventory: Inventory) -> None:
        super().__init__()
        self._fd = fd
        self._inventory = inventory

    def append(self, change: PinChange) -> None:
        super().append(change)
        line = self._inventory.line_of(change.pin)
        state = float(change.state)
        os.write(
            self._fd, f"P {change.mono:.6f} {change.at.isoformat()} {line} {state:g}\n".encode()
        )


def say(line: str) -> None:
    """One line to the bench (stdout, flushed)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclasses.dataclass
class Pace:
    """How fast the agent's time runs: ``step`` simulated seconds per ``step / speed`` s."""

    speed: float
    step: float


async def tick(clock: ManualClock, agent: Agent, pace: Pace, fd: int) -> None:
    """Move the agent's clock, and tell the bench the time every simulated minute (and the
    journal, for ``--resume``)."""
    told = -60.0
    while True:
        clock.advance(pace.step)
        for _ in range(8):  # every task the step woke runs to its next wait
            await asyncio.sleep(0)
        await asyncio.sleep(pace.step / pace.speed)
        if clock.monotonic() - told >= 60.0:
            told = clock.monotonic()
            outbox = agent.outbox
            os.write(fd, f"C {clock.now().isoformat()}\n".encode())
            say(
                f"T {clock.now().isoformat()} {clock.monotonic():.6f} "
                f"{outbox.last_sequence} {outbox.pending_count}"
            )


async def commands(street: SimulatedStreet, pace: Pace) -> None:
    """Read the bench's commands from stdin until it closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        words = line.decode().split()
        if not words:
            continue
        if words[0] == "inject" and len(words) >= 3:
            try:
                done = street.inject(words[1], words[2], " ".join(words[3:]))
            except KeyError as exc:
                say(f"E {exc}")
                continue
            say(f"F {done.at.isoformat()} {done.fault} {done.target}")
        elif words[0] == "disk" and len(words) == 2 and words[1] in ("full", "freed"):
            fill_disk(words[1] == "full")
            say(f"F {street.clock.now().isoformat()} disk_{words[1]} cabinet")
        elif words[0] == "speed" and len(words) == 3:
            pace.speed, pace.step = float(words[1]), float(words[2])
            say(f"S {pace.speed:g} {pace.step:g}")
        else:
            say(f"E unknown command {line.decode().strip()!r}")


def fill_disk(full: bool) -> None:
    """No file of this process may grow any more (a full disk), or they may again."""
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0 if full else hard, hard))


def announce_documents(agent: Agent) -> None:
    """Say ``DOC kind version`` as each document starts being taken in."""
    accept = agent.accept_document

    async def announced(document: link_pb2.DesiredDocument) -> str:
        say(f"DOC {link_pb2.DocumentKind.Name(document.kind)} {document.version}")
        return await accept(document)

    agent.accept_document = announced  # type: ignore[method-assign]


def resume_from(journal: Path, start: datetime) -> datetime:
    """The later of ``start`` and the last instant the journal holds."""
    if not journal.exists():
        return start
    last = start
    for raw in journal.read_text(errors="replace").splitlines():
        words = raw.split()
        if len(words) >= 2 and words[0] in ("P", "C"):
            with contextlib.suppress(ValueError, IndexError):
                last = max(last, datetime.fromisoformat(words[2 if words[0] == "P" else 1]))
    return last


async def keep_watchdog(notifier: Notifier, interval: float) -> None:
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


async def main(args: argparse.Namespace) -> None:
    config = AgentConfig.load(args.config)
    if args.address:
        config = dataclasses.replace(config, address=args.address)
    inventory = subset(load_inventory(args.inventory), args.kinds.split(","))
    start = datetime.fromisoformat(args.start)
    if args.resume:
        start = resume_from(args.journal, start)
    fd = os.open(args.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    clock = ManualClock(start)
    os.write(fd, f"B {clock.now().isoformat()}\n".encode())
    pins = clocked_pwm_factory(clock)
    pins.history = Journal(fd, inventory)
    street = SimulatedStreet.build(inventory, clock, pins, bollards=config.bollards)
    agent = Agent(config, clock, pin_factory=pins)
    agent.link.backoff = Backoff(base_s=0.05, cap_s=args.backoff_cap_s)
    announce_documents(agent)
    street.attach({s.device_id: s._driver for s in agent.signals})
    street.start()
    pace = Pace(args.speed, args.step)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    notifier = Notifier()

    def ready() -> None:
        notifier.ready(f"running {config.gateway_id} {agent.firmware_version}")

    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(agent.run(ready=ready), name="agent"),
        asyncio.create_task(tick(clock, agent, pace, fd), name="clock"),
        asyncio.create_task(commands(street, pace), name="commands"),
    ]
    if interval := watchdog_interval():
        tasks.append(asyncio.create_task(keep_watchdog(notifier, interval), name="watchdog"))
    say("READY")
    stopper = asyncio.create_task(stopping.wait())
    await asyncio.wait([stopper, tasks[0]], return_when=asyncio.FIRST_COMPLETED)
    if stopping.is_set():  # stopped on request (a rollback's restart too), not crashed
        agent.firmware.stopped_cleanly()
        notifier.stopping()
    for task in [*tasks, stopper]:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task  # an agent that crashed raises here: the bench sees the exit status
    await street.stop()
    pins.close()
    os.close(fd)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="the agent's TOML")
    parser.add_argument("--inventory", type=Path, required=True, help="the bench inventory")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="the equipment of the inventory to wire"
    )
    parser.add_argument("--journal", type=Path, required=True, help="the pin journal")
    parser.add_argument("--start", required=True, help="the agent clock's start (ISO 8601)")
    parser.add_argument("--speed", type=float, default=600.0, help="simulated s per wall s")
    parser.add_argument("--step", type=float, default=0.5, help="simulated s per clock step")
    parser.add_argument("--address", default="", help="the orchestrator (e.g. a proxy)")
    parser.add_argument(
        "--resume", action="store_true", help="start the clock where the journal left it"
    )
    parser.add_argument("--backoff-cap-s", type=float, default=0.5, help="link backoff cap")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
