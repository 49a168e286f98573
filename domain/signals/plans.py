"""Signal timing plans: the model and the checks a plan must pass before any controller runs it.

Pure and I/O free; the agent calls it before handing a plan to a controller and the
orchestrator's admin API calls it to refuse a bad document early. Semantics follow
``protos/ondijon/v1/signal.proto``:

- A plan's cycle has ``cycle_s`` seconds; a green interval is green on seconds
  ``start_s .. end_s - 1`` of the cycle and wraps when ``end_s < start_s``. ``start_s == end_s``
  is refused (empty or whole cycle: ambiguous); ``0 .. cycle_s`` is green the whole cycle.
- Cycle second at Unix time ``t`` is ``(t - offset_s) mod cycle_s``, so every crossing running
  the same cycle shares one reference (green waves).
- After its green a group shows amber for ``amber_s`` then red; ``all_red_s`` is the extra
  clearance before a conflicting group may go green.
- An intergreen entry ``(A, B, s)`` says B may turn green only ``s`` seconds after A's green
  ends, and declares A and B conflicting. The reverse entry ``(B, A)`` is required: a
  conflict crossed in one direction is crossed in the other, and a missing entry means a
  clearance time nobody computed.

Every value is checked where the model is built (the dataclasses' constructors): a time
is a whole number of seconds in ``0 .. 2**32 - 1`` (the wire's uint32), an id a string, a
kind a known one; NaN, negative or fractional seconds are refused with the field named,
however the plan was built (decoded from the wire or written as objects). The rules that
relate values to each other (minimum greens, intergreens, conflicts) are checked by
:func:`validate_plans`, which every route to a controller passes through, and against
the crossing's safety card by :mod:`domain.signals.safety_card`.

Limits (typical French/EU practice): amber at least 3 s for vehicle and bus groups (IISR,
6th part: 3 s in built-up areas, 5 s outside); pedestrian heads are red/green only in
France, so their amber may be 0. All-red at least 1 s for every group (common practice for
the clearance red, German RiLSA likewise). Cycle between 30 and 240 s. A group that is never
green in a plan is allowed: it stays red.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Set
from dataclasses import dataclass

from foundation.errors import FieldError
from protos.ondijon.v1 import signal_pb2

MIN_CYCLE_S = 30
MAX_CYCLE_S = 240
MIN_VEHICLE_AMBER_S = 3
MIN_ALL_RED_S = 1
MAX_SECONDS = 2**32 - 1


class SignalPlanError(FieldError, ValueError):
    """A signal plans document is refused.

    Attributes:
        field: path of the offending field, e.g. ``plans[1].greens[0].end_s``.
        reason: why it is refused.
    """


class PlanStructureError(SignalPlanError):
    """Missing, duplicate or unknown identifiers, or values outside their range."""


class PlanTimingError(SignalPlanError):
    """A minimum green, amber, all-red or cycle length rule is broken."""


class PlanConflictError(SignalPlanError):
    """Conflicting groups green together, or too soon after one another."""


def _seconds(value: object, field: str) -> None:
    """Refuse anything but a whole number of seconds the wire can carry."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlanStructureError(field, f"must be a whole number of seconds, got {value!r}")
    if not 0 <= value <= MAX_SECONDS:
        raise PlanStructureError(field, f"must be between 0 and {MAX_SECONDS} s, got {value}")


def _text(value: object, field: str) -> None:
    if not isinstance(value, str):
        raise PlanStructureError(field, f"must be a string, got {value!r}")


class GroupKind(enum.IntEnum):
    """What a signal group controls (values of ``SignalGroupKind``)."""

    UNSPECIFIED = signal_pb2.SIGNAL_GROUP_KIND_UNSPECIFIED
    VEHICLE = signal_pb2.SIGNAL_GROUP_KIND_VEHICLE
    PEDESTRIAN = signal_pb2.SIGNAL_GROUP_KIND_PEDESTRIAN
    BUS = signal_pb2.SIGNAL_GROUP_KIND_BUS


@dataclass(frozen=True)
class SignalGroup:
    """One set of heads that always show the same aspect."""

    id: str
    kind: GroupKind
    min_green_s: int
    amber_s: int
    all_red_s: int

    def __post_init__(self) -> None:
        _text(self.id, "id")
        if not isinstance(self.kind, GroupKind):
            raise PlanStructureError("kind", f"must be a GroupKind, got {self.kind!r}")
        for name in ("min_green_s", "amber_s", "all_red_s"):
            _seconds(getattr(self, name), name)


