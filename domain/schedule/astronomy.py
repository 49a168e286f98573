"""Sunrise, sunset and civil twilight at a site, as a sequence of crossings in time.

Conventions (those of the reference data in ``tests/data/sun``, and of most almanacs):

- sunrise / sunset: the Sun's *upper limb* crossing a horizon of -0°34' (standard refraction
  folded into the horizon, hence PyEphem with ``pressure=0``), sea-level observer;
- civil dawn / dusk: the Sun's *centre* crossing -6°.

The Sun's crossings of an altitude are modelled as what they are, a sequence in time, not
as one event of each kind per local date: near the polar circles two sunsets can fall on
the same local date (Reykjavik around the end of June, Tromsø and Fairbanks in July, when
sunset is within minutes of local midnight), and keeping one of them left lamps dark for
hours. :func:`crossings` finds every crossing between two instants: between consecutive
culminations (the Sun's transit and antitransit, where its altitude turns) the altitude is
monotonic, so there is a crossing exactly when the altitude at the two ends lies on either
side of the threshold, and a bracketing root search finds it to the second.

:func:`sun_day` groups the crossings of one local date (in the site's zone): every sunrise,
sunset, civil dawn and dusk of that date, and whether a date without any is polar day or
polar night (from the Sun's altitude on it). Its single-valued fields keep the almanac's
reading for daytime windows: the first sunrise and civil dawn, the last sunset and civil
dusk of the date.

Results are cached per (site, date): the evaluator asks for the same few days for every
device of a gateway.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from functools import lru_cache

import ephem

from domain.schedule.localtime import day_start
from domain.schedule.model import Site, SunEvent

#: Upper limb at -0°34' (sunrise, sunset).
SUNRISE_ALTITUDE = -34.0 / 60.0
#: Centre at -6° (civil dawn, dusk).
CIVIL_ALTITUDE = -6.0
#: The root search stops when the bracket is this narrow.
PRECISION = timedelta(milliseconds=500)
# Culminations are searched this far around a window: more than the ~12 h between two.
_MARGIN = timedelta(hours=13)


class Daylight(Enum):
    """Whether the Sun crosses an altitude on a given date."""

    ORDINARY = "ordinary"
    # The Sun stays above the altitude all that date (the event "always up").
    POLAR_DAY = "polar_day"
    # The Sun stays below the altitude all that date ("never up").
    POLAR_NIGHT = "polar_night"


@dataclass(frozen=True)
class Crossing:
    """The Sun crossing an altitude: rising through it (dawn, sunrise) or setting."""

    at: datetime
    rising: bool


@dataclass(frozen=True)
class SunDay:
    """The Sun's crossings on one local date at one site (UTC instants)."""

    day: date
    #: Sunrise/sunset horizon crossings of the date, in time order.
    horizon: tuple[Crossing, ...]
    #: Civil (-6°) crossings of the date, in time order.
    civil: tuple[Crossing, ...]
    # For the sunrise/sunset horizon, and for the civil (-6 degree) altitude.
    daylight: Daylight
    civil_daylight: Daylight

    def events(self, which: SunEvent) -> tuple[datetime, ...]:
        """Every instant of ``which`` on this date, in order (often one, sometimes two)."""
        civil = which in (SunEvent.CIVIL_DAWN, SunEvent.CIVIL_DUSK)
        rising = which in (SunEvent.SUNRISE, SunEvent.CIVIL_DAWN)
        return tuple(c.at for c in (self.civil if civil else self.horizon) if c.rising is rising)

    def event(self, which: SunEvent) -> datetime | None:
        """The almanac's instant of ``which``: first dawn or sunrise, last sunset or dusk."""
        found = self.events(which)
        if not found:
            return None
        return found[0] if which in (SunEvent.SUNRISE, SunEvent.CIVIL_DAWN) else found[-1]

    @property
    def sunrise(self) -> datetime | None:
        return self.event(SunEvent.SUNRISE)

    @property
    def sunset(self) -> datetime | None:
        return self.event(SunEvent.SUNSET)

    @property
    def civil_dawn(self) -> datetime | None:
        return self.event(SunEvent.CIVIL_DAWN)

    @property
    def civil_dusk(self) -> datetime | None:
        return self.event(SunEvent.CIVIL_DUSK)


