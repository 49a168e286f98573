"""How agents and the orchestrator write lists of event sequences (pure).

An agent's ``outbox.gap`` events list the sequences it will never deliver (dropped for
room, lost to a damaged disk) in their ``sequences`` attribute, ``"1-3,7"``; the
orchestrator reads them back to tell an agent which numbers are already accounted for.
"""

from __future__ import annotations

from collections.abc import Iterable

GAP_EVENT_TYPE = "outbox.gap"

Ranges = list[tuple[int, int]]


def sequence_list(ranges: Iterable[tuple[int, int]]) -> str:
    """How gap events list sequences: ``[(1, 3), (7, 7)] -> "1-3,7"``."""
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)


def parse_sequence_list(text: str) -> Ranges:
    """The ranges of a :func:`sequence_list` (for readers of gap events).

    Raises:
        ValueError: a part is not a number or a ``first-last`` range.
    """
    ranges = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        ranges.append((int(first), int(last or first)))
    return ranges


def normalise(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """Sorted, disjoint, non-adjacent inclusive ranges covering the same sequences."""
    merged: Ranges = []
    for first, last in sorted((a, b) for a, b in ranges if a <= b):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged
