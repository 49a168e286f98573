"""A simulated traffic-signal controller: lamps on gpiozero pins, its own conflict monitor.

A first-class backend of :class:`edge.equipment.signal.controller.SignalControllerDriver` for the
bench, the demo and integrators without a cabinet. Once a second of the injected clock it
drives the red, amber and green lamp outputs of every group from the running plan:

- Each group steps green -> amber (``amber_s``) -> red. A group turns green only when every
  conflicting group is red and its intergreen has elapsed, and stays green at least its
  minimum green, so plan changes, start-up and bus-priority extensions stay safe on their
  own (greens of the transition cycle are shortened, never overlapped).
- Start-up (from flashing or dark): steady amber on vehicle heads, then all red for at
  least ``startup_red_s`` before the first green, as French controllers do.
- Bus priority holds a green that is due to end for at most ``max_extension_s`` while a
  request on that approach lives.
- A new crossing (its groups, conflicts or intergreens changed by a new document) runs a
  safe intermediate: every green that conflicts, under the old *or* the new matrix, with
  another lit group ends at once (its minimum green is cut short: a conflict outranks
  it), and until every green of the old regime has ended and cleared, a group turns green
  only when it is clear under both matrices, with the longer of the two intergreens and
  amber + all-red times. Then the new matrix alone applies.

Its conflict monitor is independent of the plan and the sequencing above, like the
separate monitor unit of a real cabinet: it has its own list of conflicting groups (its
"compatibility card") and reads the lamp *pins*. A green lit with a green or amber of a
conflicting group, or a green lit while flashing, latches a conflict fault and the crossing flashes
amber until a technician resets it (:meth:`SimulatedSignalController.reset_conflict_monitor`).
The crossing also flashes amber while the agent is silent for more than ``watchdog_s``
(any call counts as a heartbeat) and recovers through the start-up sequence when it
returns. Flashing is simulated at one change per second (1 s on, 1 s off).

Its timers (minimum greens, ambers, intergreens, start-up, watchdog) count seconds of the
clock's monotonic reading, as a controller's own timer does: a wall-clock step never cuts
an amber or an intergreen. Only the plan's position in its cycle follows the wall clock
(shared cycle seconds make green waves); a step there is absorbed by those timers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gpiozero import LED, GPIOZeroError

from domain.signals.plans import (
    Intersection,
    SignalPlan,
    SignalPlanError,
    conflicting_pairs,
    validate_intersection,
    validate_plan,
)
from edge.equipment.signal.config import HeadPins
from edge.equipment.signal.controller import (
    DARK,
    FLASHING_AMBER,
    NORMAL,
    SignalCommunicationError,
    SignalModeValue,
    SignalRefusedError,
    SignalStatus,
)
from foundation.clock import Clock

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ConflictMonitor:
    """Reads lamp pins and reports what must never be lit together."""

    def __init__(
        self,
        *,
        greens: Mapping[str, Any],
        ambers: Mapping[str, Any],
        conflicts: Iterable[tuple[str, str]],
    ) -> None:
        """Watch ``greens`` and ``ambers`` (gpiozero pins by group) for ``conflicts``."""
        self._greens = dict(greens)
        self._ambers = dict(ambers)
        self._conflicts = frozenset(frozenset(pair) for pair in conflicts)

    def check(self, *, flashing: bool) -> list[str]:
        """Fault codes for what the pins show now; empty when safe.

        While flashing every amber blinks on purpose, so only greens are checked then.
        """
        lit_green = {g for g, pin in self._greens.items() if pin.state}
        if flashing:
            return [f"green_while_flashing:{g}" for g in sorted(lit_green)]
        permissive = lit_green | {g for g, pin in self._ambers.items() if pin.state}
        # Amber on both sides tells both to stop (the start-up sequence does it): a conflict
        # needs a green on at least one side.
        return [
            f"conflict:{a}/{b}"
            for a, b in conflicting_pairs(permissive, self._conflicts)
            if a in lit_green or b in lit_green
        ]


@dataclass
class _Head:
    red: LED
    green: LED
    amber: LED | None
    aspect: str = "red"
    since: int = 0
    green_start: int = 0
    green_end: int | None = None
    held_from: int | None = None


class SimulatedSignalController:
    """Runs a plan second by second on mock (or real) lamp pins."""

    def __init__(
        self,
        *,
        heads: Mapping[str, HeadPins],
        conflicts: Iterable[tuple[str, str]],
        clock: Clock,
        pin_factory: Any = None,
        watchdog_s: float = 10.0,
        startup_red_s: int = 5,
        max_extension_s: int = 10,
    ) -> None:
        """Open the lamp outputs (all off: the crossing flashes until told otherwise)."""
        self._clock = clock
        self._watchdog = timedelta(seconds=watchdog_s)
        self._startup_red_s = startup_red_s
        self._max_extension_s = max_extension_s
        self._leds: list[LED] = []

        def led(pin: int | str) -> LED:
            device = LED(pin, initial_value=False, pin_factory=pin_factory)
            self._leds.append(device)
            return device

        try:
            self._heads = {
                g: _Head(
                    red=led(p.red),
                    green=led(p.green),
                    amber=led(p.amber) if p.amber is not None else None,
                )
                for g, p in heads.items()
            }
        except GPIOZeroError as exc:
            self.close()
            raise SignalCommunicationError(f"cannot open the lamp pins: {exc}") from exc
        self._card = tuple(conflicts)
        self._monitor = ConflictMonitor(
            greens={g: h.green.pin for g, h in self._heads.items()},
            ambers={g: h.amber.pin for g, h in self._heads.items() if h.amber is not None},
            conflicts=self._card,
        )
        self._intersection: Intersection | None = None
        # Crossings replaced by a new document whose greens have not all cleared yet.
        self._previous: list[Intersection] = []
        self._changed_at = 0
        self._plan: SignalPlan | None = None
        self._mode: SignalModeValue = NORMAL
        self._shown: SignalModeValue = FLASHING_AMBER
        self._faults: list[str] = []
        self._startup_until = 0
        self._last_second: int | None = None
        self._last_heard = clock.monotonic()
        self._connected = True
        self._door_open = False
        self._watchdog_tripped = False
        self._priority: dict[str, datetime] = {}

    # --- the driver protocol ----------------------------------------------------------------

    async def set_plan(self, intersection: Intersection, plan: SignalPlan) -> None:
        self._heard()
        try:
            validate_intersection(intersection)
            validate_plan(plan, intersection)
        except SignalPlanError as exc:
            raise SignalRefusedError(f"invalid plan: {exc}") from exc
        groups = {g.id for g in intersection.groups}
        if groups != set(self._heads):
            raise SignalRefusedError(
                f"groups {sorted(groups)} do not match the heads {sorted(self._heads)}"
            )
        for a, b in self._card:
            if frozenset((a, b)) not in intersection.conflicts:
                raise SignalRefusedError(f"plan misses the conflict {a}/{b} the monitor knows")
        old = self._intersection
        self._intersection, self._plan = intersection, plan
        if old is not None and old != intersection and self._shown == NORMAL:
            self._previous.append(old)
            second = self._second()
            self._changed_at = second
            # At once, not at the next tick: a pair green under the old crossing may
            # conflict under the new one.
            self._end_conflicting_greens(second)
            self._write(second)

    async def set_mode(self, mode: SignalModeValue) -> None:
        self._heard()
        if mode not in (NORMAL, FLASHING_AMBER, DARK):
            raise SignalRefusedError(f"unknown mode {mode}")
        self._mode = mode

    async def request_bus_priority(self, approach: str, bus_id: str, expires_at: datetime) -> None:
        self._heard()
        if approach not in self._heads:
            raise SignalRefusedError(f"no group {approach!r}")
        self._priority[approach] = max(expires_at, self._priority.get(approach, expires_at))

    async def heartbeat(self) -> None:
        self._heard()

    async def read_status(self) -> SignalStatus:
        self._heard()
        return SignalStatus(
            plan=self._plan.id if self._plan is not None else "",
            mode=self._shown,
            conflict_fault=any(f.startswith(("conflict:", "green_")) for f in self._faults),
            door_open=self._door_open,
            communication_ok=not self._watchdog_tripped,
            faults=tuple(self._faults),
        )

    async def run(self) -> None:
        while True:
            self.step()
            now = self._clock.monotonic()
            await self._clock.sleep(math.floor(now) + 1 - now)

    def close(self) -> None:
        for device in self._leds:
            device.close()
        self._leds.clear()

    # --- bench hooks ------------------------------------------------------------------------

    def _second(self) -> int:
        """The controller's own timer, in whole monotonic seconds."""
        return math.floor(self._clock.monotonic())

    def _cycle_second(self) -> int:
        """The plan's clock: whole seconds of wall time (Unix), for the cycle position."""
        return (self._clock.now() - _EPOCH) // timedelta(seconds=1)

    def step(self) -> None:
        """Bring the lamps up to the clock's current second (what :meth:`run` does each second)."""
        second = self._second()
        if second == self._last_second:
            return
        self._last_second = second
        silent = self._clock.monotonic() - self._last_heard
        self._watchdog_tripped = silent > self._watchdog.total_seconds()
        self._check_monitor()
        mode = self._effective_mode()
        if mode == NORMAL:
            if self._shown != NORMAL:
                self._start_up(second)
            self._sequence(second)
        self._shown = mode
        self._write(second)
        if self._check_monitor():
            self._shown = FLASHING_AMBER
            self._write(second)

    def aspects(self) -> dict[str, str]:
        """What each group's lamps show, read from the pins.

        Returns:
            Group id -> ``red``, ``amber``, ``green``, ``dark``, or the lit lamps joined by
            ``+`` (e.g. ``red+green``) when a fault lights several.
        """
        shown = {}
        for group, head in self._heads.items():
            lamps = (("red", head.red), ("amber", head.amber), ("green", head.green))
            lit = [name for name, device in lamps if device is not None and device.pin.state]
            shown[group] = "+".join(lit) or "dark"
        return shown

    @property
    def plan(self) -> SignalPlan | None:
        """The plan it runs (or will run once in normal mode)."""
        return self._plan

    @property
    def priorities(self) -> dict[str, datetime]:
        """Bus-priority requests received, by approach, with their expiry."""
        return dict(self._priority)

    def set_door(self, open_: bool) -> None:
        """Open or close the cabinet door."""
        self._door_open = open_

    def disconnect(self) -> None:
        """Cut the agent's link: every driver call fails until :meth:`reconnect`."""
        self._connected = False

    def reconnect(self) -> None:
        """Restore the agent's link."""
        self._connected = True

    def reset_conflict_monitor(self) -> None:
        """The technician's reset key: clear a latched conflict fault."""
        self._faults = [f for f in self._faults if not f.startswith(("conflict:", "green_"))]

    # --- internals --------------------------------------------------------------------------

    def _heard(self) -> None:
        if not self._connected:
            raise SignalCommunicationError("link to the simulated controller is cut")
        self._last_heard = self._clock.monotonic()

    def _check_monitor(self) -> bool:
        found = self._monitor.check(flashing=self._shown != NORMAL)
        for fault in found:
            if fault not in self._faults:
                self._faults.append(fault)
        return bool(found)

    def _effective_mode(self) -> SignalModeValue:
        self._faults = [f for f in self._faults if f not in ("agent_watchdog", "no_plan")]
        if self._watchdog_tripped:
            self._faults.append("agent_watchdog")
        if self._mode == NORMAL and self._plan is None:
            self._faults.append("no_plan")
        if self._faults:
            return FLASHING_AMBER
        return self._mode

    def _start_up(self, second: int) -> None:
        assert self._intersection is not None
        for group, head in self._heads.items():
            info = self._intersection.group(group)
            steady_amber = head.amber is not None and info is not None and info.amber_s > 0
            head.aspect = "amber" if steady_amber else "red"
            head.since, head.green_end, head.held_from = second, second, None
        self._startup_until = second + self._startup_red_s
        self._previous = []

    def _matrices(self) -> list[Intersection]:
        assert self._intersection is not None
        return [self._intersection, *self._previous]

    def _needed(self, from_group: str, to_group: str) -> int | None:
        """The longest intergreen from -> to over the crossings in force, None: no conflict."""
        found = [m.intergreen(from_group, to_group) for m in self._matrices()]
        seconds = [s for s in found if s is not None]
        return max(seconds) if seconds else None

    def _clearance(self, group: str) -> tuple[int, int]:
        """(amber_s, amber_s + all_red_s) of ``group``, the longest over the crossings."""
        infos = [i for m in self._matrices() if (i := m.group(group)) is not None]
        amber = max(i.amber_s for i in infos)
        return amber, max(i.amber_s + i.all_red_s for i in infos)

    def _end_green(self, head: _Head, group: str, second: int) -> None:
        amber = head.amber is not None and self._clearance(group)[0] > 0
        head.aspect, head.since = ("amber" if amber else "red"), second
        head.green_end, head.held_from = second, None

    def _end_conflicting_greens(self, second: int) -> None:
        """End every green lit together with a group it conflicts with under any crossing
        in force (the safe intermediate of a crossing change)."""
        lit = {g for g, h in self._heads.items() if h.aspect != "red"}
        ending = [
            group
            for group, head in self._heads.items()
            if head.aspect == "green"
            and any(
                self._needed(group, other) is not None or self._needed(other, group) is not None
                for other in lit - {group}
            )
        ]
        for group in ending:
            self._end_green(self._heads[group], group, second)

    def _transition_over(self, second: int) -> bool:
        for group, head in self._heads.items():
            if head.aspect != "red" and head.green_start < self._changed_at:
                return False
            if head.green_end is None:
                continue
            for old in self._previous:
                for other in self._heads:
                    needed = old.intergreen(group, other)
                    if needed is not None and second - head.green_end < needed:
                        return False
        return True

    def _sequence(self, second: int) -> None:
        assert self._intersection is not None and self._plan is not None
        if self._previous:
            self._end_conflicting_greens(second)
        wanted = self._plan.greens_at(self._plan.cycle_second(self._cycle_second()))
        self._priority = {a: t for a, t in self._priority.items() if t > self._clock.now()}
        for group, head in self._heads.items():
            info = self._intersection.group(group)
            assert info is not None
            if head.aspect == "green" and group not in wanted:
                if group in self._priority and (
                    head.held_from is None or second - head.held_from < self._max_extension_s
                ):
                    head.held_from = second if head.held_from is None else head.held_from
                elif second - head.since >= info.min_green_s:
                    self._end_green(head, group, second)
            elif head.aspect == "green":
                head.held_from = None
            if head.aspect == "amber" and second - head.since >= self._clearance(group)[0]:
                head.aspect, head.since = "red", second
        for group, head in self._heads.items():
            if head.aspect == "red" and group in wanted and self._may_start(group, second):
                head.aspect, head.since, head.green_start = "green", second, second
        if self._previous and self._transition_over(second):
            self._previous = []

    def _may_start(self, group: str, second: int) -> bool:
        assert self._intersection is not None
        if second < self._startup_until:
            return False
        head = self._heads[group]
        if head.green_end is not None and second - head.green_end < self._clearance(group)[1]:
            return False
        for other, other_head in self._heads.items():
            needed = self._needed(other, group)
            if needed is None:
                continue
            if other_head.aspect != "red":
                return False
            if other_head.green_end is not None and second - other_head.green_end < needed:
                return False
        return True

    def _write(self, second: int) -> None:
        for head in self._heads.values():
            if self._shown == NORMAL:
                lit = head.aspect
            elif self._shown == FLASHING_AMBER and second % 2 == 0:
                lit = "amber"
            else:
                lit = "dark"
            head.red.value = lit == "red"
            head.green.value = lit == "green"
            if head.amber is not None:
                head.amber.value = lit == "amber"
