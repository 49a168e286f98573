"""The agent under clock steps, an untrusted clock, failing controllers and restarts
(issue 9: items 1, 3, 5, 8 and 10 as the agent runs them).

The agent runs whole (``Agent.run``: its supervisor, schedule loop, controllers and link,
the link finding no orchestrator) on a manual clock whose wall reading a test steps both
ways while monotonic time runs on.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from domain.schedule.evaluator import evaluate
from domain.schedule.model import DeviceKind, Site
from domain.schedule.wire import schedule_from_proto
from edge.agent import Agent
from edge.equipment.bollard.rules import Mode, Phase
from edge.equipment.sim.bollard import SimulatedBollard
from edge.equipment.sim.cabinet import SimulatedCabinet
from edge.events import EquipmentEvent, Priority
from edge.firmware.simulator import ReleaseSimulator
from edge.identity import Credentials
from foundation.clock import ManualClock
from protos.ondijon.v1 import firmware_pb2, link_pb2, schedule_pb2, signal_pb2
from tests.conftest import offline_agent_config

DIJON = Site(47.322, 5.0415, "Europe/Paris")
NOON = datetime(2026, 6, 21, 10, 0, tzinfo=UTC)  # 12:00 in Dijon
LAMP = '[[lamps]]\nid = "lamp-1"\nbackend = "simulated"\nnominal_power_w = 60\n'
BOLLARD = '[[bollards]]\nid = "{id}"\nbackend = "simulated"\n'
CABINET = '[cabinet]\nid = "cabinet"\nbackend = "simulated"\n'
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


class FakeSync:
    """The clock-synchronisation port, set by the test."""

    def __init__(self, synchronized: bool) -> None:
        self.synchronized_now = synchronized

    def synchronized(self) -> bool:
        return self.synchronized_now


def document(kind: int, payload: bytes, version: int = 1) -> link_pb2.DesiredDocument:
    return link_pb2.DesiredDocument(
        kind=kind,  # type: ignore[arg-type]
        version=version,
        digest=hashlib.sha256(payload).digest(),
        payload=payload,
    )


def evening_program() -> schedule_pb2.Schedule:
    """On at civil dusk, 50 % from 23:00 local, off at sunrise: sun and wall-clock points."""
    return schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="evening",
                points=[
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_CIVIL_DUSK, lamp_level=100
                    ),
                    schedule_pb2.SwitchPoint(local_time="23:00", lamp_level=50),
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_SUNRISE, lamp_level=0
                    ),
                ],
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="evening", priority=1)],
    )


class Street:
    """One agent running on its own, on a manual clock."""

    def __init__(
        self, tmp_path: Path, start: datetime, equipment: str, sync: FakeSync | None = None
    ) -> None:
        self.tmp_path = tmp_path
        self.clock = ManualClock(start)
        self.equipment = equipment
        self.sync = sync
        self.events: list[EquipmentEvent] = []
        self.task: asyncio.Task[None] | None = None
        self.agent = self._agent()

    def _agent(self) -> Agent:
        config = offline_agent_config(self.tmp_path, "street-1", self.equipment)
        agent = Agent(config, self.clock, clock_sync=self.sync)
        recorded = agent.record

        def record(event: EquipmentEvent) -> None:
            self.events.append(event)
            recorded(event)

        agent.record = record  # type: ignore[method-assign]
        return agent

    async def start(self) -> None:
        self.task = asyncio.create_task(self.agent.run())
        await self.settle()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def restart(self) -> None:
        """The agent process restarts on the same state directory."""
        await self.stop()
        self.agent = self._agent()
        await self.start()

    @staticmethod
    async def settle() -> None:
        for _ in range(30):
            await asyncio.sleep(0)

    async def run_for(self, seconds: float, tick: float = 1.0) -> None:
        await self.settle()
        for _ in range(round(seconds / tick)):
            self.clock.advance(tick)
            await self.settle()

    def lamp(self) -> int:
        return self.agent.lamps[0].controller.level

    def of_type(self, type_: str) -> list[EquipmentEvent]:
        return [e for e in self.events if e.type == type_]

    def bollard_sim(self, device_id: str) -> SimulatedBollard:
        bollard = next(b for b in self.agent.bollards if b.device_id == device_id)
        assert isinstance(bollard.driver, SimulatedBollard)
        return bollard.driver


@pytest.fixture
async def lamps_at_noon(tmp_path: Path) -> AsyncIterator[Street]:
    street = Street(tmp_path, NOON, LAMP)
    await street.start()
    yield street
    await street.stop()


# -- item 1: a wall-clock step is noticed at once -------------------------------------------


async def test_a_step_of_eleven_hours_at_noon_lights_the_street_within_seconds(
    lamps_at_noon: Street,
) -> None:
    street = lamps_at_noon
    assert street.lamp() == 0
    street.clock.step_wall(11 * HOUR)  # NTP corrects a board without RTC: 23:00 now
    await street.run_for(10)
    assert street.lamp() == 100, "dark street: the agent slept on until its old sunset"
    (step,) = street.of_type("clock.step")
    assert float(step.attributes["step_s"]) == pytest.approx(11 * HOUR, abs=11)
    assert step.priority is Priority.EVENT


STEPS = [
    # (start UTC, step): across dusk, dawn, both DST nights; minutes, hours and days.
    (datetime(2026, 1, 15, 15, 0, tzinfo=UTC), +20 * MINUTE),  # into dusk
    (datetime(2026, 1, 15, 16, 0, tzinfo=UTC), -40 * MINUTE),  # back before dusk
    (datetime(2026, 1, 16, 6, 45, tzinfo=UTC), +1 * HOUR),  # past dawn
    (datetime(2026, 1, 16, 8, 30, tzinfo=UTC), -2 * HOUR),  # back into the night
    (datetime(2026, 6, 21, 10, 0, tzinfo=UTC), +3 * DAY + 11 * HOUR),  # days ahead, at night
    (datetime(2026, 6, 21, 22, 0, tzinfo=UTC), -2 * DAY - 10 * HOUR),  # days back, at noon
    (datetime(2026, 3, 29, 0, 30, tzinfo=UTC), +1 * HOUR),  # spring-forward night
    (datetime(2026, 3, 28, 20, 50, tzinfo=UTC), +2 * HOUR + 20 * MINUTE),  # over 23:00 local
    (datetime(2026, 10, 25, 1, 30, tzinfo=UTC), -1 * HOUR),  # autumn night, the hour twice
    (datetime(2026, 10, 24, 21, 30, tzinfo=UTC), -30 * MINUTE),  # back over 23:00 local
    (
        datetime(1970, 1, 1, 0, 0, tzinfo=UTC),
        (NOON - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds(),
    ),
]


@pytest.mark.parametrize("with_program", [False, True], ids=["default", "program"])
@pytest.mark.parametrize(("start", "step"), STEPS)
async def test_after_a_step_the_lamps_show_what_the_new_time_says(
    tmp_path: Path, start: datetime, step: float, with_program: bool
) -> None:
    street = Street(tmp_path, start, LAMP)
    schedule = None
    if with_program:
        message = evening_program()
        payload = message.SerializeToString()
        accepted = await street.agent.accept_document(
            document(link_pb2.DOCUMENT_KIND_SCHEDULE, payload)
        )
        assert accepted == ""
        schedule = schedule_from_proto(message)
    await street.start()
    try:
        await street.run_for(5)
        street.clock.step_wall(step)
        await street.run_for(10)
        now = street.clock.now()
        wanted = evaluate(schedule, DIJON, now, kind=DeviceKind.LAMP, device_id="lamp-1")
        assert street.lamp() == wanted.lamp_level, (now.astimezone(DIJON.zone), wanted)
        assert len(street.of_type("clock.step")) == 1
    finally:
        await street.stop()


async def test_until_the_clock_is_trusted_lamps_are_on_without_a_sensor(tmp_path: Path) -> None:
    sync = FakeSync(False)
    street = Street(tmp_path, NOON, LAMP, sync=sync)
    await street.start()
    try:
        await street.run_for(5)
        assert street.lamp() == 100  # noon by the board's guess, but the time is unknown
        assert street.agent.lamps[0].controller.state().source == "default"
        assert street.of_type("clock.untrusted")
        sync.synchronized_now = True
        await street.run_for(11)
        assert street.lamp() == 0  # the time is known: noon, lamps off
        assert street.of_type("clock.trusted")
    finally:
        await street.stop()


async def test_until_the_clock_is_trusted_lamps_follow_the_light_sensor(tmp_path: Path) -> None:
    sync = FakeSync(False)
    street = Street(tmp_path, NOON, LAMP + CABINET, sync=sync)
    cabinet = street.agent.cabinet
    assert cabinet is not None and isinstance(cabinet.driver, SimulatedCabinet)
    cabinet.driver.lux = 20000.0
    await street.start()
    try:
        await street.run_for(40)
        assert street.lamp() == 0  # broad daylight by the sensor
        cabinet.driver.lux = 5.0  # night, whatever the clock says
        await street.run_for(40)
        assert street.lamp() == 100
        assert street.agent.lamps[0].controller.state().source == "sensor"
    finally:
        await street.stop()


# -- item 5: a failing controller is made safe, alarmed and restarted ----------------------------


async def test_a_bollard_whose_read_raises_is_made_safe_alarmed_and_restarted(
    tmp_path: Path,
) -> None:
    equipment = LAMP + BOLLARD.format(id="b-north") + BOLLARD.format(id="b-south")
    street = Street(tmp_path, NOON, equipment)
    await street.start()
    try:
        north, south = street.bollard_sim("b-north"), street.bollard_sim("b-south")
        for bollard in street.agent.bollards:
            bollard.set_mode(Mode.HELD_UP)
        await street.run_for(1.5, tick=0.1)
        assert north.pins["motor_up_pin"].state
        north.fail_reads(OSError("input expander: remote I/O error"))
        north.car_arrives()
        await street.settle()
        assert not north.pins["motor_up_pin"].state  # off at once, car or no car
        (alarm,) = street.of_type("equipment.failed")
        assert alarm.priority is Priority.ALARM and alarm.device_id == "b-north"
        assert "OSError: input expander: remote I/O error" in alarm.message
        # The other bollard and the lamps run on.
        await street.run_for(5, tick=0.1)
        assert south.read().up_limit
        street.clock.step_wall(11 * HOUR)
        await street.run_for(10)
        assert street.lamp() == 100
        # The failed one comes back after its backoff; its emergency input works again.
        (child,) = [c for c in street.agent.supervisor.children if c.name == "b-north"]
        failures = child.failures
        assert failures >= 2  # each restart met the same fault, each was alarmed
        assert len(street.of_type("equipment.failed")) == failures
        north.fail_reads(None)
        north.car_leaves()
        await street.run_for(40, tick=0.1)  # the longest backoff so far has run out
        assert child.failures == failures
        north.turn_emergency_key(True)
        await street.run_for(4, tick=0.1)
        assert north.read().down_limit and not north.pins["motor_up_pin"].state
    finally:
        await street.stop()


def firmware_section(tmp_path: Path, release: ReleaseSimulator) -> str:
    """A ``[firmware]`` table pinning ``release``'s key."""
    pem = release.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "release.pub").write_bytes(pem)
    return (
        f'[firmware]\nrelease_keys = ["{tmp_path / "release.pub"}"]\n'
        f'state_dir = "{tmp_path / "firmware"}"\n'
    )


