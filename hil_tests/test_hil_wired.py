"""Real pins: a lamp relay driven by the agent, read back through a wire, on every factory.

The shape of gpiozero's own real-hardware tests: two GPIOs wired together, named by
environment variables, a lock file so two benches never share the rig, and the test
parametrised over every gpiozero pin factory, skipped with the reason where one does not
load. The agent drives a lamp whose relay output is ``ONDIJON_HIL_OUT``; the bench reads
``ONDIJON_HIL_IN``: dark before dusk, lit after. The relay is wired normally closed (the
default), so the wire reads the coil: high (energised, the lamp dark) before dusk, low (at
rest, the lamp lit) after.

- On a hardware factory (lgpio, rpigpio, pigpio, native) the agent is the real process,
  ``ondijon edge run`` on that factory, standalone under a simulated clock; its lamp's
  dimming and sense lines take the two free GPIOs of ``ONDIJON_HIL_SPARE``. Nothing runs
  unless ``ONDIJON_HIL_OUT`` and ``ONDIJON_HIL_IN`` are set: a developer's ``pytest`` on a
  gateway in service never drives its pins.
- On the mock factory, whose pins live in one process, the agent runs in-process and a
  :class:`~edge.equipment.sim.lantern.MockLantern` on normally-open contacts plays the wire
  from OUT to IN (its sense input follows the coil).
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
from edge.equipment.sim.lantern import MockLantern
from protos.ondijon.v1 import link_pb2, schedule_pb2

FACTORIES = ("mock", "lgpio", "rpigpio", "pigpio", "native")
LOCK = Path(os.environ.get("ONDIJON_HIL_LOCK", "/tmp/ondijon_hil_lock"))
LOCK_WAIT_S = 300.0

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


def _pin(value: str) -> int | str:
    # "17" is a BCM number for gpiozero, "GPIO17" or "BOARD11" a name.
    return int(value) if value.isdigit() else value


def wired_lamp(*, hardware: bool) -> tuple[LampPins, int | str] | None:
    """The lamp on the rig (relay on OUT) and the IN pin; None when the rig is not named."""
    out, into = os.environ.get("ONDIJON_HIL_OUT"), os.environ.get("ONDIJON_HIL_IN")
    spare = os.environ.get("ONDIJON_HIL_SPARE", "")
    if hardware and not (out and into and len(spare.split(",")) == 2):
        return None
    pwm, sense = (spare or "23,24").split(",")
    lamp = LampPins("lamp-1", _pin(out or "22"), _pin(pwm.strip()), _pin(sense.strip()))
    return lamp, _pin(into or "27")


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


def take_lock() -> None:
    """Wait for the rig (an exclusive lock file), as gpiozero's real-pin tests do."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fd = os.open(LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if time.monotonic() > deadline:
                raise AssertionError(f"the rig stayed locked by {LOCK}") from None
            time.sleep(0.1)  # another bench holds the rig
            continue
        with os.fdopen(fd, "w") as lock:
            lock.write("ondijon hil_tests on real pins; delete if no bench is running\n")
        return


def test_the_lamp_relay_follows_dusk_on_wired_pins(
    pin_factory: tuple[str, Any], tmp_path: Path
) -> None:
    name, factory = pin_factory
    rig = wired_lamp(hardware=name != "mock")
    if rig is None:
        pytest.skip(
            f"{name} loads: set ONDIJON_HIL_OUT and ONDIJON_HIL_IN to two GPIOs wired "
            "together and ONDIJON_HIL_SPARE to two free GPIOs (e.g. GPIO23,GPIO24)"
        )
    lamp, into = rig
    if name == "mock":
        asyncio.run(in_process(factory, lamp, into, tmp_path))
        return
    take_lock()
    try:
        real_process(name, factory, lamp, into, tmp_path)
    finally:
        LOCK.unlink()


async def in_process(factory: Any, lamp: LampPins, into: int | str, tmp_path: Path) -> None:
    """The mock factory: the agent in-process, a wire from OUT to IN on its pins."""
    del factory  # the clocked mock pins replace it: same class, timed by the agent's clock
    start = SUNSET - timedelta(minutes=2)
    async with street(tmp_path, start=start, lamps=[lamp], documents=[SCHEDULE]) as bench:
        # A wire copies the coil's level: a lantern on normally-open contacts does the same.
        MockLantern(bench.pins, relay_pin=lamp.relay, sense_pin=into, relay_wiring="normally_open")
        lantern = bench.lanterns[lamp.device_id]
        reading = bench.pins.pin(into)
        await bench.run_until(SUNSET - timedelta(seconds=1))
        assert reading.state and not lantern.lit  # coil energised: dark
        await bench.run_until(SUNSET + timedelta(seconds=2))
        assert not reading.state and lantern.lit  # coil at rest: lit


def real_process(name: str, factory: Any, lamp: LampPins, into: int | str, tmp_path: Path) -> None:
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
