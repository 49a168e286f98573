"""An agent process whose mock pins keep a journal on disk, for the bench to kill.

gpiozero's mock pins live and die with the process, so this process writes every pin
change (and every pin handed back to gpiozero as an input) to a journal file, unbuffered:
after a SIGKILL the journal's last line per pin is what that pin held when the process
died. The agent runs as ``ondijon edge run`` does (its configuration, a simulated clock,
SIGTERM stops it cleanly); it drives a gpio lamp on a clocked mock factory and a
simulated bollard, holds a schedule that wants the bollard up, and prints ``RISING`` when
the bollard's up motor starts.

    python hil_tests/killed_agent.py CONFIG JOURNAL
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

from edge.agent import Agent, make_clock
from edge.config import AgentConfig
from edge.equipment.sim import bollard as bollard_sim
from edge.equipment.sim.bollard import ClockedMockFactory, ClockedMockPin, PinChange
from edge.equipment.sim.lantern import clocked_pwm_factory
from protos.ondijon.v1 import link_pb2, schedule_pb2

JOURNAL_FD = -1
FACTORIES: dict[int, str] = {}


def write(line: str) -> None:
    os.write(JOURNAL_FD, (line + "\n").encode())


class Journal(list[PinChange]):
    """A factory's pin history that also goes to the journal as it happens."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def append(self, change: PinChange) -> None:
        super().append(change)
        write(f"{self.name} {change.pin} {float(change.state):g}")  # a PWM duty as it is
        if self.name == "bollard" and change.pin == "GPIO17" and change.state:
            print("RISING", flush=True)


def journaled(name: str, factory: ClockedMockFactory) -> ClockedMockFactory:
    factory.history = Journal(name)
    FACTORIES[id(factory)] = name
    return factory


_set_function = ClockedMockPin._set_function


def _journal_function(self: Any, value: str) -> None:
    _set_function(self, value)
    write(f"{FACTORIES.get(id(self._factory), '?')} {self.info.name} function={value}")


ClockedMockPin._set_function = _journal_function


class _BollardFactory(ClockedMockFactory):  # type: ignore[misc]
    def __init__(self, clock: Any, revision: str | None = None) -> None:
        super().__init__(clock, revision)
        journaled("bollard", self)


bollard_sim.ClockedMockFactory = _BollardFactory  # the simulated bollard's own factory


def up_closed_schedule() -> link_pb2.DesiredDocument:
    payload = schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="closed",
                points=[
                    schedule_pb2.SwitchPoint(
                        local_time="00:00",
                        bollard=schedule_pb2.BollardSetting(
                            position=schedule_pb2.BOLLARD_POSITION_UP,
                            access=schedule_pb2.ACCESS_POLICY_CLOSED,
                        ),
                    )
                ],
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="closed", priority=1)],
    ).SerializeToString()
    return link_pb2.DesiredDocument(
        kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
        version=1,
        digest=hashlib.sha256(payload).digest(),
        payload=payload,
    )


async def main(config_path: Path) -> None:
    config = AgentConfig.load(config_path)
    clock = make_clock(config)
    agent = Agent(config, clock, pin_factory=journaled("lamp", clocked_pwm_factory(clock)))
    assert await agent.accept_document(up_closed_schedule()) == ""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    print("READY", flush=True)
    try:
        await agent.run()
    except asyncio.CancelledError:
        write("stopped")


if __name__ == "__main__":
    JOURNAL_FD = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    asyncio.run(main(Path(sys.argv[1])))
