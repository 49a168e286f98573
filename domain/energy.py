"""Energy and burning hours from the agents' quarter-hour metering: the pure core.

Agents meter each lamp in 15-minute intervals (``energy_interval`` events: start, end, Wh,
seconds lit, seconds covered by samples; :mod:`edge.equipment.metering`). This module folds
them into one total per lamp per *local* day of the site, and says what the control room
reads from it:

- kWh and burning hours (seconds lit);
- the dimming profile: Wh of each local hour, read against the lamp's peak power;
- the baseline: the same lamp at full power from sunset to sunrise, over the night time
  the metering covered (``night_seconds``); the saving is ``1 - kWh / baseline``. The full
  power is the rated power when the asset register knows it, otherwise the highest
  quarter-hour power metered over the days reported (``peak_w``): a lamp never at full
  power makes the baseline, and so the saving, smaller, never larger;
- day burners: a lamp that drew energy while the sun was well up (from sunrise + 30 min to
  sunset - 30 min; twilight is when lamps switch and counts for nothing);
- dark at night: a lamp metered over at least two hours of night and lit for less than a
  tenth of it: it should have been lit and was not.

An interval is split between night, day and twilight in proportion to its overlap, and
attributed to the local hour and date of its start (quarters are aligned on the UTC quarter
hour, so none straddles a local hour in a zone of whole or half-hour offset).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from foundation.errors import FieldError

TWILIGHT = timedelta(minutes=30)
DAY_BURNER_WH = 10.0
DARK_MIN_NIGHT_S = 2 * 3600.0
DARK_LIT_FRACTION = 0.1


class EnergyInputError(FieldError):
    """A metering record is unreadable (the attribute named)."""


@dataclass(frozen=True)
class Interval:
    """One lamp's metering over one interval."""

    device_id: str
    start: datetime
    end: datetime
    wh: float
    on_seconds: float
    covered_seconds: float

    @classmethod
    def from_attributes(cls, device_id: str, attributes: Mapping[str, str]) -> Interval:
        try:
            start = datetime.fromisoformat(attributes["interval_start"])
            end = datetime.fromisoformat(attributes["interval_end"])
            values = [float(attributes[k]) for k in ("wh", "on_seconds", "covered_seconds")]
        except KeyError as exc:
            raise EnergyInputError(str(exc.args[0]), "missing") from None
        except ValueError as exc:
            raise EnergyInputError("attributes", str(exc)) from None
        if start.tzinfo is None or end.tzinfo is None or end <= start:
            raise EnergyInputError("interval_end", "must be an aware instant after the start")
        if any(v != v or v < 0 or v == float("inf") for v in values):
            raise EnergyInputError("wh", "must be finite numbers, not negative")
        return cls(device_id, start, end, *values)


@dataclass(frozen=True)
class SunWindows:
    """Night and full day on one local date, as UTC-aware spans."""

    nights: tuple[tuple[datetime, datetime], ...]
    day: tuple[datetime, datetime] | None


@dataclass
class LampDay:
    """One lamp's totals on one local day."""

    wh: float = 0.0
    on_seconds: float = 0.0
    covered_seconds: float = 0.0
    day_wh: float = 0.0
    night_seconds: float = 0.0
    night_on_seconds: float = 0.0
    peak_w: float = 0.0
    profile: list[float] = field(default_factory=lambda: [0.0] * 24)

    def add(self, other: LampDay) -> None:
        """Fold another part of the same lamp-day in (a later batch of metering)."""
        self.wh += other.wh
        self.on_seconds += other.on_seconds
        self.covered_seconds += other.covered_seconds
        self.day_wh += other.day_wh
        self.night_seconds += other.night_seconds
        self.night_on_seconds += other.night_on_seconds
        self.peak_w = max(self.peak_w, other.peak_w)
        self.profile = [a + b for a, b in zip(self.profile, other.profile, strict=True)]

    def baseline_wh(self, rated_w: float | None = None) -> float:
        """Full power (rated, else the peak metered) over the night metered."""
        return (rated_w or self.peak_w) * self.night_seconds / 3600.0

    @property
    def day_burner(self) -> bool:
        return self.day_wh >= DAY_BURNER_WH

    @property
    def dark_at_night(self) -> bool:
        return (
            self.night_seconds >= DARK_MIN_NIGHT_S
            and self.night_on_seconds < DARK_LIT_FRACTION * self.night_seconds
        )


