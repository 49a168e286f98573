"""The bench's street for the mock pin factory: the real agent on the inventory's pins.

gpiozero's mock pins live inside one process, so on the mock factory the bench runs the
real :class:`~edge.agent.Agent` in-process, built from an agent TOML exactly as ``ondijon
edge run`` builds it, made from the bench inventory (``ONDIJON_BENCH``, default
examples/bench.toml: lamps, bollards and the cabinet on the gpio backend with the
inventory's pins, crossings on the simulated controller with its heads on them), on one
:func:`~edge.equipment.sim.lantern.clocked_pwm_factory` and a
:class:`~foundation.clock.ManualClock`. :class:`edge.bench.street.SimulatedStreet` plays the
street behind the pins (lanterns, posts, cars on the loop, the cabinet) and injects faults;
the bench checks what the *pins* did, timed in the agent's own seconds, and each scenario's
measurements, faults, alarms and pin trace go to its :class:`~edge.bench.report.Record`.

The agent holds its documents on disk, as after an earlier sync, and its orchestrator is
unreachable (it has no certificate): everything here is the agent running on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from domain.schedule.astronomy import sun_day
from domain.schedule.model import Site, SunEvent
from edge.agent import Agent
from edge.bench.inventory import Inventory, agent_equipment, subset, to_toml
from edge.bench.report import Record, pin_events
from edge.bench.street import Lantern, SimulatedStreet
from edge.config import AgentConfig
from edge.equipment.sim.bollard import BollardPost, ClockedMockFactory, ClockedMockPin
from edge.equipment.sim.crossing import SimulatedSignalController
from edge.equipment.sim.lantern import clocked_pwm_factory
from edge.storage.state import AgentState
from foundation.clock import ManualClock
from protos.ondijon.v1 import link_pb2

SITE = Site(latitude=47.322, longitude=5.0415, time_zone="Europe/Paris")
"""Dijon, place Darcy."""


@dataclass(frozen=True)
class LampPins:
    """One gpio lamp's pins: BCM numbers or gpiozero names (``"GPIO17"``)."""

    device_id: str
    relay: int | str
    pwm: int | str
    sense: int | str


def sun_event(day: datetime, which: SunEvent) -> datetime:
    """When ``which`` happens at the bench's site on ``day``'s local date (UTC)."""
    local = day.astimezone(SITE.zone).date()
    when = sun_day(SITE, local).event(which)
    assert when is not None, f"no {which} at the site on {local}"
    return when


def document(kind: link_pb2.DocumentKind.ValueType, message: Message) -> link_pb2.DesiredDocument:
    """A desired-state document as the orchestrator sends it (version 1)."""
    payload = message.SerializeToString()
    return link_pb2.DesiredDocument(
        kind=kind, version=1, digest=hashlib.sha256(payload).digest(), payload=payload
    )


def agent_toml(
    state_dir: Path,
    *,
    address: str = "127.0.0.1:9",
    lamps: Sequence[LampPins] = (),
    equipment: str = "",
    clock: str = "",
) -> str:
    """An agent configuration for the bench: gpio lamps on ``lamps``, plus ``equipment``."""
    tables = [
        f'[[lamps]]\nid = "{lamp.device_id}"\nbackend = "gpio"\nnominal_power_w = 60\n'
        f"relay_pin = {lamp.relay}\npwm_pin = {lamp.pwm}\nsense_pin = {lamp.sense}\n"
        for lamp in lamps
    ]
    return (
        f'[gateway]\nid = "hil-bench"\nserial = "SN-HIL-0001"\nstate_dir = "{state_dir}"\n\n'
        f'[orchestrator]\naddress = "{address}"\nca_file = "{state_dir / "root.pem"}"\n\n'
        f"[site]\nlatitude = {SITE.latitude}\nlongitude = {SITE.longitude}\n"
        f'time_zone = "{SITE.time_zone}"\n\n{clock}\n' + "\n".join(tables) + "\n" + equipment
    )


def hold_documents(state_dir: Path, documents: Iterable[link_pb2.DesiredDocument]) -> None:
    """Store documents in the agent's state, as a previous sync with the orchestrator did."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with AgentState(state_dir / "state.json") as state:
        for held in documents:
            state.accept_document(held)


async def settle() -> None:
    """Let every task the last clock step woke run to its next wait."""
    for _ in range(8):
        await asyncio.sleep(0)


def inventory_toml(state_dir: Path, inventory: Inventory, clock: str = "") -> str:
    """An agent configuration for the bench's equipment (see :func:`agent_equipment`)."""
    base = agent_toml(state_dir, clock=clock)
    return base + "\n" + to_toml(agent_equipment(inventory))


