"""Random crossings and plans that are valid by construction, for property tests.

A crossing has 2 to 4 groups and a random set of conflicts; a plan puts the groups into
stages (no two conflicting groups in one stage), gives each stage a green at least the
groups' minimum green and separates consecutive stages by the longest intergreen, so it
passes :func:`domain.signals.plans.validate_plans` (checked, not assumed).
"""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

from domain.signals.plans import (
    GreenInterval,
    GroupKind,
    Intergreen,
    Intersection,
    SignalGroup,
    SignalPlan,
    SignalPlans,
    validate_plans,
)
from edge.equipment.signal.config import (
    HeadPins,
)

GROUPS = ("a", "b", "c", "d")
HEADS = {
    g: HeadPins(red=10 + 3 * i, amber=11 + 3 * i, green=12 + 3 * i) for i, g in enumerate(GROUPS)
}


def conflict_sets(groups: tuple[str, ...]) -> st.SearchStrategy[frozenset[frozenset[str]]]:
    pairs = [frozenset(p) for p in itertools.combinations(groups, 2)]
    return st.sets(st.sampled_from(pairs)).map(frozenset)


@st.composite
def documents(
    draw: st.DrawFn,
    groups: tuple[str, ...],
    conflicts: frozenset[frozenset[str]],
    plan_id: str = "p",
) -> SignalPlans:
    """A valid SignalPlans document over ``groups`` with exactly ``conflicts``."""
    amber, all_red = draw(st.integers(3, 4)), draw(st.integers(1, 3))
    min_green = draw(st.integers(4, 8))
    group_models = tuple(
        SignalGroup(g, GroupKind.VEHICLE, min_green_s=min_green, amber_s=amber, all_red_s=all_red)
        for g in groups
    )
    intergreens = []
    for pair in sorted(conflicts, key=sorted):
        a, b = sorted(pair)
        intergreens.append(Intergreen(a, b, amber + all_red + draw(st.integers(0, 3))))
        intergreens.append(Intergreen(b, a, amber + all_red + draw(st.integers(0, 3))))
    intersection = Intersection(group_models, tuple(intergreens))
    # Stages: each group joins the first stage where it conflicts with nobody.
    order = draw(st.permutations(groups))
    stages: list[list[str]] = []
    for group in order:
        for stage in stages:
            if all(frozenset((group, other)) not in conflicts for other in stage):
                stage.append(group)
                break
        else:
            stages.append([group])
    gap = max([e.seconds for e in intergreens] + [amber + all_red])
    greens: list[GreenInterval] = []
    second = 0
    for stage in stages:
        length = min_green + draw(st.integers(0, 12))
        greens.extend(GreenInterval(g, second, second + length) for g in stage)
        second += length + gap
    cycle = max(second, 30)
    if cycle > 240:
        cycle = 240  # cannot happen with 4 groups, kept for the validator's sake
    offset = draw(st.integers(0, cycle - 1))
    plan = SignalPlan(plan_id, cycle, offset, tuple(greens))
    document = SignalPlans(intersection, (plan,))
    validate_plans(document)
    return document


class GreenWatch:
    """Checks the greens seen on the pins against the documents in force.

    Call :meth:`observe` with the set of groups whose green lamp is lit, at each whole
    second of the controller (it changes its lamps once a second), and :meth:`change`
    when a new document is loaded. The rules:

    - no two groups that conflict in the document in force are ever green together;
    - across a change, a green that began under the old document is never lit together
      with a group it conflicted with in the old document;
    - a green starts only after the intergreen since the end of a conflicting green: the
      new document's, and the old document's too for a green that began before the change
      (the stricter of the two matrices).
    """

    def __init__(self, document: SignalPlans) -> None:
        self.current = document.intersection
        self.previous: Intersection | None = None
        self.changed_at: int | None = None
        self.since: dict[str, int] = {}
        self.last_start: dict[str, int] = {}
        self.last_end: dict[str, int] = {}
        self.seen: set[str] = set()

    def change(self, document: SignalPlans | Intersection, second: int) -> None:
        """A new crossing reached the controller at ``second``."""
        crossing = document.intersection if isinstance(document, SignalPlans) else document
        if crossing == self.current:
            return
        self.previous, self.current = self.current, crossing
        self.changed_at = second

    def _old_regime(self, group: str) -> bool:
        start = self.last_start.get(group)
        return self.changed_at is not None and start is not None and start < self.changed_at

    def observe(self, second: int, greens: set[str]) -> list[str]:
        """The violations seen now (empty when safe)."""
        violations = []
        for group in sorted(self.seen - greens):
            self.last_end[group] = second
            self.since.pop(group, None)
        started = sorted(greens - self.seen)
        for group in started:
            self.since[group] = self.last_start[group] = second
        for a, b in itertools.combinations(sorted(greens), 2):
            if self.current.intergreen(a, b) is not None:
                violations.append(f"{second}: {a} and {b} conflict and are green together")
            elif (
                self.previous is not None
                and self.previous.intergreen(a, b) is not None
                and (self._old_regime(a) or self._old_regime(b))
            ):
                violations.append(
                    f"{second}: {a} and {b} conflicted before the change and are green together"
                )
        for group in started:
            for other, ended in self.last_end.items():
                matrices = [self.current]
                if self.previous is not None and self._old_regime(other):
                    matrices.append(self.previous)
                for matrix in matrices:
                    needed = matrix.intergreen(other, group)
                    if needed is not None and second - ended < needed:
                        violations.append(
                            f"{second}: {group} green {second - ended} s after {other}"
                            f" ended, intergreen {needed} s"
                        )
        self.seen = set(greens)
        return violations
