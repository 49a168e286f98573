"""A crossing's safety card: the conflicts and minimum times no document may relax.

In a real cabinet the conflict monitor has its own compatibility card, wired or programmed
at commissioning, that says which signal groups must never show green together; the
timing plans the controller runs are checked against it, not the other way round. Here
the card is part of the cabinet's configuration (the agent's TOML, table
``[signals.safety_card]``), written by the commissioning engineer, never part of a
document the network brings. A SignalPlans document is refused, with the field named, when
it is less strict than the card:

- its groups are exactly the card's groups (a group the card does not know could be green
  with anything);
- every conflict of the card is an intergreen of the document, in both directions, at
  least as long as the card's;
- every group's minimum green, every vehicle and bus group's amber and every group's
  all-red are at least the card's.

A document may be stricter (more conflicts, longer times). The agent checks every document
and every plan against its card before a controller gets it; the orchestrator learns the
card from the signal's reported state (``SignalState.safety_card``) and refuses a less
strict document at the admin API, with the same function.

Configuration (read by :mod:`edge.equipment.signal.config`)::

    [signals.safety_card]
    groups = ["ns", "ew", "ped"]
    min_green_s = 6                # every group; or a table: { ns = 8, ew = 6, ped = 6 }
    min_amber_s = 3                # vehicle and bus groups
    min_all_red_s = 1
    intergreens = [["ns", "ew", 5], ["ew", "ns", 5], ["ew", "ped", 6], ["ped", "ew", 4]]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from domain.signals.plans import (
    MIN_ALL_RED_S,
    MIN_VEHICLE_AMBER_S,
    GroupKind,
    Intergreen,
    Intersection,
    SignalPlanError,
    SignalPlans,
)
from protos.ondijon.v1 import signal_pb2

#: The card's minimum green may not be below this (a 0 s minimum lets 1 s greens through).
MIN_CARD_GREEN_S = 1


class PlanSafetyCardError(SignalPlanError):
    """A plans document is less strict than the crossing's safety card."""


