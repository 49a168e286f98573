"""Site-local wall times to UTC instants, with daylight-saving changes decided explicitly.

Two wall times are not a single instant, and the engine must pick one:

- **Skipped hour** (spring: Europe/Paris on 29 March 2026 goes 02:00 -> 03:00): a wall
  time inside the gap, say 02:30, does not exist. It happens at the first instant after
  the gap, 03:00 local (01:00 UTC): a switch point written for 02:30 fires as soon as the
  clocks have jumped, never an hour late and never skipped.
- **Repeated hour** (autumn: on 25 October 2026, 02:00-03:00 happens twice): a wall time
  inside it happens at its *first* occurrence only (``fold=0``, summer time), so a switch
  point fires once.

A local day runs from :func:`day_start` of that date (its first instant, local midnight or
the end of a gap at midnight) to :func:`day_start` of the next date.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

_MIDNIGHT = time(0, 0)


def wall_to_utc(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The UTC instant at which wall time ``wall`` of local date ``day`` happens.

    Args:
        day: the local date.
        wall: the wall-clock time on that date (``tzinfo`` and ``fold`` ignored).
        zone: the site's zone.

    Returns:
        An aware UTC datetime: the first occurrence for a repeated wall time, the end of
        the gap for a skipped one.
    """
    return _wall_to_utc(day, wall.replace(tzinfo=None, fold=0), zone)


@lru_cache(maxsize=8192)
def _wall_to_utc(day: date, wall: time, zone: ZoneInfo) -> datetime:
    local = datetime.combine(day, wall, tzinfo=zone)
    instant = local.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None):
        return instant
    return _end_of_gap(local, zone)


def _end_of_gap(local: datetime, zone: ZoneInfo) -> datetime:
    # Inside a gap, fold=1 reads the wall time with the later (larger) offset: an instant
    # before the change; fold=0 with the earlier offset: an instant after it. The change
    # lies between; transitions fall on whole seconds, so bisect on seconds.
    before = int(local.replace(fold=1).astimezone(UTC).timestamp())
    after = int(local.replace(fold=0).astimezone(UTC).timestamp())
    offset_after = datetime.fromtimestamp(after, UTC).astimezone(zone).utcoffset()
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(zone).utcoffset() == offset_after:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, UTC)


def day_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) of local date ``day`` in ``zone``."""
    return _wall_to_utc(day, _MIDNIGHT, zone)


def local_date(instant: datetime, zone: ZoneInfo) -> date:
    """The local date in ``zone`` on which the aware ``instant`` falls."""
    return instant.astimezone(zone).date()


def next_day_start(instant: datetime, zone: ZoneInfo) -> datetime:
    """The first instant of the local date after the one ``instant`` falls on."""
    return day_start(local_date(instant, zone) + timedelta(days=1), zone)
