"""What lamps do when no program says anything: on from sunset to sunrise, never dark at night.

Used with no schedule, on a date no calendar rule covers, and while no switch point of the
running programs has set a lamp level yet. Each local date contributes its own switches:
every sunset of the date turns the lamps on, every sunrise turns them off (a date near a
polar circle can have two sunsets); a polar-night date turns them on at its first
instant, a polar-day date turns them off. The lamps are in the state of the latest
switch at or before now, looking back up to :data:`LOOKBACK_DAYS` dates; if there is none
(a site where the Sun grazes the horizon for a week) they are on: dark streets are the
failure this module exists to prevent.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache

from domain.schedule.astronomy import Daylight, sun_day
from domain.schedule.localtime import day_start, local_date
from domain.schedule.model import LightSensor, Schedule, Site
from domain.schedule.sensor import sensor_holds

LOOKBACK_DAYS = 7


def night_switches(site: Site, day: date) -> tuple[tuple[datetime, bool], ...]:
    """The default lamp switches of local date ``day``: (UTC instant, lamps on), in order."""
    return _night_switches(site, day)


@lru_cache(maxsize=4096)
def _night_switches(site: Site, day: date) -> tuple[tuple[datetime, bool], ...]:
    sun = sun_day(site, day)
    if sun.daylight is Daylight.POLAR_NIGHT:
        return ((day_start(day, site.zone), True),)
    if sun.daylight is Daylight.POLAR_DAY:
        return ((day_start(day, site.zone), False),)
    return tuple((crossing.at, not crossing.rising) for crossing in sun.horizon)


def night_lamps_on(site: Site, now: datetime) -> bool:
    """Whether lamps are on by default at ``now`` (aware) at ``site``."""
    today = local_date(now, site.zone)
    for back in range(LOOKBACK_DAYS + 1):
        for at, lamps_on in reversed(night_switches(site, today - timedelta(days=back))):
            if at <= now:
                return lamps_on
    return True


#: The light sensor's thresholds when the schedule sets none (a street photocell's usual
#: switching: on below 35 lux at dusk, off above 70 lux in the morning).
UNKNOWN_TIME_SENSOR = LightSensor(on_below_lux=35.0, off_above_lux=70.0)


def unknown_time_lamps(
    schedule: Schedule | None, lux: float | None, holding: bool
) -> tuple[int, str, bool]:
    """The lamps while the wall clock is not trusted (no synchronisation since boot, no
    real-time clock): no program, sunset or override can be placed in time, so the light
    sensor decides where there is one, otherwise the default level. Never dark because the
    time is unknown.

    Args:
        schedule: the schedule held, for its default level and sensor thresholds.
        lux: the cabinet's light reading, None without a sensor (or a failed one).
        holding: whether the sensor held the lamps on at the previous evaluation.

    Returns:
        (level, source, holding): source is ``"sensor"`` or ``"default"``.
    """
    default = schedule.default_lamp_level if schedule is not None else 100
    if lux is None:
        return default, "default", False
    sensor = (schedule.light_sensor if schedule is not None else None) or UNKNOWN_TIME_SENSOR
    holding = sensor_holds(sensor, lux, holding)
    return (default if holding else 0), "sensor", holding
