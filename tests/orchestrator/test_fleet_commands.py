"""The checks an operator's command passes before it is stored (orchestrator/fleet/
commands.py), whether it is sent to one gateway (SendCommand) or to every gateway of a
target (SendGroupCommand): each refusal names the field and says why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from foundation.errors import split_field
from orchestrator.fleet.commands import (
    MAX_COMMAND_TTL,
    check_command,
    check_command_envelope,
    check_command_id,
)
from orchestrator.ingest.checks import timestamp
from protos.ondijon.v1 import link_pb2, schedule_pb2

NOW = datetime(2026, 10, 25, 0, 59, 30, tzinfo=UTC)  # UTC, as every clock of the orchestrator


def lamps_at(level: int, *, expires: datetime = NOW + timedelta(hours=1)) -> link_pb2.Command:
    return link_pb2.Command(
        command_id="c-1",
        expires_at=timestamp(expires),
        override=schedule_pb2.Override(
            id="o-1",
            start=timestamp(NOW),
            expiry=timestamp(expires),
            priority=10,
            kind=schedule_pb2.DEVICE_KIND_LAMP,
            lamp_level=level,
        ),
    )


def test_a_well_formed_command_passes_up_to_a_week_ahead() -> None:
    assert check_command(lamps_at(80), NOW) == ""
    assert check_command(lamps_at(80, expires=NOW + MAX_COMMAND_TTL), NOW) == ""
    bollard = link_pb2.Command(
        command_id="c-2",
        expires_at=timestamp(NOW + timedelta(minutes=5)),
        bollard=link_pb2.BollardCommand(
            device_id="bollard-1", action=link_pb2.BOLLARD_ACTION_EMERGENCY_LOWER
        ),
    )
    assert check_command(bollard, NOW) == ""


def cancel(override_id: str) -> link_pb2.Command:
    return link_pb2.Command(
        command_id="c-3",
        expires_at=timestamp(NOW + timedelta(minutes=5)),
        cancel_override=override_id,
    )


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (link_pb2.Command(command_id="c-1"), "command.expires_at"),
        (lamps_at(80, expires=NOW), "command.expires_at"),
        (lamps_at(80, expires=NOW + MAX_COMMAND_TTL + timedelta(seconds=1)), "command.expires_at"),
        (
            link_pb2.Command(command_id="c-1", expires_at=timestamp(NOW + timedelta(hours=1))),
            "command.action",
        ),
        (cancel(""), "command.cancel_override"),
        (cancel("x" * 200), "command.cancel_override"),
    ],
)
def test_a_bad_envelope_or_action_is_refused_naming_the_field(
    command: link_pb2.Command, field: str
) -> None:
    problem = check_command(command, NOW)
    assert split_field(problem)[0] == field, problem


def test_an_id_is_at_most_64_printable_characters() -> None:
    assert check_command_id("c" * 64, "command_id") == ""
    assert check_command_id("c" * 65, "command_id").startswith("command_id: at most 64")
    assert check_command_id("c\x1b[2J", "command_id").startswith("command_id:")
    command = lamps_at(80)
    command.command_id = "c\n1"
    assert check_command_envelope(command, NOW).startswith("command.command_id:")


def test_an_override_the_agent_would_refuse_is_refused_here() -> None:
    problem = check_command(lamps_at(150), NOW)
    assert problem.startswith("command.override."), problem
    bad_bollard = link_pb2.Command(
        command_id="c-2",
        expires_at=timestamp(NOW + timedelta(minutes=5)),
        bollard=link_pb2.BollardCommand(device_id="", action=link_pb2.BOLLARD_ACTION_HOLD_UP),
    )
    assert check_command(bad_bollard, NOW).startswith("command.bollard.device_id:")
    bad_bollard.bollard.device_id = "bollard-1"
    bad_bollard.bollard.action = 0  # type: ignore[assignment]
    assert check_command(bad_bollard, NOW) == "command.bollard.action: unknown action"
