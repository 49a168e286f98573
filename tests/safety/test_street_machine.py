"""Random interleavings against the whole agent driving a lamp on gpiozero mock pins.

The agent (its supervisor, schedule loop, monitor and link with no orchestrator) drives a
gpio lamp on clocked mock pins; a mock lantern behind the relay and sense pins plays the
street. Hypothesis picks a site (Dijon, Reykjavik, Tromsø), a start in 2026, a
dusk-to-dawn program or none, a light sensor or none, a clock trusted from the start or
not, then interleaves time passing, wall-clock steps both ways (minutes to days), agent
restarts, light readings and the clock's synchronisation. The invariant is checked on the
pins, 11 s after every step (the agent looks at its clocks every 10 s) and every 10 s of
waiting: whenever an independent reference (astral's NOAA Sun) puts the Sun below the
program's threshold, the lamp is lit (relay closed, dimming above 0), and so is it while
the clock is untrusted unless a light sensor reads daylight.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import astral
import pytest
from astral.sun import elevation
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain.schedule.model import Site
from edge.agent import Agent
from edge.config import AgentConfig
from edge.equipment.sim.cabinet import SimulatedCabinet
from edge.equipment.sim.lantern import MockLantern, clocked_pwm_factory
from foundation.clock import ManualClock
from protos.ondijon.v1 import link_pb2, schedule_pb2
from tests.safety.conftest import TIMEOUT_S, explore, tally
from tests.safety.machines import drain

SITES = {
    "dijon": Site(47.32, 5.04, "Europe/Paris"),
    "reykjavik": Site(64.15, -21.94, "Atlantic/Reykjavik"),
    "tromso": Site(69.65, 18.96, "Europe/Oslo"),
}
THRESHOLD = {"horizon": -34 / 60 - 16 / 60, "civil": -6.0}  # centre altitude, degrees
MARGIN = 0.1
DARK_LUX, BRIGHT_LUX = 5.0, 20000.0
RELAY, PWM, SENSE = 17, 18, 27
TICK = 10.0


class FakeSync:
    def __init__(self, synchronized: bool) -> None:
        self.now = synchronized

    def synchronized(self) -> bool:
        return self.now


def program(kind: str, on_offset: int, off_offset: int, dim: bool) -> bytes:
    on_event = (
        schedule_pb2.SUN_EVENT_SUNSET if kind == "horizon" else schedule_pb2.SUN_EVENT_CIVIL_DUSK
    )
    off_event = (
        schedule_pb2.SUN_EVENT_SUNRISE if kind == "horizon" else schedule_pb2.SUN_EVENT_CIVIL_DAWN
    )
    points = [
        schedule_pb2.SwitchPoint(sun_event=on_event, offset_minutes=on_offset, lamp_level=100),
        schedule_pb2.SwitchPoint(sun_event=off_event, offset_minutes=off_offset, lamp_level=0),
    ]
    if dim:
        points.append(schedule_pb2.SwitchPoint(local_time="23:00", lamp_level=30))
    return schedule_pb2.Schedule(
        programs=[schedule_pb2.Program(id="night", points=points)],
        rules=[schedule_pb2.CalendarRule(program_id="night", priority=1)],
    ).SerializeToString()


class StreetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.TemporaryDirectory()
        self.agent: Agent | None = None
        self.task: asyncio.Task[None] | None = None

    @initialize(
        site=st.sampled_from(list(SITES)),
        day=st.integers(0, 364),
        hour=st.floats(0, 24),
        schedule=st.sampled_from(["none", "horizon", "civil"]),
        on_offset=st.integers(-30, 0),
        off_offset=st.integers(0, 30),
        dim=st.booleans(),
        sensor=st.booleans(),
        trusted=st.booleans(),
    )
    def commission(
        self,
        site: str,
        day: int,
        hour: float,
        schedule: str,
        on_offset: int,
        off_offset: int,
        dim: bool,
        sensor: bool,
        trusted: bool,
    ) -> None:
        self.site = SITES[site]
        start = datetime(2026, 1, 1, tzinfo=self.site.zone) + timedelta(days=day, hours=hour)
        self.clock = ManualClock(start)
        self.factory = clocked_pwm_factory(self.clock)
        self.lantern = MockLantern(self.factory, relay_pin=RELAY, sense_pin=SENSE)
        self.sync = FakeSync(trusted)
        self.threshold = "civil" if schedule == "civil" else "horizon"
        self.sensor = sensor
        self.lux: float | None = None
        self.config = self._config()
        self._start()
        if schedule != "none":
            payload = program(schedule, on_offset, off_offset, dim)
            refused = self.loop.run_until_complete(
                self._agent().accept_document(
                    link_pb2.DesiredDocument(
                        kind=link_pb2.DOCUMENT_KIND_SCHEDULE,
                        version=1,
                        digest=hashlib.sha256(payload).digest(),
                        payload=payload,
                    )
                )
            )
            assert refused == ""
        self.react()

    def _config(self) -> AgentConfig:
        root = Path(self.dir.name)
        (root / "root.pem").write_text("")
        cabinet = '[cabinet]\nid = "cabinet"\nbackend = "simulated"\n' if self.sensor else ""
        path = root / "agent.toml"
        path.write_text(
            f"""[gateway]
