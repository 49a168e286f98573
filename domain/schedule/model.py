"""What a schedule says, as plain frozen values the engine works on (never protobuf objects).

These mirror ``protos/ondijon/v1/schedule.proto``; :mod:`domain.schedule.wire` converts and
validates. "Unset" is ``None`` here, where the proto uses ``*_UNSPECIFIED``, empty strings or
absent messages, so the engine never confuses "off" (level 0) with "not said".

Values are hashable (tuples and frozensets) so the engine can cache per (schedule, site,
day); :class:`Schedule` computes its hash once because the evaluator hashes it on every call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import Enum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from domain.schedule.errors import SiteError


class SunEvent(Enum):
    """Astronomical events a switch point can follow (proto numbers)."""

    SUNRISE = 1
    SUNSET = 2
    CIVIL_DAWN = 3
    CIVIL_DUSK = 4


class BollardPosition(Enum):
    """Where a retractable bollard stands."""

    UP = 1
    DOWN = 2


class AccessPolicy(Enum):
    """Who may pass a bollard site."""

    OPEN = 1
    LIST = 2
    CLOSED = 3


class SignalMode(Enum):
    """How a signal controller runs."""

    NORMAL = 1
    FLASHING_AMBER = 2
    DARK = 3


class Weekday(Enum):
    """Days of the week, numbered as ISO 8601 (``date.isoweekday()``)."""

    MONDAY = 1
    TUESDAY = 2
    WEDNESDAY = 3
    THURSDAY = 4
    FRIDAY = 5
    SATURDAY = 6
    SUNDAY = 7


class DayKind(Enum):
    """Which kind of day a calendar rule matches."""

    ANY = 1
    PUBLIC_HOLIDAY = 2
    # Monday to Friday and not a public holiday (a French "jour ouvré").
    WORKING_DAY = 3


class DeviceKind(Enum):
    """Kinds of equipment a gateway drives."""

    LAMP = 1
    BOLLARD = 2
    SIGNAL = 3
    CABINET = 4


@dataclass(frozen=True)
class Site:
    """Where the equipment stands: coordinates in degrees (north, east positive) and zone."""

    latitude: float
    longitude: float
    time_zone: str
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latitude) and -90.0 <= self.latitude <= 90.0):
            raise SiteError("latitude", f"must be within -90..90 degrees, got {self.latitude}")
        if not (math.isfinite(self.longitude) and -180.0 <= self.longitude <= 180.0):
            raise SiteError("longitude", f"must be within -180..180 degrees, got {self.longitude}")
        try:
            zone = ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SiteError("time_zone", f"unknown IANA time zone {self.time_zone!r}") from exc
        object.__setattr__(self, "zone", zone)


@dataclass(frozen=True)
class BollardSetting:
    """A bollard's position and access policy; ``None`` leaves that aspect unchanged."""

    position: BollardPosition | None = None
    access: AccessPolicy | None = None


@dataclass(frozen=True)
class SwitchPoint:
    """From this point of the day on, the outputs it sets hold.

    Exactly one of ``local_time`` and ``sun_event`` is set; ``offset_minutes`` goes with
    ``sun_event`` only. Outputs left ``None`` keep their previous value.
    """

    local_time: time | None = None
    sun_event: SunEvent | None = None
    offset_minutes: int = 0
    lamp_level: int | None = None
    bollard: BollardSetting | None = None
    signal_plan: str | None = None
    signal_mode: SignalMode | None = None


@dataclass(frozen=True)
class Program:
    """A named day program: switch points in the order the operator wrote them."""

    id: str
    points: tuple[SwitchPoint, ...] = ()


@dataclass(frozen=True)
class CalendarRule:
    """Picks ``program_id`` on the local days it matches (see :mod:`domain.schedule.calendar`)."""

    program_id: str
    priority: int = 0
    start_date: date | None = None
    end_date: date | None = None
    weekdays: frozenset[Weekday] = frozenset()
    day_kind: DayKind = DayKind.ANY
    dates: frozenset[date] = frozenset()


@dataclass(frozen=True)
class LightSensor:
    """Ambient-light override of the lamps, with hysteresis; present only when enabled."""

    on_below_lux: float
    off_above_lux: float
    # None: the schedule's default level.
    lamp_level: int | None = None


@dataclass(frozen=True)
class Schedule:
    """A site's calendar, programs and fallbacks."""

    programs: tuple[Program, ...] = ()
    rules: tuple[CalendarRule, ...] = ()
    # "FR" or "FR-57" style (country, optional subdivision); None: no public holidays.
    holiday_region: str | None = None
    extra_holidays: frozenset[date] = frozenset()
    default_lamp_level: int = 100
    light_sensor: LightSensor | None = None
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (
            self.programs,
            self.rules,
            self.holiday_region,
            self.extra_holidays,
            self.default_lamp_level,
            self.light_sensor,
        )
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash

    def program(self, program_id: str) -> Program | None:
        """The program with that id, or None."""
        for program in self.programs:
            if program.id == program_id:
                return program
        return None


@dataclass(frozen=True)
class Override:
    """An operator's temporary order for one kind of device.

    Active when ``start <= now < expiry`` (aware datetimes). ``device_ids`` empty means
    every device of that kind. The outputs set replace the schedule's for that kind.
    """

    id: str
    start: datetime
    expiry: datetime
    kind: DeviceKind
    priority: int = 0
    device_ids: frozenset[str] = frozenset()
    lamp_level: int | None = None
    bollard: BollardSetting | None = None
    signal_mode: SignalMode | None = None
    signal_plan: str | None = None

    def applies_to(self, kind: DeviceKind, device_id: str) -> bool:
        """Whether this override targets that device."""
        return self.kind is kind and (not self.device_ids or device_id in self.device_ids)
