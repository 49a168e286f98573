"""Operators' overrides: which one is in force for a device, and when that can change.

An override is active when ``start <= now < expiry`` and it targets the device (its kind,
and its id unless ``device_ids`` is empty). Among active ones the highest ``priority``
wins; on a tie the latest ``start`` (the most recent order), then the greatest ``id`` so
the choice never depends on the order overrides are listed. When it expires the next one
down, or the schedule, resumes by itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from domain.schedule.model import DeviceKind, Override


def active_override(
    overrides: Iterable[Override], kind: DeviceKind, device_id: str, now: datetime
) -> Override | None:
    """The override in force for that device at ``now`` (aware), or None."""
    best: Override | None = None
    for override in overrides:
        if not override.applies_to(kind, device_id):
            continue
        if not override.start <= now < override.expiry:
            continue
        if best is None or _rank(override) > _rank(best):
            best = override
    return best


def _rank(override: Override) -> tuple[int, datetime, str]:
    return (override.priority, override.start, override.id)


def override_changes(
    overrides: Iterable[Override], kind: DeviceKind, device_id: str, after: datetime
) -> list[datetime]:
    """Starts and expiries, later than ``after``, of the overrides targeting that device."""
    instants: list[datetime] = []
    for override in overrides:
        if override.applies_to(kind, device_id):
            instants.extend(at for at in (override.start, override.expiry) if at > after)
    return instants