def sun_day(site: Site, day: date) -> SunDay:
    """The Sun's crossings on local date ``day`` at ``site``.

    Args:
        site: where (coordinates and time zone).
        day: the local calendar date in the site's zone.

    Returns:
        Every sunrise/sunset and civil crossing of that date as aware UTC datetimes, and
        whether a date without any is polar day or polar night, for each altitude.
    """
    return _sun_day(site, day)


@lru_cache(maxsize=4096)
def _sun_day(site: Site, day: date) -> SunDay:
    start = day_start(day, site.zone)
    end = day_start(day + timedelta(days=1), site.zone)
    sky = _Sky(site)
    turns = sky.culminations(start, end)
    horizon = sky.crossings(start, end, civil=False, turns=turns)
    civil = sky.crossings(start, end, civil=True, turns=turns)
    return SunDay(
        day=day,
        horizon=horizon,
        civil=civil,
        daylight=_daylight(horizon, sky.altitude(start, civil=False)),
        civil_daylight=_daylight(civil, sky.altitude(start, civil=True)),
    )


def crossings(site: Site, start: datetime, end: datetime, *, civil: bool) -> tuple[Crossing, ...]:
    """Every crossing of the sunrise (or civil) altitude in ``[start, end)``, in order."""
    return _Sky(site).crossings(start, end, civil=civil)


def altitude(site: Site, when: datetime, *, civil: bool) -> float:
    """Degrees of the Sun above its threshold at ``when`` (negative: below): the upper limb
    above -0°34', or the centre above -6° for ``civil``."""
    return _Sky(site).altitude(when, civil=civil)