@dataclass(frozen=True)
class Intergreen:
    """``to_group`` may turn green only ``seconds`` after ``from_group``'s green ends."""

    from_group: str
    to_group: str
    seconds: int

    def __post_init__(self) -> None:
        _text(self.from_group, "from_group")
        _text(self.to_group, "to_group")
        _seconds(self.seconds, "seconds")


@dataclass(frozen=True)
class Intersection:
    """The groups of one crossing and their intergreen matrix."""

    groups: tuple[SignalGroup, ...]
    intergreens: tuple[Intergreen, ...] = ()

    def group(self, group_id: str) -> SignalGroup | None:
        """The group called ``group_id``, or None."""
        return next((g for g in self.groups if g.id == group_id), None)

    def intergreen(self, from_group: str, to_group: str) -> int | None:
        """Seconds from the end of ``from_group``'s green to ``to_group``'s; None: no conflict."""
        for entry in self.intergreens:
            if entry.from_group == from_group and entry.to_group == to_group:
                return entry.seconds
        return None

    @property
    def conflicts(self) -> frozenset[frozenset[str]]:
        """Every conflicting pair, unordered."""
        return frozenset(
            frozenset((e.from_group, e.to_group))
            for e in self.intergreens
            if e.from_group != e.to_group
        )


@dataclass(frozen=True)
class GreenInterval:
    """Green for ``group`` from ``start_s`` to ``end_s`` of the cycle (wraps if end < start)."""

    group: str
    start_s: int
    end_s: int

    def __post_init__(self) -> None:
        _text(self.group, "group")
        _seconds(self.start_s, "start_s")
        _seconds(self.end_s, "end_s")

    def length(self, cycle_s: int) -> int:
        """Seconds of green in one cycle."""
        return (
            self.end_s - self.start_s
            if self.end_s > self.start_s
            else (self.end_s + cycle_s - self.start_s)
        )

    def covers(self, cycle_second: int, cycle_s: int) -> bool:
        """Whether the group is green at ``cycle_second``."""
        return (cycle_second - self.start_s) % cycle_s < self.length(cycle_s)

    def seconds(self, cycle_s: int) -> frozenset[int]:
        """The cycle seconds during which the group is green."""
        return frozenset((self.start_s + k) % cycle_s for k in range(self.length(cycle_s)))


@dataclass(frozen=True)
class SignalPlan:
    """One timing plan: which groups are green at each second of the cycle."""

    id: str
    cycle_s: int
    offset_s: int
    greens: tuple[GreenInterval, ...]

    def __post_init__(self) -> None:
        _text(self.id, "id")
        _seconds(self.cycle_s, "cycle_s")
        _seconds(self.offset_s, "offset_s")
        if not all(isinstance(g, GreenInterval) for g in self.greens):
            raise PlanStructureError("greens", "must be GreenInterval values")

    def cycle_second(self, unix_second: int) -> int:
        """Position in the cycle at Unix time ``unix_second``."""
        return (unix_second - self.offset_s) % self.cycle_s

    def greens_at(self, cycle_second: int) -> frozenset[str]:
        """Groups green at ``cycle_second`` of the cycle."""
        return frozenset(g.group for g in self.greens if g.covers(cycle_second, self.cycle_s))


@dataclass(frozen=True)
class SignalPlans:
    """A crossing and its plans, as carried by the SignalPlans document."""

    intersection: Intersection
    plans: tuple[SignalPlan, ...]

    def plan(self, plan_id: str) -> SignalPlan | None:
        """The plan called ``plan_id``, or None."""
        return next((p for p in self.plans if p.id == plan_id), None)


