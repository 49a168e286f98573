"""Sunrise, sunset and civil twilight for a site's local date, as UTC instants.

Conventions (those of the reference data in ``tests/data/sun``, and of most almanacs):

- sunrise / sunset: the Sun's *upper limb* on a horizon of -0°34' (standard refraction
  folded into the horizon, hence PyEphem with ``pressure=0``), sea-level observer;
- civil dawn / dusk: the Sun's *centre* at -6°.

An event belongs to the local date on which it happens in the site's zone. When it does
not happen that date the value is ``None``, and :class:`Daylight` says why for the horizon
crossing: an ordinary day (the event just falls on a neighbouring date, as happens near the
polar circles), polar day (the Sun never sets) or polar night (it never rises).

Results are cached per (site, date): the evaluator asks for the same few days for every
device of a gateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from functools import lru_cache

import ephem

from edge.schedule.localtime import day_start
from edge.schedule.model import Site, SunEvent

SUNRISE_HORIZON = "-0:34"
CIVIL_HORIZON = "-6"


class Daylight(Enum):
    """Whether the Sun crosses an altitude on a given date."""

    ORDINARY = "ordinary"
    # The Sun stays above the altitude all that date (the event "always up").
    POLAR_DAY = "polar_day"
    # The Sun stays below the altitude all that date ("never up").
    POLAR_NIGHT = "polar_night"


@dataclass(frozen=True)
class SunDay:
    """The Sun's events on one local date at one site (UTC instants, or None if absent)."""

    day: date
    sunrise: datetime | None
    sunset: datetime | None
    civil_dawn: datetime | None
    civil_dusk: datetime | None
    # For the sunrise/sunset horizon, and for the civil (-6 degree) altitude.
    daylight: Daylight
    civil_daylight: Daylight

    def event(self, which: SunEvent) -> datetime | None:
        """The instant of ``which`` on this date, or None if it does not happen."""
        if which is SunEvent.SUNRISE:
            return self.sunrise
        if which is SunEvent.SUNSET:
            return self.sunset
        if which is SunEvent.CIVIL_DAWN:
            return self.civil_dawn
        return self.civil_dusk


def sun_day(site: Site, day: date) -> SunDay:
    """The Sun's events on local date ``day`` at ``site``.

    Args:
        site: where (coordinates and time zone).
        day: the local calendar date in the site's zone.

    Returns:
        The four events as aware UTC datetimes (None when absent that date) and whether
        the date is ordinary, polar day or polar night for each altitude.
    """
    return _sun_day(site, day)


@lru_cache(maxsize=4096)
def _sun_day(site: Site, day: date) -> SunDay:
    start = day_start(day, site.zone)
    end = day_start(day + timedelta(days=1), site.zone)
    sunrise, rise_light = _crossing(site, start, end, SUNRISE_HORIZON, center=False, rising=True)
    sunset, set_light = _crossing(site, start, end, SUNRISE_HORIZON, center=False, rising=False)
    dawn, dawn_light = _crossing(site, start, end, CIVIL_HORIZON, center=True, rising=True)
    dusk, dusk_light = _crossing(site, start, end, CIVIL_HORIZON, center=True, rising=False)
    return SunDay(
        day=day,
        sunrise=sunrise,
        sunset=sunset,
        civil_dawn=dawn,
        civil_dusk=dusk,
        daylight=_daylight(sunrise, sunset, rise_light, set_light),
        civil_daylight=_daylight(dawn, dusk, dawn_light, dusk_light),
    )


def _crossing(
    site: Site, start: datetime, end: datetime, horizon: str, *, center: bool, rising: bool
) -> tuple[datetime | None, Daylight]:
    # A fresh observer per search: ephem objects carry mutable state and are not thread-safe.
    observer = ephem.Observer()
    observer.lat = str(site.latitude)
    observer.lon = str(site.longitude)
    observer.elevation = 0.0
    observer.pressure = 0.0
    observer.horizon = horizon
    search = observer.next_rising if rising else observer.next_setting
    try:
        found = search(ephem.Sun(), start=start.replace(tzinfo=None), use_center=center)
    except ephem.AlwaysUpError:
        return None, Daylight.POLAR_DAY
    except ephem.NeverUpError:
        return None, Daylight.POLAR_NIGHT
    instant = ephem.Date(found).datetime().replace(tzinfo=UTC)
    return (instant if instant < end else None), Daylight.ORDINARY


def _daylight(
    first: datetime | None, second: datetime | None, one: Daylight, other: Daylight
) -> Daylight:
    # A date with any crossing is ordinary; otherwise trust what libastro said about it.
    if first is not None or second is not None:
        return Daylight.ORDINARY
    if Daylight.POLAR_NIGHT in (one, other):
        return Daylight.POLAR_NIGHT
    if Daylight.POLAR_DAY in (one, other):
        return Daylight.POLAR_DAY
    return Daylight.ORDINARY
