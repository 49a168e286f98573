"""The schedule engine: an I/O-free core deciding what lamps, bollards and signals do now.

A site's calendar picks a program per local day; a program's switch points (wall times or
sun events) set outputs; overrides and a light sensor take precedence; without a program
lamps are on from sunset to sunrise. :func:`evaluate` turns all that, for one device at one
instant, into a :class:`Decision` with the instant it next changes.

Modules: ``model`` (values), ``wire`` (proto conversion and validation), ``validation``,
``astronomy``, ``localtime`` (DST), ``calendar``, ``program``, ``fallback``, ``sensor``,
``override``, ``evaluator``, ``errors``.
"""

from __future__ import annotations

from domain.schedule.astronomy import Daylight, SunDay, sun_day
from domain.schedule.errors import (
    EvaluationError,
    OverrideError,
    ScheduleEngineError,
    ScheduleError,
    SiteError,
)
from domain.schedule.evaluator import Decision, evaluate
from domain.schedule.model import (
    AccessPolicy,
    BollardPosition,
    BollardSetting,
    CalendarRule,
    DayKind,
    DeviceKind,
    LightSensor,
    Override,
    Program,
    Schedule,
    SignalMode,
    Site,
    SunEvent,
    SwitchPoint,
    Weekday,
)
from domain.schedule.validation import check_override, check_schedule
from domain.schedule.wire import (
    override_from_proto,
    override_to_proto,
    schedule_from_proto,
    schedule_to_proto,
)

__all__ = [
    "AccessPolicy",
    "BollardPosition",
    "BollardSetting",
    "CalendarRule",
    "DayKind",
    "Daylight",
    "Decision",
    "DeviceKind",
    "EvaluationError",
    "LightSensor",
    "Override",
    "OverrideError",
    "Program",
    "Schedule",
    "ScheduleEngineError",
    "ScheduleError",
    "SignalMode",
    "Site",
    "SiteError",
    "SunDay",
    "SunEvent",
    "SwitchPoint",
    "Weekday",
    "check_override",
    "check_schedule",
    "evaluate",
    "override_from_proto",
    "override_to_proto",
    "schedule_from_proto",
    "schedule_to_proto",
    "sun_day",
]
