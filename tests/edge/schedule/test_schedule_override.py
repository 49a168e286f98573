"""Which operator override is in force: window, target, priority, ties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.schedule.model import DeviceKind, Override
from domain.schedule.override import active_override, override_changes

T0 = datetime(2026, 7, 14, 20, tzinfo=UTC)
HOUR = timedelta(hours=1)
LAMP = DeviceKind.LAMP


def lamp_override(
    name: str, start: datetime, hours: int, priority: int = 0, devices: frozenset[str] = frozenset()
) -> Override:
    return Override(
        id=name,
        start=start,
        expiry=start + hours * HOUR,
        kind=LAMP,
        priority=priority,
        device_ids=devices,
        lamp_level=100,
    )


def test_active_from_start_inclusive_to_expiry_exclusive() -> None:
    override = lamp_override("a", T0, 2)
    assert active_override([override], LAMP, "l1", T0 - timedelta(microseconds=1)) is None
    assert active_override([override], LAMP, "l1", T0) is override
    assert active_override([override], LAMP, "l1", T0 + 2 * HOUR - timedelta(seconds=1))
    assert active_override([override], LAMP, "l1", T0 + 2 * HOUR) is None


def test_targets_kind_and_listed_devices_only() -> None:
    override = lamp_override("a", T0, 2, devices=frozenset({"l1", "l2"}))
    assert active_override([override], LAMP, "l2", T0) is override
    assert active_override([override], LAMP, "l3", T0) is None
    assert active_override([override], DeviceKind.BOLLARD, "l1", T0) is None


def test_highest_priority_wins_then_latest_start_then_greatest_id() -> None:
    low = lamp_override("low", T0, 4, priority=1)
    high = lamp_override("high", T0 + HOUR, 1, priority=5)
    assert active_override([low, high], LAMP, "l1", T0 + HOUR) is high
    assert active_override([high, low], LAMP, "l1", T0 + HOUR) is high
    assert active_override([low, high], LAMP, "l1", T0 + 2 * HOUR) is low
    older = lamp_override("older", T0, 4, priority=5)
    newer = lamp_override("newer", T0 + HOUR, 4, priority=5)
    assert active_override([newer, older], LAMP, "l1", T0 + 2 * HOUR) is newer
    b = lamp_override("b", T0, 4, priority=5)
    a = lamp_override("a", T0, 4, priority=5)
    assert active_override([a, b], LAMP, "l1", T0) is b
    assert active_override([b, a], LAMP, "l1", T0) is b


def test_changes_lists_future_starts_and_expiries_of_targeting_overrides() -> None:
    mine = lamp_override("mine", T0, 2, devices=frozenset({"l1"}))
    other = lamp_override("other", T0 + HOUR, 2, devices=frozenset({"l9"}))
    assert sorted(override_changes([mine, other], LAMP, "l1", T0 - HOUR)) == [T0, T0 + 2 * HOUR]
    assert override_changes([mine, other], LAMP, "l1", T0) == [T0 + 2 * HOUR]
