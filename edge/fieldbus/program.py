"""The program a node carries: its lamp's switch points of the coming days, from the schedule.

The cabinet evaluates the site's schedule with the agent's own engine
(:func:`domain.schedule.evaluate`: calendars, holidays, sunset and sunrise, the site's time
zone and its DST changes) from ``start`` for ``days`` days, and keeps the instants where
the lamp's level changes. Each instant is rounded *up* to a whole epoch second, so at
every whole second the node's level equals the engine's. The node then needs neither a
time-zone database nor astronomy (edge/node/program.py).

What the program does not carry: overrides and crisis actions (the gateway sends them as
commands while it is alive; a node that lost its gateway follows the schedule, which is
what the schedule says should happen when an override cannot be confirmed), and the light
sensor (a cabinet input the node cannot see).
"""

from __future__ import annotations

import math
from datetime import datetime

from domain.schedule import evaluate
from domain.schedule.model import DeviceKind, Schedule, Site
from edge.fieldbus.config import DEFAULT_DAYS
from edge.node.bus import MAX_PROGRAM_POINTS, MAX_PROGRAM_SPAN_S
from edge.node.errors import FieldBusError
from edge.node.program import Program


class ProgramTooLong(FieldBusError):
    """The schedule changes the level more often than a node program holds."""


def node_program(
    schedule: Schedule | None,
    site: Site,
    start: datetime,
    *,
    number: int,
    device_id: str,
    days: int = DEFAULT_DAYS,
) -> Program:
    """The node program of lamp ``device_id`` from ``start`` for ``days`` days.

    Args:
        schedule: the site's validated schedule (None: the engine's default night).
        site: the site's coordinates and time zone.
        start: the first instant covered (timezone-aware).
        number: the program's version; a node refuses one not above what it holds, so
            take it from a counter that only grows (e.g. the issue time in seconds).
        device_id: the lamp, for schedules that name devices.
        days: the horizon; at most 14.

    Raises:
        ProgramTooLong: more than ``MAX_PROGRAM_POINTS`` level changes in the horizon.
    """
    span = days * 86400
    if not 0 < span <= MAX_PROGRAM_SPAN_S:
        raise FieldBusError("days", f"must be 1..{MAX_PROGRAM_SPAN_S // 86400}")
    t0 = math.ceil(start.timestamp())
    end = t0 + span
    offsets: list[int] = []
    levels: list[int] = []
    now = datetime.fromtimestamp(t0, start.tzinfo)
    while True:
        decision = evaluate(schedule, site, now, kind=DeviceKind.LAMP, device_id=device_id)
        assert decision.lamp_level is not None  # lamps always get a level
        at = math.ceil(now.timestamp())
        if not levels or decision.lamp_level != levels[-1]:
            if len(levels) == MAX_PROGRAM_POINTS:
                raise ProgramTooLong("days", f"over {MAX_PROGRAM_POINTS} switch points in {days}")
            offsets.append(at - t0)
            levels.append(decision.lamp_level)
        following = decision.next_change
        if following.timestamp() >= end:
            break
        # Evaluate at the whole second the node will switch at (never before the change).
        now = datetime.fromtimestamp(math.ceil(following.timestamp()), start.tzinfo)
    return Program(number, t0, span, offsets, levels)
