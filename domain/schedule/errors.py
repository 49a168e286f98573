"""The schedule engine's errors: each names the offending field (a path) and the reason.

- :class:`ScheduleEngineError` is the base of everything :mod:`domain.schedule` raises.
- :class:`ScheduleError`: a schedule document is invalid (refused whole; nothing changes).
- :class:`OverrideError`: an operator's override is invalid (a :class:`ScheduleError` too,
  so one ``except ScheduleError`` refuses any bad desired-state input).
- :class:`SiteError`: the site's coordinates or time zone are unusable.
- :class:`EvaluationError`: the engine was called wrongly (naive ``now``, a device kind
  without scheduled outputs).
"""

from __future__ import annotations

from foundation.errors import FieldError


class ScheduleEngineError(FieldError):
    """Base error of the schedule engine.

    Attributes:
        field: path of the offending field, e.g. ``programs[1].points[0].local_time``.
        reason: why it is refused, in words an operator understands.
    """


class ScheduleError(ScheduleEngineError):
    """A schedule (or override) document is invalid."""


class OverrideError(ScheduleError):
    """An override is invalid."""


class SiteError(ScheduleEngineError):
    """A site's latitude, longitude or time zone is invalid."""


class EvaluationError(ScheduleEngineError):
    """The evaluator was called with arguments it cannot honour."""
