"""Convergence: how many gateways hold their effective document, which lag and why.

A gateway lags when it does not hold its desired version as issued. The reason, in the
order an operator acts on it: ``refused`` (it said no to that version: the agent's error),
``offline`` (no stream: since its last contact), ``never-connected``, else ``pending``
(connected; its acknowledgement is on its way).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from orchestrator.store.groups import Standing


@dataclass(frozen=True)
class Lagging:
    standing: Standing
    reason: str
    offline_since: datetime | None


@dataclass
class Convergence:
    gateways: int = 0
    converged: int = 0
    without_document: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    lagging: list[Lagging] = field(default_factory=list)


def converge(
    standings: Iterable[Standing], connected: set[str], *, max_lagging: int
) -> Convergence:
    result = Convergence()
    for s in standings:
        result.gateways += 1
        if s.desired_version == 0:
            result.without_document += 1
            continue
        if s.held_version == s.desired_version:
            result.converged += 1
            continue
        if s.refused_version == s.desired_version:
            reason = "refused"
        elif s.gateway_id not in connected:
            reason = "offline" if s.last_seen is not None else "never-connected"
        else:
            reason = "pending"
        result.counts[reason] = result.counts.get(reason, 0) + 1
        if len(result.lagging) < max_lagging:
            since = s.last_seen if reason in ("offline", "refused") else None
            result.lagging.append(Lagging(s, reason, since))
    return result