def plans_from_proto(msg: signal_pb2.SignalPlans) -> SignalPlans:
    """Convert the wire message to the model (no checks: call :func:`validate_plans`).

    Args:
        msg: the SignalPlans document payload.

    Returns:
        The same content as frozen dataclasses; an unknown group kind becomes UNSPECIFIED.
    """
    known_kinds = {int(k) for k in GroupKind}
    groups = tuple(
        SignalGroup(
            id=g.id,
            kind=GroupKind(g.kind) if g.kind in known_kinds else GroupKind.UNSPECIFIED,
            min_green_s=g.min_green_s,
            amber_s=g.amber_s,
            all_red_s=g.all_red_s,
        )
        for g in msg.intersection.groups
    )
    intergreens = tuple(
        Intergreen(e.from_group, e.to_group, e.seconds) for e in msg.intersection.intergreens
    )
    plans = tuple(
        SignalPlan(
            id=p.id,
            cycle_s=p.cycle_s,
            offset_s=p.offset_s,
            greens=tuple(GreenInterval(g.group, g.start_s, g.end_s) for g in p.greens),
        )
        for p in msg.plans
    )
    return SignalPlans(Intersection(groups, intergreens), plans)


def conflicting_pairs(
    green_groups: Set[str], conflicts: Iterable[frozenset[str]]
) -> list[tuple[str, str]]:
    """The conflicting pairs among ``green_groups``, each sorted, the list sorted."""
    found = {tuple(sorted(pair)) for pair in conflicts if len(pair) == 2 and pair <= green_groups}
    return sorted((a, b) for a, b in found)


def check_conflicts(green_groups: Set[str], intersection: Intersection) -> list[tuple[str, str]]:
    """The conflicting pairs of ``intersection`` that are all in ``green_groups``.

    Args:
        green_groups: ids of the groups showing green (or any permissive aspect).
        intersection: whose intergreen matrix declares the conflicts.

    Returns:
        Sorted ``(a, b)`` pairs with ``a < b``; empty when the set is safe.
    """
    return conflicting_pairs(green_groups, intersection.conflicts)


def validate_plans(plans: SignalPlans) -> None:
    """Check a whole document: the intersection, then every plan.

    Raises:
        SignalPlanError: the first rule broken, naming the field, e.g.
            ``plans[1].greens[0].end_s``.
    """
    validate_intersection(plans.intersection)
    seen: dict[str, int] = {}
    for p, plan in enumerate(plans.plans):
        if plan.id in seen:
            raise PlanStructureError(
                f"plans[{p}].id", f"duplicate id {plan.id!r} (also plans[{seen[plan.id]}])"
            )
        seen[plan.id] = p
        validate_plan(plan, plans.intersection, field=f"plans[{p}]")


def validate_intersection(intersection: Intersection, field: str = "intersection") -> None:
    """Check the groups and the intergreen matrix of a crossing.

    Raises:
        SignalPlanError: naming e.g. ``intersection.intergreens[2].seconds``.
    """
    if not intersection.groups:
        raise PlanStructureError(f"{field}.groups", "a crossing needs at least one group")
    seen: dict[str, int] = {}
    for i, group in enumerate(intersection.groups):
        at = f"{field}.groups[{i}]"
        if not group.id:
            raise PlanStructureError(f"{at}.id", "must not be empty")
        if group.id in seen:
            raise PlanStructureError(
                f"{at}.id", f"duplicate id {group.id!r} (also groups[{seen[group.id]}])"
            )
        seen[group.id] = i
        if group.kind == GroupKind.UNSPECIFIED:
            raise PlanStructureError(f"{at}.kind", "must be vehicle, pedestrian or bus")
        if group.kind != GroupKind.PEDESTRIAN and group.amber_s < MIN_VEHICLE_AMBER_S:
            raise PlanTimingError(
                f"{at}.amber_s",
                f"{group.amber_s} s is below {MIN_VEHICLE_AMBER_S} s"
                f" for a {group.kind.name.lower()} group",
            )
        if group.all_red_s < MIN_ALL_RED_S:
            raise PlanTimingError(
                f"{at}.all_red_s", f"{group.all_red_s} s is below {MIN_ALL_RED_S} s"
            )
    pairs: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(intersection.intergreens):
        at = f"{field}.intergreens[{i}]"
        for name in ("from_group", "to_group"):
            ref = getattr(entry, name)
            if ref not in seen:
                raise PlanStructureError(f"{at}.{name}", f"unknown group {ref!r}")
        if entry.from_group == entry.to_group:
            raise PlanStructureError(f"{at}.to_group", "a group does not conflict with itself")
        key = (entry.from_group, entry.to_group)
        if key in pairs:
            raise PlanStructureError(
                f"{at}.to_group",
                f"duplicate entry {key[0]}->{key[1]} (also intergreens[{pairs[key]}])",
            )
        pairs[key] = i
        source = intersection.groups[seen[entry.from_group]]
        floor = source.amber_s + source.all_red_s
        if entry.seconds < floor:
            raise PlanTimingError(
                f"{at}.seconds",
                f"{entry.seconds} s is below amber + all-red of {source.id!r} ({floor} s)",
            )
    for (a, b), i in pairs.items():
        if (b, a) not in pairs:
            raise PlanStructureError(
                f"{field}.intergreens[{i}]", f"conflict {a}->{b} has no reverse entry {b}->{a}"
            )


