"""Exact loss accounting (edge/storage/loss.py), checked against plain sets."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from edge.events import Priority
from edge.storage.loss import OPEN_END, count, loss_events, normalise, settle, subtract
from edge.storage.overflow import MAX_LISTED_RANGES

T0 = datetime(2026, 3, 1, tzinfo=UTC)
RANGES = st.lists(
    st.tuples(st.integers(1, 300), st.integers(0, 40)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=12,
)


def members(ranges: list[tuple[int, int]]) -> set[int]:
    return {s for a, b in ranges for s in range(a, b + 1)}


@given(RANGES, RANGES)
def test_range_arithmetic_matches_sets(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    assert members(normalise(a)) == members(a)
    merged = normalise(a)
    assert all(x[1] + 1 < y[0] for x, y in itertools.pairwise(merged))
    assert members(subtract(a, b)) == members(a) - members(b)
    assert count(normalise(a)) == len(members(a))


@given(RANGES, RANGES, RANGES, st.integers(0, 350), st.integers(0, 350))
def test_the_loss_is_what_nobody_holds(
    candidates: list[tuple[int, int]],
    held: list[tuple[int, int]],
    pending: list[tuple[int, int]],
    last: int,
    stored: int,
) -> None:
    result = settle(
        candidates, held=held, pending=pending, last_sequence=last, stored_sequence=stored
    )
    wanted = members(candidates) | set(range(last + 1, stored + 1))
    assert members(result.lost) == wanted - members(held) - members(pending)
    assert result.rewound == (stored > last)


def test_an_open_ended_candidate_is_listed_only_up_to_what_the_orchestrator_stored() -> None:
    result = settle(
        [(40, OPEN_END)],
        held=[(1, 45), (48, 60)],
        pending=[],
        last_sequence=39,
        stored_sequence=60,
        open_from=40,
    )
    # 46 and 47 were given and never stored; beyond 60 nobody knows anything was given.
    assert result.lost == [(46, 47)]


def test_loss_events_list_every_sequence_without_truncation() -> None:
    lost = [(s, s) for s in range(1, 400, 2)]  # 200 ranges
    events = loss_events(lost, "damaged storage", T0)
    assert len(events) == -(-200 // MAX_LISTED_RANGES)
    listed = set()
    for e in events:
        assert e.type == "outbox.gap" and e.priority is Priority.ALARM
        parts = e.attributes["sequences"].split(",")
        assert len(parts) <= MAX_LISTED_RANGES
        listed |= {int(p) for p in parts}
        assert int(e.attributes["dropped"]) == len(parts)
    assert listed == members(lost)