def offer_of(release: ReleaseSimulator, version: str) -> firmware_pb2.FirmwareOffer:
    published = release.releases[version]
    return firmware_pb2.FirmwareOffer(
        campaign_id="c-1",
        version=version,
        manifest=firmware_pb2.ReleaseManifest(
            manifest=published.manifest,
            signatures=[
                firmware_pb2.ReleaseSignature(key_id=s.key_id, signature=s.signature)
                for s in published.signatures
            ],
        ),
    )


async def test_no_task_outlives_the_agent(tmp_path: Path) -> None:
    release = ReleaseSimulator()
    release.publish("0.2.0", created=NOON)
    street = Street(tmp_path, NOON, LAMP + firmware_section(tmp_path, release))
    await street.start()
    channel = grpc.aio.insecure_channel("127.0.0.1:9")
    try:
        # Started while the agent runs: a link session's renewal timer (due in days) and a
        # firmware download waiting to resume (the link is down, the retry's wait is long).
        now = datetime.now(UTC)
        street.agent.renewal.on_connected(
            channel, Credentials(b"", b"", b"", now, now + timedelta(days=7))
        )
        waiting = asyncio.Event()

        async def long_wait(seconds: float) -> None:
            waiting.set()
            await asyncio.Event().wait()

        street.agent.firmware.sleep = long_wait
        await street.agent.on_firmware_offer(offer_of(release, "0.2.0"))
        await asyncio.wait_for(waiting.wait(), 5)
        names = {task.get_name() for task in asyncio.all_tasks()}
        assert {"renewal", "firmware offer", "schedule", "link"} <= names
        await street.stop()
        await street.settle()
        assert asyncio.all_tasks() == {asyncio.current_task()}
    finally:
        await street.stop()
        await channel.close()


