"""Plan validation: every rule refuses with the field path, and accepted plans are safe."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from domain.signals.plans import (
    GreenInterval,
    GroupKind,
    Intergreen,
    Intersection,
    PlanConflictError,
    PlanStructureError,
    PlanTimingError,
    SignalGroup,
    SignalPlan,
    SignalPlanError,
    SignalPlans,
    check_conflicts,
    plans_from_proto,
    validate_plans,
)
from protos.ondijon.v1 import signal_pb2

VEHICLE, PEDESTRIAN, BUS = GroupKind.VEHICLE, GroupKind.PEDESTRIAN, GroupKind.BUS


def crossing() -> Intersection:
    """North-south and east-west traffic, a pedestrian crossing and a bus lane over east-west."""
    return Intersection(
        groups=(
            SignalGroup("ns", VEHICLE, min_green_s=6, amber_s=3, all_red_s=2),
            SignalGroup("ew", VEHICLE, min_green_s=6, amber_s=3, all_red_s=2),
            SignalGroup("ped", PEDESTRIAN, min_green_s=5, amber_s=0, all_red_s=3),
            SignalGroup("bus", BUS, min_green_s=5, amber_s=3, all_red_s=2),
        ),
        intergreens=(
            Intergreen("ns", "ew", 5),
            Intergreen("ew", "ns", 5),
            Intergreen("ew", "ped", 6),
            Intergreen("ped", "ew", 4),
            Intergreen("ew", "bus", 5),
            Intergreen("bus", "ew", 5),
        ),
    )


def peak() -> SignalPlan:
    return SignalPlan(
        "peak",
        cycle_s=60,
        offset_s=0,
        greens=(
            GreenInterval("ns", 0, 25),
            GreenInterval("ped", 1, 20),
            GreenInterval("bus", 0, 25),
            GreenInterval("ew", 31, 55),
        ),
    )


def night() -> SignalPlan:
    """Greens that wrap past the end of the cycle; the bus group is never green."""
    return SignalPlan(
        "night",
        cycle_s=90,
        offset_s=10,
        greens=(
            GreenInterval("ns", 85, 30),
            GreenInterval("ped", 86, 25),
            GreenInterval("ew", 40, 80),
        ),
    )


def doc(*plans: SignalPlan, intersection: Intersection | None = None) -> SignalPlans:
    return SignalPlans(intersection or crossing(), plans or (peak(), night()))


def with_group(index: int, **changes: object) -> Intersection:
    x = crossing()
    groups = list(x.groups)
    groups[index] = dataclasses.replace(groups[index], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(x, groups=tuple(groups))


def with_intergreens(*entries: Intergreen) -> Intersection:
    return dataclasses.replace(crossing(), intergreens=entries)


def with_greens(*greens: GreenInterval, cycle_s: int = 60) -> SignalPlans:
    return doc(SignalPlan("p", cycle_s, 0, greens))


def refused(plans: SignalPlans) -> SignalPlanError:
    with pytest.raises(SignalPlanError) as caught:
        validate_plans(plans)
    return caught.value


def test_a_sound_document_is_accepted() -> None:
    validate_plans(doc())


def test_plans_from_proto_reads_every_field() -> None:
    msg = signal_pb2.SignalPlans(
        intersection=signal_pb2.Intersection(
            groups=[
                signal_pb2.SignalGroup(
                    id=g.id, kind=signal_pb2.SignalGroupKind.ValueType(g.kind),
                    min_green_s=g.min_green_s, amber_s=g.amber_s, all_red_s=g.all_red_s,
                )
                for g in crossing().groups
            ],
            intergreens=[
                signal_pb2.Intergreen(
                    from_group=e.from_group, to_group=e.to_group, seconds=e.seconds
                )
                for e in crossing().intergreens
            ],
        ),
        plans=[
            signal_pb2.SignalPlan(
                id=p.id, cycle_s=p.cycle_s, offset_s=p.offset_s,
                greens=[
                    signal_pb2.GreenInterval(group=g.group, start_s=g.start_s, end_s=g.end_s)
                    for g in p.greens
                ],
            )
            for p in (peak(), night())
        ],
    )  # fmt: skip
    assert plans_from_proto(msg) == doc()


def test_an_unknown_kind_on_the_wire_is_refused_as_unspecified() -> None:
    msg = signal_pb2.SignalPlans(
        intersection=signal_pb2.Intersection(
            groups=[signal_pb2.SignalGroup(id="x", kind=9, amber_s=3, all_red_s=1)]  # type: ignore[arg-type]
        )
    )
    error = refused(plans_from_proto(msg))
    assert error.field == "intersection.groups[0].kind"


def test_errors_carry_field_and_reason() -> None:
    error = refused(with_greens(GreenInterval("ns", 0, 61)))
    assert isinstance(error, PlanStructureError)
    assert error.field == "plans[0].greens[0].end_s"
    assert "beyond the 60 s cycle" in error.reason
    assert str(error) == f"{error.field}: {error.reason}"


@pytest.mark.parametrize(
    ("intersection", "field", "kind"),
    [
        (Intersection(groups=()), "intersection.groups", PlanStructureError),
        (with_group(1, id="ns"), "intersection.groups[1].id", PlanStructureError),
        (with_group(1, id=""), "intersection.groups[1].id", PlanStructureError),
        (
            with_group(0, kind=GroupKind.UNSPECIFIED),
            "intersection.groups[0].kind",
            PlanStructureError,
        ),
        (with_group(0, amber_s=2), "intersection.groups[0].amber_s", PlanTimingError),
        (with_group(3, amber_s=2), "intersection.groups[3].amber_s", PlanTimingError),
        (with_group(1, all_red_s=0), "intersection.groups[1].all_red_s", PlanTimingError),
        (with_group(2, all_red_s=0), "intersection.groups[2].all_red_s", PlanTimingError),
    ],
)
def test_group_rules(intersection: Intersection, field: str, kind: type[SignalPlanError]) -> None:
    error = refused(doc(intersection=intersection))
    assert (type(error), error.field) == (kind, field)


def test_pedestrian_heads_may_have_no_amber() -> None:
    assert crossing().groups[2].amber_s == 0
    validate_plans(doc(intersection=with_group(2, amber_s=0)))


@pytest.mark.parametrize(
    ("entries", "field", "words"),
    [
        ((Intergreen("ns", "tram", 5),), "intersection.intergreens[0].to_group", "unknown group"),
        ((Intergreen("x", "ns", 5),), "intersection.intergreens[0].from_group", "unknown group"),
        ((Intergreen("ns", "ns", 5),), "intersection.intergreens[0].to_group", "itself"),
        (
            (Intergreen("ns", "ew", 5), Intergreen("ew", "ns", 5), Intergreen("ns", "ew", 6)),
            "intersection.intergreens[2].to_group",
            "duplicate",
        ),
        (
            (Intergreen("ns", "ew", 4), Intergreen("ew", "ns", 5)),
            "intersection.intergreens[0].seconds",
            "amber + all-red",
        ),
        (
            (Intergreen("ped", "ew", 2), Intergreen("ew", "ped", 6)),
            "intersection.intergreens[0].seconds",
            "amber + all-red",
        ),
        ((Intergreen("ns", "ew", 5),), "intersection.intergreens[0]", "no reverse entry ew->ns"),
    ],
)  # fmt: skip
def test_intergreen_matrix_rules(entries: tuple[Intergreen, ...], field: str, words: str) -> None:
    error = refused(doc(SignalPlan("p", 60, 0, ()), intersection=with_intergreens(*entries)))
    assert error.field == field
    assert words in error.reason


def test_intergreen_equal_to_amber_plus_all_red_is_enough() -> None:
    x = with_intergreens(Intergreen("ns", "ew", 5), Intergreen("ew", "ns", 5))
    validate_plans(doc(SignalPlan("p", 60, 0, ()), intersection=x))


@pytest.mark.parametrize(
    ("plans", "field", "kind"),
    [
        ((peak(), dataclasses.replace(night(), id="peak")), "plans[1].id", PlanStructureError),
        ((dataclasses.replace(peak(), id=""),), "plans[0].id", PlanStructureError),
        ((dataclasses.replace(peak(), cycle_s=29),), "plans[0].cycle_s", PlanTimingError),
        ((dataclasses.replace(night(), cycle_s=241),), "plans[0].cycle_s", PlanTimingError),
        ((dataclasses.replace(peak(), offset_s=60),), "plans[0].offset_s", PlanStructureError),
    ],
)
def test_plan_rules(plans: tuple[SignalPlan, ...], field: str, kind: type[SignalPlanError]) -> None:
    error = refused(doc(*plans))
    assert (type(error), error.field) == (kind, field)


@pytest.mark.parametrize("cycle_s", [30, 240])
def test_cycle_bounds_are_inclusive(cycle_s: int) -> None:
    validate_plans(with_greens(GreenInterval("ns", 0, 20), cycle_s=cycle_s))


@pytest.mark.parametrize(
    ("green", "field", "kind"),
    [
        (GreenInterval("tram", 0, 20), "plans[0].greens[0].group", PlanStructureError),
        (GreenInterval("ns", 60, 10), "plans[0].greens[0].start_s", PlanStructureError),
        (GreenInterval("ns", 10, 61), "plans[0].greens[0].end_s", PlanStructureError),
        (GreenInterval("ns", 10, 10), "plans[0].greens[0].end_s", PlanStructureError),
        (GreenInterval("ns", 10, 15), "plans[0].greens[0].end_s", PlanTimingError),
        (GreenInterval("ns", 57, 2), "plans[0].greens[0].end_s", PlanTimingError),
    ],
)
def test_green_interval_rules(
    green: GreenInterval, field: str, kind: type[SignalPlanError]
) -> None:
    error = refused(with_greens(green))
    assert (type(error), error.field) == (kind, field)


def test_minimum_green_exactly_met_is_accepted_also_across_the_wrap() -> None:
    validate_plans(with_greens(GreenInterval("ns", 10, 16)))
    validate_plans(with_greens(GreenInterval("ns", 57, 3)))


def test_a_green_may_end_on_the_cycle_boundary_or_fill_the_cycle() -> None:
    validate_plans(with_greens(GreenInterval("ns", 40, 60)))
    validate_plans(with_greens(GreenInterval("ns", 0, 60)))


def test_a_group_green_all_cycle_still_conflicts() -> None:
    error = refused(with_greens(GreenInterval("ns", 0, 60), GreenInterval("ew", 20, 30)))
    assert isinstance(error, PlanConflictError)
    assert error.field == "plans[0].greens[1].start_s"


def test_non_conflicting_groups_may_be_green_together() -> None:
    validate_plans(with_greens(GreenInterval("ns", 0, 25), GreenInterval("ped", 0, 25)))


def test_a_group_never_green_is_allowed() -> None:
    validate_plans(with_greens(GreenInterval("ew", 0, 25)))


@pytest.mark.parametrize(
    "greens",
    [
        (GreenInterval("ns", 0, 25), GreenInterval("ew", 20, 50)),
        # Only the wrap-around parts overlap: ns 50..59 + 0..9, ew 5..29.
        (GreenInterval("ns", 50, 10), GreenInterval("ew", 5, 30)),
        (GreenInterval("ew", 5, 30), GreenInterval("ns", 50, 10)),
    ],
)
def test_conflicting_greens_must_not_overlap(greens: tuple[GreenInterval, ...]) -> None:
    error = refused(with_greens(*greens))
    assert isinstance(error, PlanConflictError)
    assert error.field == "plans[0].greens[1].start_s"
    assert "overlaps" in error.reason


@pytest.mark.parametrize(
    ("greens", "later"),
    [
        # ns ends at 25, ew starts 4 s later: intergreen ns->ew is 5 s.
        ((GreenInterval("ns", 0, 25), GreenInterval("ew", 29, 55)), 1),
        # ew ends at 57, ns starts at 0 of the next cycle: 3 s across the wrap.
        ((GreenInterval("ns", 0, 25), GreenInterval("ew", 31, 57)), 0),
        # ew ends at 55, ped starts 5 s later (intergreen ew->ped is 6 s) across the wrap.
        ((GreenInterval("ped", 0, 20), GreenInterval("ew", 30, 55)), 0),
        # Directly adjacent: no clearance at all.
        ((GreenInterval("ns", 0, 25), GreenInterval("ew", 25, 55)), 1),
    ],
)
def test_intergreen_gaps_are_enforced(greens: tuple[GreenInterval, ...], later: int) -> None:
    error = refused(with_greens(*greens))
    assert isinstance(error, PlanConflictError)
    assert error.field == f"plans[0].greens[{later}].start_s"
    assert "intergreen" in error.reason


def test_exact_intergreen_is_enough_both_ways() -> None:
    validate_plans(with_greens(GreenInterval("ns", 0, 25), GreenInterval("ew", 30, 55)))


def test_a_single_green_needs_its_amber_and_all_red_before_the_next_cycle() -> None:
    validate_plans(with_greens(GreenInterval("ns", 0, 55)))  # 5 s of amber + all-red
    error = refused(with_greens(GreenInterval("ns", 10, 6)))  # wraps, leaves 4 s
    assert isinstance(error, PlanTimingError)
    assert error.field == "plans[0].greens[0].end_s"


def test_two_greens_of_one_group_need_its_amber_and_all_red_between() -> None:
    ok = with_greens(GreenInterval("ns", 0, 10), GreenInterval("ns", 15, 25))
    validate_plans(ok)
    error = refused(with_greens(GreenInterval("ns", 0, 10), GreenInterval("ns", 14, 25)))
    assert error.field == "plans[0].greens[1].start_s"
    assert "own amber + all-red" in error.reason
    error = refused(with_greens(GreenInterval("ns", 0, 20), GreenInterval("ns", 10, 30)))
    assert "overlaps" in error.reason


def test_check_conflicts_lists_sorted_pairs() -> None:
    x = crossing()
    assert check_conflicts({"ns", "ped", "bus"}, x) == []
    assert check_conflicts({"ew", "ns", "bus"}, x) == [("bus", "ew"), ("ew", "ns")]
    assert check_conflicts(set(), x) == []


def test_cycle_position_follows_unix_time_and_offset() -> None:
    plan = night()  # cycle 90, offset 10
    assert plan.cycle_second(10) == 0
    assert plan.cycle_second(9) == 89
    assert plan.greens_at(85) == {"ns"}
    assert plan.greens_at(89) == {"ns", "ped"}
    assert plan.greens_at(29) == {"ns"}
    assert plan.greens_at(30) == frozenset()
    assert plan.greens_at(40) == {"ew"}


# --- property: whatever validate_plans accepts is safe ---------------------------------------


@st.composite
def candidate_documents(draw: st.DrawFn) -> SignalPlans:
    """Crossings and plans built stage after stage, often (not always) valid."""
    ids = [f"g{i}" for i in range(draw(st.integers(2, 4)))]
    groups = []
    for gid in ids:
        kind = draw(st.sampled_from([VEHICLE, PEDESTRIAN, BUS]))
        amber = 0 if kind == PEDESTRIAN and draw(st.booleans()) else draw(st.integers(3, 5))
        groups.append(
            SignalGroup(gid, kind, draw(st.integers(1, 10)), amber, draw(st.integers(1, 3)))
        )
    pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]
    conflicts = draw(st.lists(st.sampled_from(pairs), unique=True, min_size=1))
    by_id = {g.id: g for g in groups}
    intergreens = []
    for a, b in conflicts:
        for x, y in ((a, b), (b, a)):
            floor = by_id[x].amber_s + by_id[x].all_red_s
            intergreens.append(Intergreen(x, y, floor + draw(st.integers(0, 3))))
    cycle = draw(st.integers(30, 100))
    greens: list[GreenInterval] = []
    cursor = draw(st.integers(0, cycle - 1))
    used = 0
    for _ in range(draw(st.integers(1, 6))):
        group = draw(st.sampled_from(ids))
        length = draw(st.integers(1, 30))
        parallel = draw(st.booleans())
        if greens and parallel:
            start = greens[-1].start_s  # in parallel with the previous green
        else:
            gap = draw(st.integers(0, 12))
            start, used = (cursor + gap) % cycle, used + gap
        if used + length > cycle:
            break
        greens.append(GreenInterval(group, start, (start + length) % cycle or cycle))
        cursor, used = (start + length) % cycle, used + length
    plan = SignalPlan("p", cycle, draw(st.integers(0, cycle - 1)), tuple(greens))
    return SignalPlans(Intersection(tuple(groups), tuple(intergreens)), (plan,))


def green_at(plan: SignalPlan, group: str, t: int) -> bool:
    """Written apart from the module under test on purpose."""
    pos = t % plan.cycle_s
    for g in plan.greens:
        if g.group != group:
            continue
        if g.start_s < g.end_s and g.start_s <= pos < g.end_s:
            return True
        if g.start_s > g.end_s and (pos >= g.start_s or pos < g.end_s):
            return True
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(candidate_documents())
def test_accepted_plans_never_light_conflicting_greens_over_two_cycles(plans: SignalPlans) -> None:
    try:
        validate_plans(plans)
    except SignalPlanError:
        assume(False)
    x, plan = plans.intersection, plans.plans[0]
    groups = [g.id for g in x.groups]
    last_end: dict[str, int] = {}
    previous = {g: green_at(plan, g, -1) for g in groups}
    started: dict[str, int] = {}
    for t in range(2 * plan.cycle_s):
        now = {g: green_at(plan, g, t) for g in groups}
        lit = {g for g, on in now.items() if on}
        for e in x.intergreens:
            assert not (e.from_group in lit and e.to_group in lit), (t, e)
        for g in groups:
            own = x.group(g)
            assert own is not None
            if previous[g] and not now[g]:
                last_end[g] = t
                if g in started:
                    assert t - started[g] >= own.min_green_s, (t, g)
            if now[g] and not previous[g]:
                started[g] = t
                if g in last_end:
                    assert t - last_end[g] >= own.amber_s + own.all_red_s, (t, g)
                for e in x.intergreens:
                    if e.to_group == g and e.from_group in last_end:
                        assert t - last_end[e.from_group] >= e.seconds, (t, e)
        previous = now


# -- the model itself refuses impossible values (issue 9, item 11) ----------------------------


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: SignalGroup("ns", VEHICLE, float("nan"), 3, 2), "min_green_s"),  # type: ignore[arg-type]
        (lambda: SignalGroup("ns", VEHICLE, 6, -3, 2), "amber_s"),
        (lambda: SignalGroup("ns", VEHICLE, 6, 3, 1.5), "all_red_s"),  # type: ignore[arg-type]
        (lambda: SignalGroup("ns", 1, 6, 3, 2), "kind"),  # type: ignore[arg-type]
        (lambda: Intergreen("ns", "ew", -5), "seconds"),
        (lambda: Intergreen("ns", "ew", float("inf")), "seconds"),  # type: ignore[arg-type]
        (lambda: GreenInterval("ns", -1, 20), "start_s"),
        (lambda: GreenInterval("ns", 0, float("nan")), "end_s"),  # type: ignore[arg-type]
        (lambda: GreenInterval("ns", 0, True), "end_s"),
        (lambda: SignalPlan("p", -60, 0, ()), "cycle_s"),
        (lambda: SignalPlan("p", 60, 2**32, ()), "offset_s"),
    ],
)
def test_plans_built_as_objects_refuse_nan_negative_and_fractional_times(
    build: object, field: str
) -> None:
    with pytest.raises(PlanStructureError) as refused:
        build()  # type: ignore[operator]
    assert refused.value.field == field
