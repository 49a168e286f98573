"""Real pins: a lamp relay driven by the agent, read back through a wire, on every factory.

The shape of gpiozero's own real-hardware tests: two GPIOs wired together, a lock file so
two benches never share the rig, and the test parametrised over every gpiozero pin
factory, skipped with the reason where one does not load. The pins come from the bench
inventory: the agent drives the first lamp of the inventory, whose relay output a
``[[loopback]]`` wire brings back to a bench input: dark before dusk, lit after. The relay
is wired normally closed (the default), so the wire reads the coil: high (energised, the
lamp dark) before dusk, low (at rest, the lamp lit) after.

- On a hardware factory (lgpio, rpigpio, pigpio, native) the agent is the real process,
  ``ondijon edge run`` on that factory, standalone under a simulated clock, its lamp on
  the inventory's pins. Nothing runs unless the inventory is named (``ONDIJON_BENCH`` or
  ``--bench``): a developer's ``pytest`` on a gateway in service never drives its pins
  from the example file.
- On the mock factory, whose pins live in one process, the agent runs in-process and a
  :class:`~edge.equipment.sim.lantern.MockLantern` on normally-open contacts plays the wire
  from the relay to the probe (its sense input follows the coil).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from agent_process import spawn_agent
from street import LampPins, agent_toml, document, hold_documents, street, sun_event

from domain.schedule.model import SunEvent
from edge.bench.inventory import Inventory
from edge.bench.rig import hold_lock
from edge.equipment.sim.lantern import MockLantern
from protos.ondijon.v1 import link_pb2, schedule_pb2

FACTORIES = ("mock", "lgpio", "rpigpio", "pigpio", "native")

SUNSET = sun_event(datetime(2026, 6, 21, 12, 0, tzinfo=UTC), SunEvent.SUNSET)
SCHEDULE = document(
    link_pb2.DOCUMENT_KIND_SCHEDULE,
    schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="night",
                points=[
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_SUNSET, lamp_level=100
                    ),
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_SUNRISE, lamp_level=0
                    ),
                ],
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="night", priority=1)],
    ),
)


def wired_lamp(inventory: Inventory) -> tuple[LampPins, str] | None:
    """The inventory's first lamp whose relay a loop-back wire reads, and that probe pin."""
    for lamp in inventory.lamps:
        probe = inventory.probe(f"lamps.{lamp.id}.relay")
        if probe is not None:
            pins = (inventory.pin(f"lamps.{lamp.id}.{k}") for k in ("relay", "pwm", "sense"))
            return LampPins(lamp.id, *pins), probe
    return None


@pytest.fixture(params=FACTORIES)
def pin_factory(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    """Every gpiozero pin factory that loads here, by name."""
    name: str = request.param
    found = [ep for ep in entry_points(group="gpiozero_pin_factories") if ep.name == name]
    if not found:
        pytest.skip(f"gpiozero has no pin factory named {name}")
    try:
        factory = found[0].load()()
    except Exception as exc:
        pytest.skip(f"pin factory {name} does not load here: {type(exc).__name__}: {exc}")
    try:
        yield name, factory
    finally:
        factory.close()


def test_the_lamp_relay_follows_dusk_on_wired_pins(
    pin_factory: tuple[str, Any],
    tmp_path: Path,
    inventory: Inventory,
    request: pytest.FixtureRequest,
) -> None:
    """The lamp relay's coil read back through a wire: energised by day, at rest from dusk."""
    name, factory = pin_factory
    rig = wired_lamp(inventory)
    if rig is None:
        pytest.skip("no [[loopback]] wire reads a lamp's relay in the bench inventory")
    named = request.config.getoption("--bench") or os.environ.get("ONDIJON_BENCH")
    if name != "mock" and not named:
        pytest.skip(
            f"{name} loads: name the rig's inventory (ONDIJON_BENCH=bench.toml) with a "
            "[[loopback]] wire from a lamp's relay to a free GPIO to drive real pins"
        )
    lamp, into = rig
    if name == "mock":
        asyncio.run(in_process(factory, lamp, into, tmp_path, inventory))
        return
    with hold_lock(Path(inventory.bench.lock_file), inventory.bench.lock_wait_s):
        real_process(name, factory, lamp, into, tmp_path)


async def in_process(
    factory: Any, lamp: LampPins, into: str, tmp_path: Path, inventory: Inventory
) -> None:
    """The mock factory: the agent in-process, a wire from OUT to IN on its pins."""
    del factory  # the clocked mock pins replace it: same class, timed by the agent's clock
    start = SUNSET - timedelta(minutes=2)
    async with street(
        tmp_path, inventory, start=start, kinds=["lamps"], documents=[SCHEDULE]
    ) as bench:
        # A wire copies the coil's level: a lantern on normally-open contacts does the same.
        MockLantern(bench.pins, relay_pin=lamp.relay, sense_pin=into, relay_wiring="normally_open")
        lantern = bench.lanterns[lamp.device_id]
        reading = bench.pins.pin(into)
        await bench.run_until(SUNSET - timedelta(seconds=1))
        assert reading.state and not lantern.lit  # coil energised: dark
        await bench.run_until(SUNSET + timedelta(seconds=2))
        assert not reading.state and lantern.lit  # coil at rest: lit


def real_process(name: str, factory: Any, lamp: LampPins, into: str, tmp_path: Path) -> None:
    """A hardware factory: ``ondijon edge run`` drives OUT, the bench reads IN."""
    reading = factory.pin(into)
    reading.function = "input"
    reading.pull = "down"
    speed, lead_s = 60.0, 300.0  # dusk comes 5 s after the agent's clock starts
    state_dir = tmp_path / "agent"
    hold_documents(state_dir, [SCHEDULE])
    start = SUNSET - timedelta(seconds=lead_s)
    clock = f'[clock]\nmode = "simulated"\nstart = "{start.isoformat()}"\nspeed = {speed}\n'
    config = tmp_path / "agent.toml"
    config.write_text(agent_toml(state_dir, lamps=[lamp], clock=clock))
    spawned = time.monotonic()
    agent = spawn_agent(config, state_dir, pin_factory=name)
    samples: list[tuple[float, bool]] = []
    try:
        ready = agent.wait_ready()
        while time.monotonic() < ready + lead_s / speed + 10:
            samples.append((time.monotonic(), bool(reading.state)))
            if not samples[-1][1]:
                break
            time.sleep(0.01)  # sampling the wire, the agent keeps its own time
    finally:
        code = agent.stop()
        reading.close()
    assert code == 0, agent.tail()
    # The coil energised (the lamp dark) by day, at rest (lit) from dusk.
    assert samples and samples[0][1], "IN was low (the lamp lit) before dusk"
    lit = [t for t, high in samples if not high]
    assert lit, f"the coil was never released at dusk: {agent.tail()}"
    # Not before dusk on the agent's clock (which starts after the spawn), nor long after.
    assert lit[0] - spawned >= lead_s / speed - 0.5
    assert lit[0] - ready <= lead_s / speed + 3.0
