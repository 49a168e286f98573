"""Which events an agent lost to its disk, exactly (pure: no I/O, no clock).

An outbox can lose events without dropping them by policy: a damaged database whose rows
cannot all be read back, a state directory restored from an older image, a disk that
drops its last committed transactions. The agent alone cannot say which of the sequences
involved the orchestrator already holds, so it says which it *may* have lost (the
candidates) and asks: the hello names the lowest candidate (``Hello.held_after``) and the
welcome lists the sequences above it the orchestrator holds. Then:

    lost = candidates - held by the orchestrator - still pending in the outbox

is exact: each is a sequence the agent gave to an event that will never arrive. It is
recorded as an ``outbox.gap`` event listing every lost sequence (split so no event lists
more than :data:`~edge.storage.overflow.MAX_LISTED_RANGES` ranges). Candidates above the
orchestrator's stored sequence that came from a range of unknown extent (an outbox whose
last sequence could not be read) are not listed: nobody knows they were ever given.

A sequence counter that went backwards (the orchestrator holds sequences above the
agent's last one) adds the range between the two to the candidates: those the
orchestrator holds were delivered by the agent's earlier life, the others are gone.

The same answer keeps the outbox's own gap events exact (:func:`corrected_gap`): a gap
event still waiting to be sent that lists a sequence the orchestrator holds (dropped for
room after a disk went back to an older state, when what had been sent since was no
longer known as sent) is corrected before it leaves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from domain.sequences import Ranges as Ranges
from domain.sequences import normalise as normalise
from edge.events import EquipmentEvent, Priority
from edge.storage.overflow import (
    GAP_DEVICE_ID,
    GAP_EVENT_TYPE,
    MAX_LISTED_RANGES,
    parse_sequence_list,
    sequence_list,
)
from protos.ondijon.v1 import link_pb2

# The end of a candidate range whose extent is unknown.
OPEN_END = 2**63 - 1


def subtract(ranges: Iterable[tuple[int, int]], minus: Iterable[tuple[int, int]]) -> Ranges:
    """The sequences of ``ranges`` that are not in ``minus``."""
    result: Ranges = []
    cuts = normalise(minus)
    for first, last in normalise(ranges):
        start = first
        for a, b in cuts:
            if b < start or a > last:
                continue
            if a > start:
                result.append((start, a - 1))
            start = max(start, b + 1)
            if start > last:
                break
        if start <= last:
            result.append((start, last))
    return result


def count(ranges: Iterable[tuple[int, int]]) -> int:
    return sum(b - a + 1 for a, b in ranges)


@dataclass(frozen=True)
class Settlement:
    """What a welcome told an agent about its candidates."""

    lost: Ranges  # exact: given to events that will never arrive
    rewound: bool  # the orchestrator held sequences above the agent's last one


def settle(
    candidates: Iterable[tuple[int, int]],
    *,
    held: Iterable[tuple[int, int]],
    pending: Iterable[tuple[int, int]],
    last_sequence: int,
    stored_sequence: int,
    open_from: int | None = None,
) -> Settlement:
    """The exact loss, once the orchestrator listed what it holds above the candidates.

    Args:
        candidates: sequences the agent may have lost (unreadable rows, damaged spans).
        held: what the orchestrator holds, at least above the lowest candidate.
        pending: what the outbox still holds (salvaged), never lost.
        last_sequence: the agent's last sequence when it said hello.
        stored_sequence: the orchestrator's highest stored sequence.
        open_from: candidates from here up have an unknown end (the outbox's last sequence
            was unreadable): listed only up to ``stored_sequence``.
    """
    wanted = list(candidates)
    rewound = stored_sequence > last_sequence
    if rewound:
        wanted.append((last_sequence + 1, stored_sequence))
    if open_from is not None:
        wanted = subtract(wanted, [(max(open_from, stored_sequence + 1), OPEN_END)])
    lost = subtract(subtract(wanted, held), pending)
    return Settlement(lost=lost, rewound=rewound)


def loss_events(lost: Ranges, reason: str, at: datetime) -> list[EquipmentEvent]:
    """``outbox.gap`` events listing every sequence of ``lost`` (split to stay readable)."""
    events = []
    for i in range(0, len(lost), MAX_LISTED_RANGES):
        part = lost[i : i + MAX_LISTED_RANGES]
        listed = sequence_list(part)
        events.append(
            EquipmentEvent(
                device_id=GAP_DEVICE_ID,
                type=GAP_EVENT_TYPE,
                # What was lost is unknown (alarms maybe): an alarm, like the loss itself.
                priority=Priority.ALARM,
                at=at,
                message=(
                    f"outbox lost {count(part)} event(s) to its storage ({reason}), "
                    f"sequences {part[0][0]}..{part[-1][1]}"
                ),
                attributes={
                    "dropped": str(count(part)),
                    "first_sequence": str(part[0][0]),
                    "last_sequence": str(part[-1][1]),
                    "sequences": listed,
                    "policy": "lost to storage, not dropped by policy",
                    "reason": reason,
                },
            )
        )
    return events


def gap_listed(event: link_pb2.Event) -> Ranges:
    """The sequences a gap event lists (none for any other event)."""
    if event.type != GAP_EVENT_TYPE or "sequences" not in event.attributes:
        return []
    return parse_sequence_list(event.attributes["sequences"])


def corrected_gap(
    event: link_pb2.Event, held: Iterable[tuple[int, int]], *, known_above: int
) -> link_pb2.Event | None:
    """``event`` (a gap event not yet sent) without the sequences the orchestrator holds,
    or None if it lists none of them.

    Args:
        held: what the orchestrator holds above ``known_above`` (``Welcome.held_after``).
        known_above: the sequence the hello asked about; what is listed at or below it is
            left as it is (the answer says nothing about it).
    """
    listed = gap_listed(event)
    held_here = subtract(held, [(0, known_above)])
    kept = subtract(listed, held_here)
    if not listed or count(kept) == count(listed):
        return None
    corrected = link_pb2.Event()
    corrected.CopyFrom(event)
    for key in [k for k in corrected.attributes if "." in k]:
        del corrected.attributes[key]  # per-priority figures: no longer known exactly
    removed = count(listed) - count(kept)
    corrected.attributes["sequences"] = sequence_list(kept)
    corrected.attributes["dropped"] = str(count(kept))
    corrected.attributes["held_by_orchestrator"] = str(removed)
    if kept:
        corrected.attributes["first_sequence"] = str(kept[0][0])
        corrected.attributes["last_sequence"] = str(kept[-1][1])
        corrected.message = (
            f"outbox full: dropped {count(kept)} event(s) the orchestrator does not hold "
            f"({removed} more it held already), sequences {kept[0][0]}..{kept[-1][1]}"
        )
    else:
        for key in ("first_sequence", "last_sequence", "first_at", "last_at"):
            corrected.attributes.pop(key, None)
        corrected.message = (
            f"outbox full: dropped {removed} event(s), all of which the orchestrator held"
        )
    return corrected


def given_again(
    event: link_pb2.Event, provisional: Ranges, fresh: tuple[int, int]
) -> link_pb2.Event:
    """``event`` (a gap event not yet sent) listing ``fresh`` numbers instead of the
    ``provisional`` ones it listed: events numbered after a disk went back, dropped for
    room before the welcome showed those numbers name other events (an agent's lost life
    gave them). The old numbers stay in ``numbered_before``, for the record."""
    listed = subtract(gap_listed(event), provisional)
    corrected = link_pb2.Event()
    corrected.CopyFrom(event)
    now_listed = normalise([*listed, fresh])
    corrected.attributes["sequences"] = sequence_list(now_listed)
    corrected.attributes["first_sequence"] = str(now_listed[0][0])
    corrected.attributes["last_sequence"] = str(now_listed[-1][1])
    corrected.attributes["numbered_before"] = sequence_list(provisional)
    corrected.message += (
        f" (numbered again: {sequence_list(provisional)} were taken by events of an older"
        " state of this outbox)"
    )
    return corrected