def validate_plan(plan: SignalPlan, intersection: Intersection, field: str = "plan") -> None:
    """Check one plan against an (already valid) intersection.

    Raises:
        SignalPlanError: naming e.g. ``plans[1].greens[0].end_s`` when ``field`` is
            ``plans[1]``.
    """
    if not plan.id:
        raise PlanStructureError(f"{field}.id", "must not be empty")
    if not MIN_CYCLE_S <= plan.cycle_s <= MAX_CYCLE_S:
        raise PlanTimingError(
            f"{field}.cycle_s",
            f"{plan.cycle_s} s is outside {MIN_CYCLE_S}..{MAX_CYCLE_S} s",
        )
    if plan.offset_s >= plan.cycle_s:
        raise PlanStructureError(
            f"{field}.offset_s", f"{plan.offset_s} s is not inside the {plan.cycle_s} s cycle"
        )
    cycle = plan.cycle_s
    for j, green in enumerate(plan.greens):
        at = f"{field}.greens[{j}]"
        group = intersection.group(green.group)
        if group is None:
            raise PlanStructureError(f"{at}.group", f"unknown group {green.group!r}")
        if green.start_s >= cycle:
            raise PlanStructureError(
                f"{at}.start_s", f"{green.start_s} s is not inside the {cycle} s cycle"
            )
        if green.end_s > cycle:
            raise PlanStructureError(
                f"{at}.end_s", f"{green.end_s} s is beyond the {cycle} s cycle"
            )
        if green.end_s == green.start_s:
            raise PlanStructureError(
                f"{at}.end_s", "equals start_s: an empty or whole-cycle green is ambiguous"
            )
        if green.length(cycle) < group.min_green_s:
            raise PlanTimingError(
                f"{at}.end_s",
                f"green of {green.length(cycle)} s is shorter than the minimum green of"
                f" {group.id!r} ({group.min_green_s} s)",
            )
    _check_separation(plan, intersection, field)


def _check_separation(plan: SignalPlan, intersection: Intersection, field: str) -> None:
    """Greens of one group, and of conflicting groups, must not overlap and must be spaced."""
    cycle = plan.cycle_s
    for j, later in enumerate(plan.greens):
        own = intersection.group(later.group)
        assert own is not None
        red = cycle - later.length(cycle)
        if 0 < red < own.amber_s + own.all_red_s:
            raise PlanTimingError(
                f"{field}.greens[{j}].end_s",
                f"leaves {red} s before the same green next cycle, less than the amber +"
                f" all-red of {own.id!r} ({own.amber_s + own.all_red_s} s)",
            )
        for i, earlier in enumerate(plan.greens):
            if i == j:
                continue
            if earlier.group == later.group:
                group = intersection.group(earlier.group)
                assert group is not None
                needed: int | None = group.amber_s + group.all_red_s
                what = f"its own amber + all-red ({needed} s)"
            else:
                needed = intersection.intergreen(earlier.group, later.group)
                what = f"the intergreen {earlier.group}->{later.group} ({needed} s)"
            if needed is None:
                continue
            shared = earlier.seconds(cycle) & later.seconds(cycle)
            if shared and i < j:
                raise PlanConflictError(
                    f"{field}.greens[{j}].start_s",
                    f"green of {later.group!r} overlaps green of {earlier.group!r}"
                    f" (greens[{i}]) at cycle second {min(shared)}",
                )
            if shared or earlier.length(cycle) == cycle:
                continue
            gap = (later.start_s - earlier.end_s) % cycle
            if gap < needed:
                raise PlanConflictError(
                    f"{field}.greens[{j}].start_s",
                    f"green of {later.group!r} starts {gap} s after greens[{i}] of"
                    f" {earlier.group!r} ends, less than {what}",
                )
