"""Bus priority: which requests from approaching buses reach the signal controller.

A bus nearing a crossing asks for priority on its approach (the signal group it will cross
on); the controller then holds or brings forward that green. Left unchecked, a busy line
would starve the cross streets, and a radio repeating itself would look like many buses. So
this pure limiter, a function of (its state, a request, now), decides:

- ``GRANTED``: forwarded to the controller; lives until ``expiry_s`` after the request.
- ``MERGED``: the same bus on the same approach still has a live request: nothing new is
  forwarded and the live one keeps its expiry (a repeating radio cannot stretch it).
- ``LIMITED``: the approach already had ``max_requests`` grants in the last ``window_s``.
- ``EXPIRED``: reported by :meth:`BusPriorityLimiter.expire` when a grant's life ends.

Every outcome comes with an :class:`EquipmentEvent` (priority EVENT) for the outbox.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from edge.events import EquipmentConfigError, EquipmentEvent, Priority


@dataclass(frozen=True)
class BusPriorityLimits:
    """How much priority buses may take.

    Defaults leave the cross streets most cycles: three grants per approach per two minutes
    (a busy line passes every few minutes per direction), each living ten seconds,
    about the time from the detection point to the stop line.

    Attributes:
        max_requests: grants per approach within ``window_s``.
        window_s: sliding window for ``max_requests``.
        expiry_s: life of a granted request.
    """

    max_requests: int = 3
    window_s: float = 120.0
    expiry_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_requests < 1:
            raise EquipmentConfigError("bus_priority.max_requests", "must be at least 1")
        if self.window_s <= 0:
            raise EquipmentConfigError("bus_priority.window_s", "must be positive")
        if self.expiry_s <= 0:
            raise EquipmentConfigError("bus_priority.expiry_s", "must be positive")


class BusPriorityOutcome(enum.StrEnum):
    """What became of a request."""

    GRANTED = "granted"
    MERGED = "merged"
    LIMITED = "limited"
    EXPIRED = "expired"


@dataclass(frozen=True)
class BusPriorityRequest:
    """A bus asking for priority on an approach (a signal group id)."""

    approach: str
    bus_id: str


@dataclass(frozen=True)
class BusPriorityDecision:
    """The limiter's answer to one request.

    Attributes:
        outcome: granted, merged or limited.
        request: the request decided.
        expires_at: end of the live grant (the merged-into one for MERGED); None if LIMITED.
        event: what to record in the outbox.
    """

    outcome: BusPriorityOutcome
    request: BusPriorityRequest
    expires_at: datetime | None
    event: EquipmentEvent


class BusPriorityLimiter:
    """Rate limiter for one crossing's bus-priority requests (no I/O, time passed in)."""

    def __init__(self, device_id: str, limits: BusPriorityLimits | None = None) -> None:
        self._device_id = device_id
        self._limits = limits or BusPriorityLimits()
        self._grants: dict[str, deque[datetime]] = {}
        self._live: dict[BusPriorityRequest, datetime] = {}
        # Grants that ended before expire() saw them, kept so their EXPIRED event is not lost.
        self._ended: list[tuple[datetime, BusPriorityRequest]] = []

    @property
    def limits(self) -> BusPriorityLimits:
        """The limits in force."""
        return self._limits

    def request(self, request: BusPriorityRequest, now: datetime) -> BusPriorityDecision:
        """Decide on a request arriving at ``now``.

        Args:
            request: approach and bus.
            now: arrival time.

        Returns:
            The decision and the event to record. EXPIRED events only come from
            :meth:`expire`, including for a grant this request replaces.
        """
        live_until = self._live.get(request)
        if live_until is not None and live_until > now:
            return self._decide(BusPriorityOutcome.MERGED, request, live_until, now)
        if live_until is not None:
            del self._live[request]
            self._ended.append((live_until, request))
        window_start = now - timedelta(seconds=self._limits.window_s)
        grants = self._grants.setdefault(request.approach, deque())
        while grants and grants[0] <= window_start:
            grants.popleft()
        if len(grants) >= self._limits.max_requests:
            return self._decide(BusPriorityOutcome.LIMITED, request, None, now)
        grants.append(now)
        expires_at = now + timedelta(seconds=self._limits.expiry_s)
        self._live[request] = expires_at
        return self._decide(BusPriorityOutcome.GRANTED, request, expires_at, now)

    def expire(self, now: datetime) -> list[EquipmentEvent]:
        """Drop the grants whose life ended by ``now``; one EXPIRED event each, oldest first."""
        due = [(until, req) for req, until in self._live.items() if until <= now]
        for _, req in due:
            del self._live[req]
        ended = sorted(
            self._ended + due, key=lambda item: (item[0], item[1].approach, item[1].bus_id)
        )
        self._ended = []
        return [
            self._decide(BusPriorityOutcome.EXPIRED, req, until, now).event for until, req in ended
        ]

    def active(self, now: datetime) -> dict[BusPriorityRequest, datetime]:
        """Live grants at ``now`` and when each expires."""
        return {req: until for req, until in self._live.items() if until > now}

    def _decide(
        self,
        outcome: BusPriorityOutcome,
        request: BusPriorityRequest,
        expires_at: datetime | None,
        now: datetime,
    ) -> BusPriorityDecision:
        attributes = {"approach": request.approach, "bus_id": request.bus_id}
        if expires_at is not None:
            attributes["expires_at"] = expires_at.isoformat()
        event = EquipmentEvent(
            device_id=self._device_id,
            type=f"signal.bus_priority.{outcome.value}",
            priority=Priority.EVENT,
            at=now,
            message=f"bus {request.bus_id} on {request.approach}: {outcome.value}",
            attributes=attributes,
        )
        return BusPriorityDecision(outcome, request, expires_at, event)
