"""Crisis playbooks: parsing with the field named, areas against an independent convex
test, and every planned override accepted by the agent's own parser."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from domain import playbooks
from domain.playbooks import PlaybookError, Site
from domain.schedule.wire import override_from_proto

NOW = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
SITES = [
    Site("dj-001", "Dijon", 47.322, 5.041, frozenset({"day", "evacuation"})),
    Site("dj-002", "Dijon", 47.330, 5.030),
    Site("ch-001", "Chenôve", 47.291, 5.006, frozenset({"day"})),
]


def body(**overrides: object) -> str:
    raw: dict[str, object] = {
        "name": "snow",
        "title": "Snow night",
        "duration_minutes": 240,
        "actions": [
            {"kind": "lamps", "level": 100, "target": {"communes": ["Chenôve"]}},
            {"kind": "crossings", "mode": "flashing", "target": {"city": True}},
            {"kind": "bollards", "position": "down", "target": {"gateways": ["dj-002"]}},
        ],
    }
    raw.update(overrides)
    return json.dumps(raw)


def test_a_playbook_plans_one_override_per_action_and_gateway() -> None:
    steps = playbooks.plan(playbooks.parse(body()), "run1", SITES, NOW)
    assert [(s.action_index, s.gateway_id, s.description) for s in steps] == [
        (0, "ch-001", "lamps 100%"),
        (1, "dj-001", "crossings flashing"),
        (1, "dj-002", "crossings flashing"),
        (1, "ch-001", "crossings flashing"),
        (2, "dj-002", "bollards down"),
    ]
    for s in steps:
        parsed = override_from_proto(s.override)  # what the agent will do with it
        assert parsed.priority == playbooks.PRIORITY
        assert parsed.expiry - parsed.start == timedelta(hours=4)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Snow!"}, "name"),
        ({"duration_minutes": 0}, "duration_minutes"),
        ({"duration_minutes": 60 * 24 * 8}, "duration_minutes"),
        ({"actions": []}, "actions"),
        (
            {"actions": [{"kind": "lamps", "level": 101, "target": {"city": True}}]},
            "actions[0].level",
        ),
        ({"actions": [{"kind": "lamps", "level": 50, "target": {}}]}, "actions[0].target"),
        (
            {"actions": [{"kind": "lamps", "level": 50, "mode": "x", "target": {"city": True}}]},
            "actions[0].mode",
        ),
        (
            {"actions": [{"kind": "crossings", "mode": "dark", "target": {"city": True}}]},
            "actions[0].mode",
        ),
        (
            {"actions": [{"kind": "bollards", "position": "half", "target": {"city": True}}]},
            "actions[0].position",
        ),
        (
            {"actions": [{"kind": "lamps", "level": 5, "target": {"area": [[1, 2], [3, 4]]}}]},
            "actions[0].target.area",
        ),
        ({"sirens": True}, "sirens"),
    ],
)
def test_a_bad_playbook_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(PlaybookError) as caught:
        playbooks.parse(body(**change))
    assert caught.value.field == field


def test_a_plan_a_crossing_does_not_hold_is_refused_before_anything_is_sent() -> None:
    book = playbooks.parse(
        body(actions=[{"kind": "crossings", "plan": "evacuation", "target": {"city": True}}])
    )
    with pytest.raises(PlaybookError) as caught:
        playbooks.plan(book, "run1", SITES, NOW)
    assert caught.value.field == "actions[0].plan" and "dj-002" in caught.value.reason
    fine = playbooks.parse(
        body(
            actions=[
                {"kind": "crossings", "plan": "evacuation", "target": {"gateways": ["dj-001"]}}
            ]
        )
    )
    assert len(playbooks.plan(fine, "run1", SITES, NOW)) == 1


def test_an_unknown_gateway_or_an_empty_target_is_refused() -> None:
    book = playbooks.parse(
        body(actions=[{"kind": "lamps", "level": 1, "target": {"gateways": ["zz"]}}])
    )
    with pytest.raises(PlaybookError) as caught:
        playbooks.plan(book, "run1", SITES, NOW)
    assert caught.value.field == "actions[0].target.gateways"
    book = playbooks.parse(
        body(actions=[{"kind": "lamps", "level": 1, "target": {"communes": ["Talant"]}}])
    )
    with pytest.raises(PlaybookError):
        playbooks.plan(book, "run1", SITES, NOW)


def _convex_inside(point: tuple[float, float], polygon: list[tuple[float, float]]) -> bool:
    """Independent reference for convex polygons (counter-clockwise): left of every edge."""
    y, x = point
    for (y1, x1), (y2, x2) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) <= 0:
            return False
    return True


@pytest.mark.parametrize("seed", range(200))
def test_area_membership_matches_a_convex_reference(seed: int) -> None:
    rng = random.Random(seed)
    cy, cx, r = 47.3, 5.0, rng.uniform(0.01, 0.1)
    n = rng.randint(3, 9)
    angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(n))
    polygon = [(cy + r * math.sin(a), cx + r * math.cos(a)) for a in angles]
    for _ in range(50):
        point = (cy + rng.uniform(-0.12, 0.12), cx + rng.uniform(-0.12, 0.12))
        assert playbooks.inside(point, polygon) == _convex_inside(point, polygon)