@dataclass
class Street:
    """A running agent, its clock, its pins and the street behind them."""

    agent: Agent
    clock: ManualClock
    pins: ClockedMockFactory
    street: SimulatedStreet
    inventory: Inventory
    record: Record
    task: asyncio.Task[None]
    _events: list[link_pb2.Event] = field(default_factory=list)

    @property
    def lanterns(self) -> dict[str, Lantern]:
        return self.street.lanterns

    async def run_until(self, when: datetime, step_s: float = 1.0) -> None:
        """Move the agent's clock to ``when`` in steps, letting it act at every step."""
        await settle()
        while self.clock.now() < when:
            remaining = (when - self.clock.now()).total_seconds()
            self.clock.advance(min(step_s, remaining))
            await settle()
            if self.task.done() and not self.task.cancelled():
                self.task.result()  # an agent that crashed fails the test here

    async def run_for(self, seconds: float, step_s: float = 1.0) -> None:
        """Move the agent's clock ``seconds`` forward (see :meth:`run_until`)."""
        await self.run_until(self.clock.now() + timedelta(seconds=seconds), step_s)

    def events(self, type_: str | None = None) -> list[link_pb2.Event]:
        """Every event the agent put in its outbox so far (of ``type_``), in order.

        The outbox is what the control centre gets: reading it, not the controllers'
        memory, checks that a fault would be reported.
        """
        self._events += self.agent.outbox.next_batch(10_000, 1 << 30)
        ordered = sorted(self._events, key=lambda e: e.sequence)
        return [e for e in ordered if type_ is None or e.type == type_]

    def alarms(self) -> list[link_pb2.Event]:
        """The ALARM-priority events so far."""
        return [e for e in self.events() if e.priority == link_pb2.EVENT_PRIORITY_ALARM]

    def pin(self, line: str) -> ClockedMockPin:
        """The mock pin of inventory line ``line`` (``bollards.<id>.motor_up``)."""
        pin: ClockedMockPin = self.pins.pin(self.inventory.pin(line))
        return pin

    def inject(self, fault: str, target: str, detail: str = "") -> datetime:
        """Inject ``fault`` on ``target`` (:data:`edge.bench.street.FAULTS`); its time."""
        injected = self.street.inject(fault, target, detail)
        self.record.faults.append(
            {"at": injected.at.isoformat(), "fault": fault, "target": target, "detail": detail}
        )
        return injected.at

    def measure(self, name: str, value: float, **limits: Any) -> None:
        """Record a measurement with its limits; out of them fails the scenario."""
        self.record.measure(name, value, **limits)

    def bollard(self, index: int = 0) -> BollardPost:
        """The post the street plays behind the ``index``-th bollard's pins."""
        return self.street.posts[self.inventory.bollards[index].id]

    def crossing(self, index: int = 0) -> SimulatedSignalController:
        """The simulated signal controller the agent's ``index``-th controller talks to."""
        driver = self.agent.signals[index]._driver
        assert isinstance(driver, SimulatedSignalController)
        return driver

    async def stop_agent(self) -> None:
        """Stop the agent as SIGTERM does (its tasks cancelled, lamps closed)."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@contextlib.asynccontextmanager
async def street(
    tmp_path: Path,
    inventory: Inventory,
    *,
    start: datetime,
    kinds: Sequence[str],
    documents: Iterable[link_pb2.DesiredDocument] = (),
    record: Record | None = None,
) -> AsyncIterator[Street]:
    """Run the agent on the ``kinds`` of equipment of ``inventory`` from ``start`` on.

    The scenario's pin trace and the alarms it raised go to ``record`` at the end.
    """
    wired = subset(inventory, kinds)
    state_dir = tmp_path / "agent"
    hold_documents(state_dir, documents)
    path = tmp_path / "agent.toml"
    path.write_text(inventory_toml(state_dir, wired))
    config = AgentConfig.load(path)
    clock = ManualClock(start)
    pins = clocked_pwm_factory(clock)
    began = clock.monotonic()
    simulated = SimulatedStreet.build(wired, clock, pins, bollards=config.bollards)
    agent = Agent(config, clock, pin_factory=pins)
    simulated.attach({s.device_id: s._driver for s in agent.signals})
    simulated.start()
    task = asyncio.create_task(agent.run(), name="agent")
    record = record if record is not None else Record(scenario="street")
    record.started = start.isoformat()
    running = Street(agent, clock, pins, simulated, wired, record, task)
    await settle()
    try:
        yield running
    finally:
        if not task.done():  # the outbox is the agent's: read it before it closes
            record.alarms = [
                {
                    "at": e.at.ToDatetime(tzinfo=UTC).isoformat(),
                    "type": e.type,
                    "device": e.device_id,
                }
                for e in running.alarms()
            ]
        await running.stop_agent()
        await simulated.stop()
        record.trace = pin_events(pins.history, began, wired.line_of)
        pins.close()
