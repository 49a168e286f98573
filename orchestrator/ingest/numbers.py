"""What an agent's sequence numbers say once its storage went back (an image put back, a log
that lost its last commits): the orchestrator stores events by (gateway, sequence), and
after such a loss an agent may number an event over a number its lost life gave another
one, record again under a new number an event its lost life had delivered, or ask which of
its numbers the gap events it delivered list as lost.

- :func:`conflicting`: numbers received again with another content than the one held (never
  acknowledged silently: the agent records those events again).
- :func:`copies`: events recorded again under a new number (each says the number it was
  first recorded under) that are already held: kept under their number, marked a copy.
- :func:`listed_lost_after`: what the stored gap events list as lost (the welcome says it).

Each runs on a connection of the store's writer (``copies`` marks what it finds) or, for
the welcome's list, of a reader. Tests: ``tests/nothing_lost/test_replayed_batches.py``.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable

from google.protobuf.message import DecodeError

from domain.sequences import normalise, parse_sequence_list
from orchestrator.store.connection import Connection
from orchestrator.store.database import NewEvent, Store
from protos.ondijon.v1 import link_pb2


def listed_lost_after(gap_payloads: Iterable[bytes], after: int) -> list[tuple[int, int]]:
    """The sequences above ``after`` that stored gap events list as lost, merged; a gap
    event whose list cannot be read counts for nothing (the agent then lists again)."""
    listed: list[tuple[int, int]] = []
    for payload in gap_payloads:
        with contextlib.suppress(ValueError, DecodeError):
            event = link_pb2.Event.FromString(payload)
            listed += parse_sequence_list(event.attributes.get("sequences", ""))
    return [(max(a, after + 1), b) for a, b in normalise(listed) if b > after]


def conflicting(
    store: Store,
    conn: Connection,
    gateway_id: str,
    received: list[link_pb2.Event],
    fresh: set[int],
) -> list[int]:
    """The sequences of ``received`` already held with another content: a sequence counter
    that went backwards (a restored image, a disk that lost its last commits), never to be
    taken for a replay of what is held."""
    first: dict[int, link_pb2.Event] = {}
    conflicts = set()
    for e in received:  # one sequence twice in a batch, with two contents
        if first.setdefault(e.sequence, e) != e:
            conflicts.add(e.sequence)
    replayed = [e for e in first.values() if e.sequence not in fresh]
    held = store.event_payloads(conn, gateway_id, [e.sequence for e in replayed])
    conflicts |= {
        e.sequence
        for e in replayed
        if e.sequence in held and link_pb2.Event.FromString(held[e.sequence]) != e
    }
    return sorted(conflicts)


def _content(payload: bytes) -> link_pb2.Event:
    """A stored event without what a copy changes (its numbers)."""
    event = link_pb2.Event.FromString(payload)
    event.ClearField("sequence")
    event.ClearField("first_sequence")
    return event


def copies(
    store: Store, conn: Connection, gateway_id: str, stored: list[NewEvent]
) -> dict[int, int]:
    """Among ``stored`` (just stored), the events already held under another sequence,
    each with the sequence that holds it; marked so in the store.

    An agent whose storage went back records again, under new sequences, events whose
    numbers a gap event listed lost or the orchestrator holds for others (each copy says
    the number it was first recorded under); a later image can bring back the event under
    its first number, or a copy of it, after a copy was delivered. The same content under
    the same first number is one event: the one stored first stays the event, the later
    one is kept as its copy (every sequence stays accounted for) and is not news."""
    just = {n.sequence for n in stored}
    before = [r for r in store.copy_family(conn, gateway_id, stored) if r[0] not in just]
    firsts = Counter(n.first_sequence or n.sequence for n in stored)
    keys = {first for _, first, _, _ in before} | {f for f, count in firsts.items() if count > 1}
    now = [n for n in stored if (n.first_sequence or n.sequence) in keys]
    if not now:
        return {}  # the usual case: no copy, nothing decoded
    held: dict[int, list[tuple[int, link_pb2.Event]]] = {}  # first number → events
    for sequence, first, copy_of, payload in before:
        if copy_of is None:  # a copy's event is held under its copy_of
            held.setdefault(first, []).append((sequence, _content(payload)))
    copies: dict[int, int] = {}
    for n in sorted(now, key=lambda n: n.sequence):
        first, content = n.first_sequence or n.sequence, _content(n.payload)
        same = [s for s, other in held.get(first, []) if other == content]
        if same:
            copies[n.sequence] = same[0]
        else:
            held.setdefault(first, []).append((n.sequence, content))
    store.mark_copies(conn, gateway_id, copies)
    return copies