async def test_a_firmware_task_that_fails_is_alarmed_and_the_street_runs_on(
    lamps_at_noon: Street, caplog: pytest.LogCaptureFixture
) -> None:
    street = lamps_at_noon

    def broken_link(progress: firmware_pb2.FirmwareProgress) -> bool:
        raise RuntimeError("link queue gone")

    # The task answers the offer (refused: no [firmware] here) and its answer cannot be
    # sent: nothing in the task handles that, its owner must.
    street.agent.firmware.send = broken_link
    await street.agent.on_firmware_offer(firmware_pb2.FirmwareOffer(campaign_id="c-1"))
    await street.settle()
    (alarm,) = street.of_type("agent.task_failed")
    assert alarm.priority is Priority.ALARM
    assert alarm.attributes["task"] == "firmware offer"
    assert "RuntimeError: link queue gone" in alarm.message
    assert "firmware offer failed: RuntimeError: link queue gone" in caplog.text
    street.clock.step_wall(11 * HOUR)
    await street.run_for(10)
    assert street.lamp() == 100


# -- item 3: latches survive a restart of the agent; only a reset clears them ------------------


async def test_a_locked_out_bollard_stays_locked_after_the_agent_restarts(tmp_path: Path) -> None:
    street = Street(tmp_path, NOON, BOLLARD.format(id="b1"))
    await street.start()
    try:
        street.bollard_sim("b1").place_obstacle(0.3)
        street.agent.bollards[0].set_mode(Mode.HELD_UP)
        await street.run_for(30, tick=0.1)
        assert street.agent.bollards[0].latches.locked_out
        await street.restart()
        street.bollard_sim("b1").place_obstacle(0.3)
        result = await street.agent.handle_command(
            link_pb2.Command(
                command_id="hold",
                bollard=link_pb2.BollardCommand(
                    device_id="b1", action=link_pb2.BOLLARD_ACTION_HOLD_UP
                ),
            )
        )
        assert result.status == link_pb2.COMMAND_STATUS_DONE
        await street.run_for(30, tick=0.1)
        sim = street.bollard_sim("b1")
        assert not any(c.state for c in sim.factory.history if c.pin == "GPIO17")
        assert street.agent.bollards[0].phase is Phase.DOWN
        sim.remove_obstacle()
        reset = await street.agent.handle_command(
            link_pb2.Command(
                command_id="r-1",
                bollard=link_pb2.BollardCommand(
                    device_id="b1", action=link_pb2.BOLLARD_ACTION_RESET
                ),
            )
        )
        assert reset.status == link_pb2.COMMAND_STATUS_DONE
        await street.run_for(10, tick=0.1)
        assert sim.read().up_limit
        (event,) = street.of_type("reset")
        assert event.attributes["by"] == "operator (command r-1)"
    finally:
        await street.stop()