class _Sky:
    """One site's Sun, on one PyEphem observer (ephem objects are not thread-safe: one per
    computation)."""

    def __init__(self, site: Site) -> None:
        self._site = site
        # Both thresholds from one computation, for the culminations both searches share.
        self._seen: dict[datetime, tuple[float, float]] = {}
        self._observer = ephem.Observer()
        self._observer.lat = str(site.latitude)
        self._observer.lon = str(site.longitude)
        self._observer.elevation = 0.0
        self._observer.pressure = 0.0
        self._sun = ephem.Sun()

    def altitude(self, when: datetime, *, civil: bool) -> float:
        heights = self._seen.get(when)
        if heights is None:
            self._observer.date = _ephem_date(when)
            self._sun.compute(self._observer)
            centre = math.degrees(float(self._sun.alt))
            upper_limb = centre + math.degrees(float(self._sun.radius))
            heights = self._seen[when] = (upper_limb - SUNRISE_ALTITUDE, centre - CIVIL_ALTITUDE)
        return heights[1] if civil else heights[0]

    def culminations(self, start: datetime, end: datetime) -> list[datetime]:
        """Transits and antitransits from before ``start`` to after ``end``, in order."""
        first = (start - _MARGIN).astimezone(UTC).date()
        last = (end + _MARGIN).astimezone(UTC).date()
        found: list[datetime] = []
        for offset in range((last - first).days + 1):
            found.extend(_culminations_on(self._site, first + timedelta(days=offset)))
        return found

    def culminations_on(self, day: date) -> tuple[datetime, ...]:
        """Transits and antitransits during UTC date ``day``, in order."""
        begin = datetime.combine(day, datetime.min.time(), UTC)
        stop = begin + timedelta(days=1)
        found: set[datetime] = set()
        for step in (self._observer.next_transit, self._observer.next_antitransit):
            moment = begin
            while True:
                instant = _utc(step(self._sun, start=_ephem_date(moment)))
                if instant >= stop:
                    break
                found.add(instant)
                moment = instant + timedelta(minutes=1)
        return tuple(sorted(found))

    def crossings(
        self,
        start: datetime,
        end: datetime,
        *,
        civil: bool,
        turns: list[datetime] | None = None,
    ) -> tuple[Crossing, ...]:
        if turns is None:
            turns = self.culminations(start, end)
        # From the last turn at or before start to the first at or after end.
        first = max((i for i, t in enumerate(turns) if t <= start), default=0)
        last = min((i for i, t in enumerate(turns) if t >= end), default=len(turns) - 1)
        turns = turns[first : last + 1]
        heights = [self.altitude(t, civil=civil) for t in turns]
        found = []
        for i in range(len(turns) - 1):
            (t0, h0), (t1, h1) = (turns[i], heights[i]), (turns[i + 1], heights[i + 1])
            if (h0 < 0) == (h1 < 0) or t1 < start or t0 >= end:
                continue
            at = self._ephem_root(t0, t1, civil=civil, rising=h0 < 0)
            if at is None:
                at = _root(lambda t: self.altitude(t, civil=civil), t0, h0, t1, h1)
            if start <= at < end:
                found.append(Crossing(at, rising=h0 < 0))
        return tuple(found)

    def _ephem_root(
        self, t0: datetime, t1: datetime, *, civil: bool, rising: bool
    ) -> datetime | None:
        """PyEphem's own rising or setting search from ``t0``, if it lands in the bracket
        (it is faster than ours; it may refuse near a grazing Sun, then ours decides)."""
        self._observer.horizon = "-6" if civil else "-0:34"
        search = self._observer.next_rising if rising else self._observer.next_setting
        try:
            found = _utc(search(self._sun, start=_ephem_date(t0), use_center=civil))
        except (ephem.AlwaysUpError, ephem.NeverUpError):
            return None
        if not t0 <= found <= t1:
            return None
        # The first whole second past the crossing, as _root gives.
        return datetime.fromtimestamp(math.ceil(found.timestamp()), UTC)


@lru_cache(maxsize=8192)
def _culminations_on(site: Site, day: date) -> tuple[datetime, ...]:
    return _Sky(site).culminations_on(day)


def _root(
    f: Callable[[datetime], float], t0: datetime, f0: float, t1: datetime, f1: float
) -> datetime:
    """The instant where ``f`` changes sign in ``[t0, t1]`` (Illinois regula falsi).

    Returns the first instant, to the second, at which ``f`` has the sign of ``f1``, so a
    switch at the returned instant is on the right side of the crossing.
    """
    side = 0
    while t1 - t0 > PRECISION:
        span = (t1 - t0).total_seconds()
        guess = t0 + timedelta(seconds=span * f0 / (f0 - f1))
        # Keep the guess strictly inside, or regula falsi can stall at one end.
        low, high = t0 + PRECISION / 4, t1 - PRECISION / 4
        guess = min(max(guess, low), high)
        value = f(guess)
        if (value < 0) == (f0 < 0):
            t0, f0 = guess, value
            if side == -1:
                f1 /= 2
            side = -1
        else:
            t1, f1 = guess, value
            if side == 1:
                f0 /= 2
            side = 1
    # Whole seconds: the instant reported is the first whole second past the crossing.
    seconds = math.ceil(t1.timestamp())
    return datetime.fromtimestamp(seconds, UTC)


def _daylight(found: tuple[Crossing, ...], height_at_start: float) -> Daylight:
    if found:
        return Daylight.ORDINARY
    return Daylight.POLAR_DAY if height_at_start >= 0 else Daylight.POLAR_NIGHT


def _ephem_date(when: datetime) -> ephem.Date:
    return ephem.Date(when.astimezone(UTC).replace(tzinfo=None))


def _utc(found: object) -> datetime:
    instant: datetime = ephem.Date(found).datetime()
    return instant.replace(tzinfo=UTC)
