"""Bus priority limiter: grants, merges, limits and expiries, each logged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edge.equipment.signal.bus_priority import (
    BusPriorityLimiter,
    BusPriorityLimits,
    BusPriorityOutcome,
    BusPriorityRequest,
)
from edge.events import EquipmentConfigError, Priority

T0 = datetime(2025, 3, 14, 8, 0, tzinfo=UTC)
GRANTED, MERGED, LIMITED = (
    BusPriorityOutcome.GRANTED,
    BusPriorityOutcome.MERGED,
    BusPriorityOutcome.LIMITED,
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def limiter(**limits: float) -> BusPriorityLimiter:
    return BusPriorityLimiter("darcy", BusPriorityLimits(**limits))  # type: ignore[arg-type]


def test_a_request_is_granted_with_an_expiry_and_logged() -> None:
    decision = limiter(expiry_s=8).request(BusPriorityRequest("north", "bus-412"), at(0))
    assert decision.outcome is GRANTED
    assert decision.expires_at == at(8)
    event = decision.event
    assert (event.device_id, event.type, event.priority, event.at) == (
        "darcy",
        "signal.bus_priority.granted",
        Priority.EVENT,
        at(0),
    )
    assert event.attributes == {
        "approach": "north",
        "bus_id": "bus-412",
        "expires_at": at(8).isoformat(),
    }


def test_the_same_bus_repeating_itself_is_merged_and_keeps_its_expiry() -> None:
    lim = limiter(max_requests=2, expiry_s=10)
    req = BusPriorityRequest("north", "bus-412")
    lim.request(req, at(0))
    again = lim.request(req, at(9))
    assert again.outcome is MERGED
    assert again.expires_at == at(10)
    assert again.event.type == "signal.bus_priority.merged"
    # Merges do not use up the approach's quota.
    assert lim.request(BusPriorityRequest("north", "bus-7"), at(9)).outcome is GRANTED


def test_after_its_expiry_the_same_bus_is_a_new_request() -> None:
    lim = limiter(expiry_s=10)
    req = BusPriorityRequest("north", "bus-412")
    lim.request(req, at(0))
    assert lim.request(req, at(10)).outcome is GRANTED
    # The replaced grant still gets its EXPIRED event.
    expired = lim.expire(at(10))
    assert [(e.type, e.attributes["expires_at"]) for e in expired] == [
        ("signal.bus_priority.expired", at(10).isoformat())
    ]


def test_an_approach_is_limited_within_the_window_then_freed() -> None:
    lim = limiter(max_requests=2, window_s=60, expiry_s=5)
    outcomes = [
        lim.request(BusPriorityRequest("north", f"bus-{i}"), at(i)).outcome for i in range(3)
    ]
    assert outcomes == [GRANTED, GRANTED, LIMITED]
    limited = lim.request(BusPriorityRequest("north", "bus-9"), at(59.9))
    assert limited.outcome is LIMITED
    assert limited.expires_at is None
    assert limited.event.type == "signal.bus_priority.limited"
    assert "expires_at" not in limited.event.attributes
    # The first grant leaves the window at 60 s.
    assert lim.request(BusPriorityRequest("north", "bus-9"), at(60)).outcome is GRANTED


def test_approaches_are_limited_separately() -> None:
    lim = limiter(max_requests=1)
    assert lim.request(BusPriorityRequest("north", "a"), at(0)).outcome is GRANTED
    assert lim.request(BusPriorityRequest("north", "b"), at(1)).outcome is LIMITED
    assert lim.request(BusPriorityRequest("east", "b"), at(1)).outcome is GRANTED


def test_expire_reports_each_grant_once_oldest_first() -> None:
    lim = limiter(expiry_s=10)
    lim.request(BusPriorityRequest("north", "b"), at(2))
    lim.request(BusPriorityRequest("east", "a"), at(0))
    assert lim.expire(at(9.9)) == []
    assert set(lim.active(at(9.9))) == {
        BusPriorityRequest("north", "b"),
        BusPriorityRequest("east", "a"),
    }
    events = lim.expire(at(12))
    assert [(e.attributes["approach"], e.priority) for e in events] == [
        ("east", Priority.EVENT),
        ("north", Priority.EVENT),
    ]
    assert lim.expire(at(20)) == []
    assert lim.active(at(12)) == {}


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ({"max_requests": 0}, "bus_priority.max_requests"),
        ({"window_s": 0}, "bus_priority.window_s"),
        ({"expiry_s": -1}, "bus_priority.expiry_s"),
    ],
)
def test_limits_must_be_positive(limits: dict[str, float], field: str) -> None:
    with pytest.raises(EquipmentConfigError) as caught:
        BusPriorityLimits(**limits)  # type: ignore[arg-type]
    assert caught.value.field == field
