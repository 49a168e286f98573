"""The real agent process on its own: ``ondijon edge run`` with no orchestrator reachable.

The cabinet was synced once (it holds a lighting schedule) and its orchestrator is gone.
The agent process runs a gpio lamp on gpiozero's mock pins under a simulated clock across
dusk. Nothing is wired behind a mock factory's pins in another process, so the lamp's
current-sense input reads low: a dead lamp, which the agent must report as soon as it is
switched on. SIGTERM stops it cleanly, counters made durable.

The bench cannot see mock pins in another process; what it checks is what the process
leaves on disk for the control centre: the outbox and the persisted counters.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent_process import spawn_agent
from street import LampPins, agent_toml, document, hold_documents, sun_event

from domain.schedule.model import SunEvent
from edge.events import Priority
from edge.storage.outbox import Outbox
from edge.storage.state import AgentState
from foundation.clock import ManualClock
from protos.ondijon.v1 import link_pb2, schedule_pb2

SUNSET = sun_event(datetime(2026, 6, 21, 12, 0, tzinfo=UTC), SunEvent.SUNSET)
SPEED = 60.0
LAMP = LampPins("lamp-1", relay=17, pwm=18, sense=27)

SCHEDULE = document(
    link_pb2.DOCUMENT_KIND_SCHEDULE,
    schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="night",
                points=[
                    schedule_pb2.SwitchPoint(
                        sun_event=schedule_pb2.SUN_EVENT_SUNSET, lamp_level=80
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


def test_the_agent_process_runs_its_street_alone_and_stops_cleanly(tmp_path: Path) -> None:
    state_dir = tmp_path / "agent"
    hold_documents(state_dir, [SCHEDULE])
    start = SUNSET - timedelta(minutes=1)
    config = tmp_path / "agent.toml"
    clock = f'[clock]\nmode = "simulated"\nstart = "{start.isoformat()}"\nspeed = {SPEED}\n'
    # An orchestrator address nobody listens on, and no certificate: it cannot connect.
    config.write_text(agent_toml(state_dir, lamps=[LAMP], clock=clock))

    agent = spawn_agent(config, state_dir, pin_factory="mock")
    try:
        agent.wait_ready()
        # One simulated minute to dusk, then at most two monitor passes (30 s each) to
        # confirm; two more minutes of margin for a loaded machine.
        agent.keeps_running_for((60 + 60 + 120) / SPEED)
    finally:
        code = agent.stop()
    assert code == 0, agent.tail()

    with Outbox(state_dir / "outbox.sqlite", clock=ManualClock(start)) as outbox:
        events = outbox.next_batch(10_000, 1 << 30)
    failures = [e for e in events if e.type == "lamp_failure"]
    assert [(e.device_id, e.priority) for e in failures] == [("lamp-1", Priority.ALARM.value)]
    raised = failures[0].at.ToDatetime(tzinfo=UTC)
    # Under a clock running 60 times faster, a process's scheduling jitter of tens of
    # milliseconds is seconds of street time: the bounds allow for it.
    assert SUNSET + timedelta(seconds=10) <= raised <= SUNSET + timedelta(seconds=180)
    with AgentState(state_dir / "state.json") as state:
        counters = state.counters("lamp-1")
    assert counters.switch_count == 1  # switched on once, at dusk, and persisted on SIGTERM