def _overlap(a: datetime, b: datetime, spans: Iterable[tuple[datetime, datetime]]) -> float:
    total = 0.0
    for s, e in spans:
        lo, hi = max(a, s), min(b, e)
        if hi > lo:
            total += (hi - lo).total_seconds()
    return total


def fold(
    intervals: Iterable[Interval],
    zone: ZoneInfo,
    windows: Callable[[date], SunWindows],
) -> dict[tuple[str, date], LampDay]:
    """Totals per (lamp, local date) of ``intervals``."""
    days: dict[tuple[str, date], LampDay] = {}
    for i in intervals:
        local = i.start.astimezone(zone)
        day = local.date()
        sun = windows(day)
        length = (i.end - i.start).total_seconds()
        lamp = days.setdefault((i.device_id, day), LampDay())
        lamp.wh += i.wh
        lamp.on_seconds += i.on_seconds
        lamp.covered_seconds += i.covered_seconds
        lamp.profile[local.hour] += i.wh
        # What the samples covered is spread evenly over the interval.
        coverage = min(1.0, i.covered_seconds / length) if length else 0.0
        lit_share = min(1.0, i.on_seconds / i.covered_seconds) if i.covered_seconds else 0.0
        night = _overlap(i.start, i.end, sun.nights)
        lamp.night_seconds += night * coverage
        lamp.night_on_seconds += night * coverage * lit_share
        if sun.day is not None:
            lamp.day_wh += i.wh * _overlap(i.start, i.end, [sun.day]) / length
        if i.on_seconds > 0:
            lamp.peak_w = max(lamp.peak_w, i.wh * 3600.0 / i.on_seconds)
    return days


def windows_from_sun(
    day_start: datetime, day_end: datetime, sunrise: datetime | None, sunset: datetime | None
) -> SunWindows:
    """Night is before sunrise and after sunset of the date; full day from sunrise + 30 min
    to sunset - 30 min. Without a sunrise or a sunset (polar date) the date is all night or
    all day, by whether the sun is up at noon: the caller tells with the missing one."""
    if sunrise is None or sunset is None:
        return SunWindows(((day_start, day_end),), None)
    day = (sunrise + TWILIGHT, sunset - TWILIGHT)
    return SunWindows(((day_start, sunrise), (sunset, day_end)), day if day[1] > day[0] else None)


@dataclass(frozen=True)
class Summary:
    """Totals of a set of lamp-days (a commune, the city, one lamp)."""

    lamps: int
    kwh: float
    burning_hours: float
    baseline_kwh: float
    profile: tuple[float, ...]
    day_burners: int
    dark_at_night: int

    @property
    def saving(self) -> float:
        return 1.0 - self.kwh / self.baseline_kwh if self.baseline_kwh > 0 else 0.0


def summarise(
    lamp_days: Iterable[tuple[str, LampDay]], rated_w: Mapping[str, float] | None = None
) -> Summary:
    """Totals over ``(lamp key, lamp-day)`` pairs. ``profile``: per local hour, the average
    level while metered, in percent of each lamp's full power (energy over full-power
    energy, both summed over the lamps)."""
    rated_w = rated_w or {}
    pairs = list(lamp_days)
    # A lamp's full power: rated, else the highest it drew on any day of the selection (a
    # night that crosses midnight leaves the dimmed hours alone on the second date).
    peak: dict[str, float] = {}
    for key, d in pairs:
        peak[key] = max(peak.get(key, 0.0), d.peak_w)
    lamps: set[str] = set()
    wh = on = base = 0.0
    hour_wh = [0.0] * 24
    hour_full = [0.0] * 24
    burners = dark = 0
    for key, d in pairs:
        lamps.add(key)
        full = rated_w.get(key) or peak[key]
        wh += d.wh
        on += d.on_seconds
        base += d.baseline_wh(full)
        for h in range(24):
            hour_wh[h] += d.profile[h]
            if d.profile[h] > 0:
                hour_full[h] += full  # one hour at full power, in Wh
        burners += d.day_burner
        dark += d.dark_at_night
    profile = tuple(
        round(100.0 * a / b, 1) if b > 0 else 0.0 for a, b in zip(hour_wh, hour_full, strict=True)
    )
    return Summary(len(lamps), wh / 1000.0, on / 3600.0, base / 1000.0, profile, burners, dark)
