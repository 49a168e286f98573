"""Rate limits and stream caps: one noisy or hostile peer cannot starve the others.

Pure bookkeeping with no I/O and no clock of its own: every method takes ``now`` (seconds
on a monotonic clock) and answers whether the peer may go on. The admission layer
(:mod:`orchestrator.access.admission`) applies it to every RPC; the numbers live in
:class:`RateLimits`, one documented dataclass.

A token bucket holds at most ``burst`` tokens and refills at ``rate`` tokens a second; a
message (or a byte, or a call) takes one token, and when none is left the peer is over
its budget. Keyed buckets remember a bounded number of peers: the least recently seen are
forgotten first (their bucket was almost always full again anyway), so a crowd of
addresses cannot exhaust memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from foundation.errors import FieldError


class LimitError(FieldError):
    """A peer went over one of its budgets; ``field`` names the budget."""


@dataclass(frozen=True)
class RateLimits:
    """Budgets of a peer. Defaults leave an honest agent far below every one of them.

    An agent sends at most one state report per report interval, event batches of up to
    200 events paced by acknowledgements, and a few acks and results: tens of messages a
    second while it drains a week-old outbox, one a second otherwise.

    Attributes:
        link_messages_per_s: sustained messages a gateway may send on its GatewayLink
            stream; above ``link_message_burst`` in excess the stream is closed with
            RESOURCE_EXHAUSTED (the agent reconnects with backoff and resumes).
        link_message_burst: messages a stream may send at once above the sustained rate.
        link_bytes_per_s: sustained bytes on a GatewayLink stream.
        link_byte_burst: bytes at once; at least the largest message the server accepts,
            or a single maximum-size message could never pass.
        calls_per_s: unary calls per identity (operator or gateway certificate) or, on the
            enrollment port, per client address.
        call_burst: unary calls at once above the sustained rate.
        streams_per_gateway: concurrent streams of one gateway identity on one method (a
            newer link stream replaces the older in the hub; a third at once is refused).
        streams_per_peer: concurrent streams of any other identity on one method (event
            feeds, uploads).
        stream_opens_per_s: sustained new streams per identity; a gateway that reconnects
            in a loop is refused until its budget refills.
        stream_open_burst: new streams at once.
        renewals_per_s: sustained certificate renewals per gateway (an agent renews once
            every few days; each renewal signs and stores a certificate).
        renewal_burst: renewals at once.
        enroll_failures_per_s: sustained refused enrollments per client address; past the
            budget the address is answered RESOURCE_EXHAUSTED without a look at the token.
        enroll_failure_burst: refused enrollments at once.
        calls_at_once: unary calls one certificate may have open at once (requests not yet
            received included), on each port.
        anonymous_calls_at_once: calls one client address without a certificate (the
            enrollment port) may have open at once.
        request_timeout_s: the request of a call must have arrived this long after the call
            opened; a call held open without one is ended with DEADLINE_EXCEEDED.
        call_timeout_s: a unary call ends within this, answered or DEADLINE_EXCEEDED.
        tracked_peers: identities or addresses remembered per kind of budget.
    """

    link_messages_per_s: float = 100.0
    link_message_burst: float = 1000.0
    link_bytes_per_s: float = 4 * 1024 * 1024
    link_byte_burst: float = 32 * 1024 * 1024
    calls_per_s: float = 50.0
    call_burst: float = 200.0
    streams_per_gateway: int = 2
    streams_per_peer: int = 8
    stream_opens_per_s: float = 1 / 6
    stream_open_burst: float = 20.0
    renewals_per_s: float = 1 / 600
    renewal_burst: float = 5.0
    enroll_failures_per_s: float = 1 / 3
    enroll_failure_burst: float = 20.0
    calls_at_once: int = 16
    anonymous_calls_at_once: int = 4
    request_timeout_s: float = 10.0
    call_timeout_s: float = 30.0
    tracked_peers: int = 100_000


class LiveRates:
    """The rate limits in force, shared by admission and enrollment: replacing
    :attr:`current` (a reload, a test) takes effect at their next call."""

    def __init__(self, current: RateLimits | None = None) -> None:
        self.current = current or RateLimits()


@dataclass
class TokenBucket:
    """A token bucket; :meth:`take` is the only way to spend."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate=rate, burst=burst, tokens=burst, updated=now)

    def available(self, now: float) -> float:
        """Tokens in the bucket at ``now`` (a monotonic ``now`` only refills)."""
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        return self.tokens

    def take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` tokens if there are that many."""
        if amount > self.available(now):
            return False
        self.tokens -= amount
        return True


class BucketMap:
    """One bucket per key (identity, address), for a bounded number of keys."""

    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def _bucket(self, key: Hashable, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket.full(self.rate, self.burst, now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def take(self, key: Hashable, amount: float, now: float) -> bool:
        """Spend ``amount`` from ``key``'s bucket if it holds that many."""
        return self._bucket(key, now).take(amount, now)

    def available(self, key: Hashable, now: float) -> float:
        """Tokens in ``key``'s bucket, without spending any."""
        return self._bucket(key, now).available(now)

    def give_back(self, key: Hashable, amount: float, now: float) -> None:
        """Return ``amount`` taken from ``key``'s bucket and not used after all (a
        reservation that turned out not to count); never above the burst."""
        bucket = self._bucket(key, now)
        bucket.tokens = min(bucket.burst, bucket.available(now) + amount)

    def __len__(self) -> int:
        return len(self._buckets)


class StreamMeter:
    """The message and byte budgets of one GatewayLink stream."""

    def __init__(self, limits: RateLimits, now: float) -> None:
        self._messages = TokenBucket.full(
            limits.link_messages_per_s, limits.link_message_burst, now
        )
        self._bytes = TokenBucket.full(limits.link_bytes_per_s, limits.link_byte_burst, now)
        self._limits = limits

    def admit(self, size: int, now: float) -> None:
        """Count one message of ``size`` bytes, or raise :class:`LimitError`."""
        if not self._messages.take(1, now):
            raise LimitError(
                "stream",
                f"more than {self._limits.link_messages_per_s:g} messages/s "
                f"(burst {self._limits.link_message_burst:g}); slow down",
            )
        if not self._bytes.take(size, now):
            raise LimitError(
                "stream",
                f"more than {self._limits.link_bytes_per_s:g} bytes/s "
                f"(burst {self._limits.link_byte_burst:g}); slow down",
            )


class StreamCounts:
    """Open streams (or calls) per key, against a cap."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def open(self, key: str, cap: int, budget: str = "streams") -> None:
        """Count a new stream of ``key`` or raise :class:`LimitError` at the cap."""
        count = self._open.get(key, 0)
        if count >= cap:
            raise LimitError(budget, f"already {count} open {budget} for {key} (at most {cap})")
        self._open[key] = count + 1

    def close(self, key: str) -> None:
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def count(self, key: str) -> int:
        return self._open.get(key, 0)
