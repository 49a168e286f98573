"""Public holidays for the cabinet agent, worked out by a child interpreter.

The ``holidays`` package, imported, holds every country's calendar: ~15 MiB of a cabinet's
memory, a sixth of the agent, for a dozen dates a year. The agent (``ondijon edge run``)
therefore installs :class:`HolidayWindow` as the holiday source of
:mod:`domain.schedule.calendar`: the first time a region is asked for, one child
(``python -m edge.public_holidays REGION FIRST LAST``, the agent's own interpreter, path
and environment, so the same release) checks the region and prints its holidays for the
years around the one asked (:data:`YEARS_BEFORE`, :data:`YEARS_AFTER`); the agent keeps
them for the life of the process. A region the package does not know is refused with the
package's words, as the orchestrator refuses it.

A child that cannot run or answer (no memory for a second interpreter, a timeout, a broken
install) hands the question to the package in this process for good, logged once: it
costs the memory, never a wrong day.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import date

from domain.schedule.calendar import LibraryHolidays
from domain.schedule.errors import ScheduleError
from foundation.escaping import escape

log = logging.getLogger("ondijon.edge.holidays")

# The years a child works out around the one asked: one question per region, in practice,
# for the life of the agent (a dozen dates a year, kept in memory).
YEARS_BEFORE = 1
YEARS_AFTER = 10
# The agent waits for the child (the schedule engine is synchronous): at start-up, before it
# reports ready, and when a document names a region it has not seen, as it used to wait for
# the package's import (most of the child's time: ~2 s on a busy x86 core, more on a Pi).
# Waiting for a slow child is no worse than that; this is for one that hangs.
CHILD_TIMEOUT_S = 60.0

Run = Callable[[Sequence[str]], str]


def run_child(args: Sequence[str]) -> str:
    """Run ``python -m edge.public_holidays ARGS`` and return what it printed.

    Raises:
        OSError, subprocess.SubprocessError: it could not run, failed or hung.
    """
    done = subprocess.run(
        # -P: no working directory ahead of the release on the child's path (as the launcher).
        [sys.executable, "-P", "-m", "edge.public_holidays", *args],
        capture_output=True,
        check=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    return done.stdout


class HolidayWindow:
    """A :class:`~domain.schedule.calendar.HolidaySource` whose answers come from a child.

    Args:
        this_year: the year a region's first window is centred on when it is only checked
            (the agent's schedule asks for the year it evaluates).
        run: how the child is run (tests count or break it).
    """

    def __init__(
        self, *, this_year: Callable[[], int] = lambda: date.today().year, run: Run = run_child
    ) -> None:
        self._this_year = this_year
        self._run = run
        self._days: dict[str, dict[int, frozenset[date]]] = {}
        self._refused: dict[str, tuple[str, str]] = {}  # region -> (field, reason)
        self._library: LibraryHolidays | None = None
        self.children = 0  # how many were run

    def check_region(self, region: str) -> None:
        if self._library is None and region not in self._days:
            self._fetch(region, self._this_year())
        if self._library is not None:  # the child failed, now or before
            self._library.check_region(region)

    def days(self, region: str, year: int) -> frozenset[date]:
        if self._library is None and year not in self._days.get(region, {}):
            self._fetch(region, year)
        if self._library is not None:
            return self._library.days(region, year)
        return self._days[region][year]

    def _fetch(self, region: str, year: int) -> None:
        if region in self._refused:
            raise ScheduleError(*self._refused[region])
        first, last = year - YEARS_BEFORE, year + YEARS_AFTER
        self.children += 1
        try:
            answer = json.loads(self._run([region, str(first), str(last)]))
            if "refused" in answer:
                refused = answer["refused"]
                self._refused[region] = (str(refused["field"]), str(refused["reason"]))
                raise ScheduleError(*self._refused[region])
            days = {
                int(y): frozenset(date.fromisoformat(d) for d in listed)
                for y, listed in answer["days"].items()
            }
            if set(days) != set(range(first, last + 1)):
                raise ValueError(f"years {sorted(days)}, asked {first}..{last}")
        except ScheduleError:
            raise
        except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "public holidays: the child process failed (%s); the holidays package is "
                "loaded in the agent instead",
                escape(f"{type(exc).__name__}: {exc}"),
            )
            self._library = LibraryHolidays()
            return
        self._days.setdefault(region, {}).update(days)


def answer(region: str, first: int, last: int) -> dict[str, object]:
    """What the child prints: the region refused, or its holidays for ``first..last``."""
    library = LibraryHolidays()
    try:
        library.check_region(region)
    except ScheduleError as exc:
        return {"refused": {"field": exc.field, "reason": exc.reason}}
    return {
        "days": {
            str(year): sorted(day.isoformat() for day in library.days(region, year))
            for year in range(first, last + 1)
        }
    }


def main(argv: Sequence[str] | None = None) -> int:
    region, first, last = sys.argv[1:] if argv is None else argv
    print(json.dumps(answer(region, int(first), int(last))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