id = "street-1"
serial = "SN-street-1"
state_dir = "{root / "state"}"
[orchestrator]
address = "127.0.0.1:9"
ca_file = "{root / "root.pem"}"
[site]
latitude = {self.site.latitude}
longitude = {self.site.longitude}
time_zone = "{self.site.time_zone}"
[[lamps]]
id = "lamp-1"
backend = "gpio"
nominal_power_w = 60
relay_pin = {RELAY}
pwm_pin = {PWM}
sense_pin = {SENSE}
{cabinet}"""
        )
        return AgentConfig.load(path)

    def _agent(self) -> Agent:
        assert self.agent is not None
        return self.agent

    def _start(self) -> None:
        self.agent = Agent(self.config, self.clock, pin_factory=self.factory, clock_sync=self.sync)
        if self.agent.cabinet is not None:
            assert isinstance(self.agent.cabinet.driver, SimulatedCabinet)
            self.agent.cabinet.driver.lux = self.lux
        self.task = self.loop.create_task(self.agent.run())
        drain(self.loop)

    def _stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            drain(self.loop)
            self.task = None

    def teardown(self) -> None:
        self._stop()
        if hasattr(self, "factory"):
            self.factory.reset()
        self.loop.close()
        self.dir.cleanup()

    # -- the pins ------------------------------------------------------------------------------

    def react(self) -> None:
        """Let 11 s pass (the agent looks at its clocks every 10 s), checking as it goes."""
        for _ in range(11):
            self.clock.advance(1)
            drain(self.loop)
        self.check()

    def check(self) -> None:
        observer = astral.Observer(self.site.latitude, self.site.longitude)
        sun = elevation(observer, self.clock.now(), with_refraction=False)
        dark = sun < THRESHOLD[self.threshold] - MARGIN
        lit = self.lantern.relay_closed and self.factory.pin(PWM).state > 0
        if not self.sync.now:
            # Untrusted time: the sensor decides where there is one, else the default.
            if self.lux is None or self.lux < 35:
                assert lit, f"dark street with the time unknown (lux {self.lux})"
            return
        if dark and (not self.sensor or self.lux is None or self.lux < 35):
            local = self.clock.now().astimezone(self.site.zone)
            assert lit, f"lamp off at {local} with the Sun at {sun:.2f} degrees"

    @invariant()
    def count(self) -> None:
        tally("street").steps += 1

    # -- rules -----------------------------------------------------------------------------

    @rule(minutes=st.sampled_from([1, 10, 45, 180]))
    def wait(self, minutes: int) -> None:
        for _ in range(round(minutes * 60 / TICK)):
            self.clock.advance(TICK)
            drain(self.loop)
            self.check()

    @rule(
        seconds=st.sampled_from([-2 * 86400, -11 * 3600, -3600, -600, 600, 3600, 11 * 3600, 86400])
        | st.floats(-3 * 86400, 3 * 86400)
    )
    def wall_step(self, seconds: float) -> None:
        self.clock.step_wall(seconds)
        self.react()

    @rule()
    def restart(self) -> None:
        self._stop()
        self._start()
        self.react()

    @rule(lux=st.sampled_from([None, DARK_LUX, BRIGHT_LUX]))
    def light(self, lux: float | None) -> None:
        self.lux = lux if self.sensor else None
        agent = self._agent()
        if agent.cabinet is not None:
            assert isinstance(agent.cabinet.driver, SimulatedCabinet)
            agent.cabinet.driver.lux = self.lux
        # The monitor reads the sensor every 30 s.
        for _ in range(4):
            self.clock.advance(TICK)
            drain(self.loop)
        self.react()

    @rule()
    def synchronised(self) -> None:
        self.sync.now = True
        self.react()


@pytest.mark.timeout(TIMEOUT_S)
def test_street_lighting_under_random_interleavings() -> None:
    explore("street", lambda: StreetMachine, examples=30, steps=12)