@dataclass(frozen=True)
class SafetyCard:
    """The crossing's conflicts and minimum times, fixed at commissioning."""

    groups: tuple[str, ...]
    intergreens: tuple[Intergreen, ...]
    min_green_s: Mapping[str, int]
    min_amber_s: int = MIN_VEHICLE_AMBER_S
    min_all_red_s: int = MIN_ALL_RED_S

    def __post_init__(self) -> None:
        self._check("safety_card")

    @property
    def conflicts(self) -> tuple[tuple[str, str], ...]:
        """Every conflicting pair, once, sorted."""
        pairs = {tuple(sorted((e.from_group, e.to_group))) for e in self.intergreens}
        return tuple(sorted((a, b) for a, b in pairs))

    def intergreen(self, from_group: str, to_group: str) -> int | None:
        """The card's shortest intergreen from ``from_group`` to ``to_group``, or None."""
        for entry in self.intergreens:
            if (entry.from_group, entry.to_group) == (from_group, to_group):
                return entry.seconds
        return None

    @classmethod
    def from_proto(cls, message: signal_pb2.SafetyCard) -> SafetyCard:
        """The card as an agent reported it.

        Raises:
            SignalPlanError: the reported card is not a valid card (names the field).
        """
        return cls(
            groups=tuple(message.groups),
            intergreens=tuple(
                Intergreen(e.from_group, e.to_group, e.seconds) for e in message.intergreens
            ),
            min_green_s=dict(message.min_green_s),
            min_amber_s=message.min_amber_s,
            min_all_red_s=message.min_all_red_s,
        )

    def to_proto(self) -> signal_pb2.SafetyCard:
        """The card for the signal's reported state."""
        return signal_pb2.SafetyCard(
            groups=list(self.groups),
            intergreens=[
                signal_pb2.Intergreen(
                    from_group=e.from_group, to_group=e.to_group, seconds=e.seconds
                )
                for e in self.intergreens
            ],
            min_green_s=dict(self.min_green_s),
            min_amber_s=self.min_amber_s,
            min_all_red_s=self.min_all_red_s,
        )

    def check(self, plans: SignalPlans, field: str = "intersection") -> None:
        """Refuse ``plans`` if it is less strict than this card.

        Raises:
            PlanSafetyCardError: naming the document's field, e.g.
                ``intersection.groups[1].min_green_s``.
        """
        check_intersection(plans.intersection, self, field)

    def _check(self, field: str) -> None:
        seen: set[str] = set()
        for i, group in enumerate(self.groups):
            if group in seen:
                raise PlanSafetyCardError(f"{field}.groups[{i}]", f"duplicate group {group!r}")
            seen.add(group)
        for group in self.min_green_s:
            if group not in seen:
                raise PlanSafetyCardError(f"{field}.min_green_s.{group}", "unknown group")
        for group in self.groups:
            green = self.min_green_s.get(group)
            if green is None or green < MIN_CARD_GREEN_S:
                raise PlanSafetyCardError(
                    f"{field}.min_green_s.{group}",
                    f"every group needs a minimum green of at least {MIN_CARD_GREEN_S} s",
                )
        if self.min_amber_s < MIN_VEHICLE_AMBER_S:
            raise PlanSafetyCardError(
                f"{field}.min_amber_s", f"must be at least {MIN_VEHICLE_AMBER_S} s"
            )
        if self.min_all_red_s < MIN_ALL_RED_S:
            raise PlanSafetyCardError(
                f"{field}.min_all_red_s", f"must be at least {MIN_ALL_RED_S} s"
            )
        directions: set[tuple[str, str]] = set()
        for i, entry in enumerate(self.intergreens):
            at = f"{field}.intergreens[{i}]"
            for group in (entry.from_group, entry.to_group):
                if group not in seen:
                    raise PlanSafetyCardError(at, f"unknown group {group!r}")
            if entry.from_group == entry.to_group:
                raise PlanSafetyCardError(at, "a group does not conflict with itself")
            directions.add((entry.from_group, entry.to_group))
        for i, entry in enumerate(self.intergreens):
            if (entry.to_group, entry.from_group) not in directions:
                raise PlanSafetyCardError(
                    f"{field}.intergreens[{i}]",
                    f"conflict {entry.from_group}->{entry.to_group} has no reverse entry",
                )


def check_intersection(intersection: Intersection, card: SafetyCard, field: str) -> None:
    """Refuse an intersection less strict than ``card`` (see the module docstring).

    Raises:
        PlanSafetyCardError: naming the field under ``field``.
    """
    on_card = set(card.groups)
    present = {g.id for g in intersection.groups}
    for name in card.groups:
        if name not in present:
            raise PlanSafetyCardError(
                f"{field}.groups", f"group {name!r} of the crossing's safety card is missing"
            )
    for i, group in enumerate(intersection.groups):
        at = f"{field}.groups[{i}]"
        if group.id not in on_card:
            raise PlanSafetyCardError(
                f"{at}.id", f"group {group.id!r} is not on the crossing's safety card"
            )
        floors = [("min_green_s", card.min_green_s[group.id]), ("all_red_s", card.min_all_red_s)]
        if group.kind != GroupKind.PEDESTRIAN:
            floors.append(("amber_s", card.min_amber_s))
        for attribute, floor in floors:
            value = getattr(group, attribute)
            if value < floor:
                raise PlanSafetyCardError(
                    f"{at}.{attribute}",
                    f"{value} s is below the safety card's {floor} s for {group.id!r}",
                )
    for entry in card.intergreens:
        found = next(
            (
                (i, e)
                for i, e in enumerate(intersection.intergreens)
                if (e.from_group, e.to_group) == (entry.from_group, entry.to_group)
            ),
            None,
        )
        if found is None:
            raise PlanSafetyCardError(
                f"{field}.intergreens",
                f"conflict {entry.from_group}->{entry.to_group} of the safety card is missing",
            )
        i, document_entry = found
        if document_entry.seconds < entry.seconds:
            raise PlanSafetyCardError(
                f"{field}.intergreens[{i}].seconds",
                f"{document_entry.seconds} s is below the safety card's {entry.seconds} s"
                f" for {entry.from_group}->{entry.to_group}",
            )
