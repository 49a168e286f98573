"""Which group document each gateway gets: precedence gateway > list > area > tag > commune
> city, the last put winning within a level; checked against a brute-force reference on
random cities and random assignments."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.city.geometry import inside
from domain.city.targets import (
    Assignment,
    Level,
    Site,
    Target,
    TargetError,
    candidates,
    check_target,
    covered,
    resolve,
)

COMMUNES = ("Dijon", "Chenôve", "Talant", "Quetigny")
TAGS = ("parc", "tram-t1", "centre-ville")


def random_city(rng: random.Random, n: int) -> list[Site]:
    return [
        Site(
            gateway_id=f"gw-{i:04d}",
            commune=rng.choice(COMMUNES),
            tags=frozenset(t for t in TAGS if rng.random() < 0.3),
            latitude=rng.uniform(47.25, 47.40),
            longitude=rng.uniform(4.95, 5.15),
        )
        for i in range(n)
    ]


def random_target(rng: random.Random, sites: list[Site]) -> Target:
    level = rng.choice([Level.CITY, Level.COMMUNE, Level.TAG, Level.AREA, Level.LIST])
    if level is Level.CITY:
        return Target(Level.CITY)
    if level is Level.COMMUNE:
        return Target(level, rng.choice(COMMUNES))
    if level is Level.TAG:
        return Target(level, rng.choice(TAGS))
    if level is Level.LIST:
        ids = rng.sample([s.gateway_id for s in sites], rng.randint(1, len(sites)))
        return Target(level, f"list-{rng.randrange(3)}", gateway_ids=tuple(ids))
    lat, lon = rng.uniform(47.25, 47.40), rng.uniform(4.95, 5.15)
    d = rng.uniform(0.01, 0.08)
    polygon = ((lat - d, lon - d), (lat - d, lon + d), (lat + d, lon + d), (lat + d / 3, lon))
    return Target(level, f"area-{rng.randrange(3)}", polygon=polygon)


def reference(site: Site, assignments: list[Assignment], pinned: set[str]) -> int | None:
    """Written from the documented rule, without the module's ranking."""
    if site.gateway_id in pinned:
        return None

    def covers(t: Target) -> bool:
        return {
            Level.CITY: True,
            Level.COMMUNE: site.commune == t.name,
            Level.TAG: t.name in site.tags,
            Level.LIST: site.gateway_id in t.gateway_ids,
            Level.AREA: t.level is Level.AREA
            and inside((site.latitude, site.longitude), list(t.polygon)),
        }[t.level]

    order = ["list", "area", "tag", "commune", "city"]
    for name in order:
        mine = [a for a in assignments if a.target.level.label == name and covers(a.target)]
        if mine:
            return max(mine, key=lambda a: a.sequence).assignment_id
    return None


@settings(max_examples=300)
@given(st.integers(0, 2**32))
def test_resolve_agrees_with_the_documented_precedence(seed: int) -> None:
    rng = random.Random(seed)
    sites = random_city(rng, rng.randint(1, 40))
    assignments = [
        Assignment(i, random_target(rng, sites), sequence=rng.randrange(1000) * 10 + i)
        for i in range(rng.randint(0, 8))
    ]
    pinned = {s.gateway_id for s in sites if rng.random() < 0.1}
    result = resolve(sites, assignments, pinned)
    for site in sites:
        expected = reference(site, assignments, pinned)
        got = result.get(site.gateway_id)
        assert (got.assignment_id if got else None) == expected, site
        if site.gateway_id not in pinned:
            found = candidates(site, assignments)
            assert (found[0].assignment_id if found else None) == expected


@settings(max_examples=200)
@given(st.integers(0, 2**32))
def test_covered_is_exactly_the_matching_gateways(seed: int) -> None:
    rng = random.Random(seed)
    sites = random_city(rng, 30)
    target = random_target(rng, sites)
    ids = covered(target, sites)
    assert ids == [
        s.gateway_id for s in sites if reference(s, [Assignment(1, target, 1)], set()) == 1
    ]


def test_chenove_beats_the_city_and_a_tag_beats_chenove() -> None:
    sites = [
        Site("dijon-1", "Dijon", frozenset(), 47.32, 5.04),
        Site("chenove-1", "Chenôve", frozenset(), 47.29, 5.00),
        Site("chenove-2", "Chenôve", frozenset({"parc"}), 47.29, 5.01),
    ]
    city = Assignment(1, Target(Level.CITY), 3)  # put last: still the weakest
    chenove = Assignment(2, Target(Level.COMMUNE, "Chenôve"), 2)
    parc = Assignment(3, Target(Level.TAG, "parc"), 1)
    result = resolve(sites, [city, chenove, parc])
    assert {k: v.assignment_id for k, v in result.items()} == {
        "dijon-1": 1,
        "chenove-1": 2,
        "chenove-2": 3,
    }
    assert resolve(sites, [city, chenove, parc], pinned=["chenove-2"]).keys() == {
        "dijon-1",
        "chenove-1",
    }


@pytest.mark.parametrize(
    ("target", "field"),
    [
        (Target(Level.CITY, "x"), "target.city"),
        (Target(Level.COMMUNE, ""), "target.commune"),
        (Target(Level.COMMUNE, "*"), "target.commune"),
        (Target(Level.TAG, "a\nb"), "target.tag"),
        (Target(Level.LIST, "l"), "target.list.gateway_ids"),
        (Target(Level.AREA, "a", polygon=((47.0, 5.0), (47.1, 5.0))), "target.area.polygon"),
        (
            Target(Level.AREA, "a", polygon=((47.0, 5.0), (47.1, 5.0), (95.0, 5.0))),
            "target.area.polygon[2]",
        ),
        (Target(Level.TAG, "t", gateway_ids=("a",)), "target.gateway_ids"),
    ],
)
def test_bad_targets_are_refused_naming_the_field(target: Target, field: str) -> None:
    with pytest.raises(TargetError) as caught:
        check_target(target)
    assert caught.value.field == field