# -- item 8: one meaning of a scheduled UP -------------------------------------------------------


async def test_a_scheduled_up_without_access_raises_the_bollard(tmp_path: Path) -> None:
    street = Street(tmp_path, NOON, BOLLARD.format(id="b1"))
    up = schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="closed",
                points=[
                    schedule_pb2.SwitchPoint(
                        local_time="00:00",
                        bollard=schedule_pb2.BollardSetting(
                            position=schedule_pb2.BOLLARD_POSITION_UP
                        ),
                    )
                ],
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="closed", priority=1)],
    ).SerializeToString()
    assert await street.agent.accept_document(document(link_pb2.DOCUMENT_KIND_SCHEDULE, up)) == ""
    await street.start()
    try:
        await street.run_for(6, tick=0.1)
        assert street.bollard_sim("b1").read().up_limit, "a scheduled UP left the passage open"
    finally:
        await street.stop()


# -- item 10: the agent checks documents against its crossing's card ---------------------------


CROSSING = """
[[signals]]
id = "carrefour"
backend = "simulated"
[signals.safety_card]
groups = ["ns", "ew"]
min_green_s = 6
intergreens = [["ns", "ew", 5], ["ew", "ns", 5]]
[signals.simulated.heads.ns]
red = 2
amber = 3
green = 4
[signals.simulated.heads.ew]
red = 5
amber = 6
green = 7
"""


