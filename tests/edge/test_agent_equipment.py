"""A cabinet with a bollard and a signal controller, end to end over mutual TLS.

Signal plans and the schedule that selects them reach the simulated controller; a plan
with conflicting greens is refused at the admin API with the field named, and never
reaches the cabinet; a bollard follows the control room's hold-down command.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from ondijon.client import AdminClient, AdminError
from ondijon.demo import SIGNAL, signal_plans
from protos.ondijon.v1 import control_pb2, link_pb2, schedule_pb2, state_pb2
from tests.conftest import City
from tests.edge.test_agent import running
from tests.waiting import eventually

pytestmark = pytest.mark.integration

BOLLARD = """[[bollards]]
id = "bollard-1"
backend = "simulated"
"""


def plans(ew_start: int = 34) -> bytes:
    """The demo crossing's plans; ``ew_start`` < 34 makes ew green too early (conflict)."""
    message = signal_plans()
    message.plans[0].greens[1].start_s = ew_start
    return message.SerializeToString()


def day_plan_schedule() -> bytes:
    return schedule_pb2.Schedule(
        programs=[
            schedule_pb2.Program(
                id="p",
                points=[
                    schedule_pb2.SwitchPoint(
                        local_time="00:00",
                        lamp_level=100,
                        signal_plan="day",
                        signal_mode=schedule_pb2.SIGNAL_MODE_NORMAL,
                    )
                ],
            )
        ],
        rules=[schedule_pb2.CalendarRule(program_id="p", priority=1)],
    ).SerializeToString()


async def put(city: City, gateway_id: str, kind: int, payload: bytes) -> None:
    await AdminClient(city.admin).put_desired_state(
        control_pb2.PutDesiredStateRequest(gateway_id=gateway_id, kind=kind, payload=payload),
    )


async def test_signal_plan_selected_by_schedule_and_conflicts_refused(city: City) -> None:
    config = await city.enrolled("crossing-1", signals=SIGNAL)
    async with running(config, clock_step_s=0.5) as agent:
        await asyncio.wait_for(agent.link.status.connected.wait(), 15)
        await put(city, "crossing-1", link_pb2.DOCUMENT_KIND_SIGNAL_PLANS, plans())
        await put(city, "crossing-1", link_pb2.DOCUMENT_KIND_SCHEDULE, day_plan_schedule())
        await eventually(lambda: agent.signals[0].state().signal.plan == "day")

        with pytest.raises(AdminError) as refused:
            await put(city, "crossing-1", link_pb2.DOCUMENT_KIND_SIGNAL_PLANS, plans(ew_start=30))
        assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.field.startswith("plans[0]")
        # Nothing reached the cabinet: the running plan and the held version are unchanged.
        assert agent.signals[0].state().signal.plan == "day"
        held = agent.state.document(link_pb2.DOCUMENT_KIND_SIGNAL_PLANS)
        assert held is not None and held.version == 1


async def test_bollard_held_down_by_the_control_room(city: City) -> None:
    config = await city.enrolled("bollards-1", bollards=BOLLARD)
    async with running(config, clock_step_s=0.1) as agent:
        await asyncio.wait_for(agent.link.status.connected.wait(), 15)
        expires = datetime.now(UTC) + timedelta(minutes=5)
        command = link_pb2.Command(
            command_id="fire-brigade-1",
            bollard=link_pb2.BollardCommand(
                device_id="bollard-1", action=link_pb2.BOLLARD_ACTION_HOLD_DOWN
            ),
        )
        command.expires_at.FromDatetime(expires)
        await AdminClient(city.admin).send_command(
            control_pb2.SendCommandRequest(gateway_id="bollards-1", command=command),
        )
        await eventually(
            lambda: agent.bollards[0].state().bollard.mode == state_pb2.BOLLARD_MODE_HELD_DOWN
        )

        async def done() -> bool:
            result = await AdminClient(city.admin).get_command(
                control_pb2.GetCommandRequest(command_id="fire-brigade-1")
            )
            return result.status == link_pb2.COMMAND_STATUS_DONE

        for _ in range(200):
            if await done():
                break
            await asyncio.sleep(0.05)
        assert await done()


async def command_result(city: City, command_id: str) -> control_pb2.GetCommandResponse:
    for _ in range(200):
        result = await AdminClient(city.admin).get_command(
            control_pb2.GetCommandRequest(command_id=command_id)
        )
        if result.status in (link_pb2.COMMAND_STATUS_DONE, link_pb2.COMMAND_STATUS_REFUSED):
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("command never settled")


async def test_bus_priority_is_rate_limited_and_logged(city: City) -> None:
    config = await city.enrolled("crossing-2", signals=SIGNAL)
    async with running(config, clock_step_s=0.5) as agent:
        await asyncio.wait_for(agent.link.status.connected.wait(), 15)
        await put(city, "crossing-2", link_pb2.DOCUMENT_KIND_SIGNAL_PLANS, plans())
        await eventually(lambda: agent.signals[0].plans is not None)
        outcomes = []
        for n, (approach, bus) in enumerate(
            [("ns", "bus-12"), ("ns", "bus-12"), ("tram", "bus-3")]
        ):
            command = link_pb2.Command(
                command_id=f"bus-{n}",
                bus_priority=link_pb2.BusPriorityRequest(
                    device_id="carrefour", approach=approach, bus_id=bus
                ),
            )
            command.expires_at.FromDatetime(datetime.now(UTC) + timedelta(minutes=1))
            await AdminClient(city.admin).send_command(
                control_pb2.SendCommandRequest(gateway_id="crossing-2", command=command),
            )
            outcomes.append(await command_result(city, f"bus-{n}"))
        assert outcomes[0].status == link_pb2.COMMAND_STATUS_DONE
        assert outcomes[0].detail == "granted"
        # The same bus again while its grant lives is merged, not a second request.
        assert outcomes[1].detail == "merged"
        assert outcomes[2].status == link_pb2.COMMAND_STATUS_REFUSED
        assert "approach" in outcomes[2].detail


async def test_a_document_less_strict_than_the_reported_safety_card_is_refused_at_the_admin_api(
    city: City,
) -> None:
    """The orchestrator learns the crossing's safety card from the signal's state and
    refuses, with the field named, a document that would drop one of its conflicts."""
    config = await city.enrolled("crossing-3", signals=SIGNAL)
    async with running(config, clock_step_s=0.5) as agent:
        await asyncio.wait_for(agent.link.status.connected.wait(), 15)

        async def card_reported() -> bool:
            response = await AdminClient(city.admin).list_devices(
                control_pb2.ListDevicesRequest(gateway_id="crossing-3")
            )
            return any(d.signal.safety_card.groups for d in response.devices)

        for _ in range(200):
            if await card_reported():
                break
            await asyncio.sleep(0.05)
        assert await card_reported()
        naive = signal_plans()
        del naive.intersection.intergreens[:]  # valid alone: no conflict declared at all
        naive.plans[0].greens[1].start_s = 0  # ns and ew green together
        with pytest.raises(AdminError) as refused:
            await put(
                city, "crossing-3", link_pb2.DOCUMENT_KIND_SIGNAL_PLANS, naive.SerializeToString()
            )
        assert "INVALID_ARGUMENT" in str(refused.value)
        assert "intersection.intergreens: conflict ns->ew of the safety card" in str(refused.value)
        assert agent.state.document(link_pb2.DOCUMENT_KIND_SIGNAL_PLANS) is None
        await put(city, "crossing-3", link_pb2.DOCUMENT_KIND_SIGNAL_PLANS, plans())
