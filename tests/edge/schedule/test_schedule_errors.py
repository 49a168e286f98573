"""The error hierarchy: one except clause per concern, field and reason kept apart."""

from __future__ import annotations

import pytest

from domain.schedule.errors import (
    EvaluationError,
    OverrideError,
    ScheduleEngineError,
    ScheduleError,
    SiteError,
)


def test_message_names_field_then_reason() -> None:
    error = ScheduleError("programs[1].points[0].local_time", "expected HH:MM")
    assert str(error) == "programs[1].points[0].local_time: expected HH:MM"
    assert error.field == "programs[1].points[0].local_time"
    assert error.reason == "expected HH:MM"


def test_bad_overrides_are_refused_by_the_same_clause_as_bad_schedules() -> None:
    with pytest.raises(ScheduleError):
        raise OverrideError("expiry", "must be after start")


@pytest.mark.parametrize("kind", [ScheduleError, OverrideError, SiteError, EvaluationError])
def test_everything_is_a_schedule_engine_error(kind: type[ScheduleEngineError]) -> None:
    assert issubclass(kind, ScheduleEngineError)
    assert not issubclass(SiteError, ScheduleError)