def plans(intergreens: bool, min_green: int = 6) -> bytes:
    groups = [
        signal_pb2.SignalGroup(
            id=g,
            kind=signal_pb2.SIGNAL_GROUP_KIND_VEHICLE,
            min_green_s=min_green,
            amber_s=3,
            all_red_s=2,
        )
        for g in ("ns", "ew")
    ]
    entries = (
        [
            signal_pb2.Intergreen(from_group="ns", to_group="ew", seconds=5),
            signal_pb2.Intergreen(from_group="ew", to_group="ns", seconds=5),
        ]
        if intergreens
        else []
    )
    greens = [
        signal_pb2.GreenInterval(group="ns", start_s=0, end_s=20),
        signal_pb2.GreenInterval(group="ew", start_s=0 if not intergreens else 30, end_s=50),
    ]
    return signal_pb2.SignalPlans(
        intersection=signal_pb2.Intersection(groups=groups, intergreens=entries),
        plans=[signal_pb2.SignalPlan(id="day", cycle_s=60, greens=greens)],
    ).SerializeToString()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (plans(intergreens=False), "intersection.intergreens"),
        (plans(intergreens=True, min_green=1), "intersection.groups[0].min_green_s"),
    ],
    ids=["conflicting-greens-without-intergreens", "one-second-minimum-green"],
)
async def test_a_document_less_strict_than_the_card_is_refused_by_the_agent(
    tmp_path: Path, payload: bytes, field: str
) -> None:
    street = Street(tmp_path, NOON, CROSSING)
    try:
        error = await street.agent.accept_document(
            document(link_pb2.DOCUMENT_KIND_SIGNAL_PLANS, payload)
        )
        assert error.startswith(f"{field}: ")
        assert street.agent.state.documents() == []
        assert (await street.agent.accept_document(
            document(link_pb2.DOCUMENT_KIND_SIGNAL_PLANS, plans(intergreens=True))
        )) == ""  # fmt: skip
    finally:
        street.agent.close()
