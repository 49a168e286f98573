"""The pure bookkeeping of budgets: token buckets, keyed buckets, stream meters and caps
(orchestrator/access/limits.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.access.limits import (
    BucketMap,
    LimitError,
    RateLimits,
    StreamCounts,
    StreamMeter,
    TokenBucket,
)


def test_a_bucket_spends_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket.full(rate=2, burst=4, now=0)
    assert [bucket.take(1, 0) for _ in range(5)] == [True] * 4 + [False]
    assert not bucket.take(1, 0.49)
    assert bucket.take(1, 0.5)
    assert bucket.available(100) == 4  # never above the burst


def test_a_clock_going_backwards_refills_nothing() -> None:
    bucket = TokenBucket.full(rate=10, burst=1, now=10)
    assert bucket.take(1, 10)
    assert not bucket.take(1, 5)
    assert not bucket.take(1, 10)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.1, 100),
    burst=st.floats(1, 100),
    steps=st.lists(st.tuples(st.floats(0, 5), st.floats(0, 10)), max_size=50),
)
def test_a_bucket_never_grants_more_than_burst_plus_rate_times_time(
    rate: float, burst: float, steps: list[tuple[float, float]]
) -> None:
    bucket = TokenBucket.full(rate, burst, 0.0)
    now, granted = 0.0, 0.0
    for elapsed, amount in steps:
        now += elapsed
        if bucket.take(amount, now):
            granted += amount
    assert granted <= burst + rate * now + 1e-6


def test_keyed_buckets_are_independent_and_bounded() -> None:
    buckets = BucketMap(rate=0.001, burst=1, max_keys=2)
    assert buckets.take("a", 1, 0) and not buckets.take("a", 1, 0)
    assert buckets.take("b", 1, 0)
    assert buckets.take("c", 1, 0)
    assert len(buckets) == 2  # "a", the least recently seen, was forgotten
    assert buckets.available("b", 0) == 0


def test_a_stream_meter_names_the_budget_it_went_over() -> None:
    limits = RateLimits(link_messages_per_s=1, link_message_burst=2, link_byte_burst=100)
    meter = StreamMeter(limits, now=0)
    meter.admit(10, 0)
    with pytest.raises(LimitError, match="bytes/s"):
        meter.admit(1000, 0)
    with pytest.raises(LimitError, match="messages/s"):
        meter.admit(1, 0)
    meter.admit(1, 1.0)


def test_stream_counts_refuse_at_the_cap_and_forget_closed_streams() -> None:
    counts = StreamCounts()
    counts.open("gw", 2)
    counts.open("gw", 2)
    with pytest.raises(LimitError, match="at most 2"):
        counts.open("gw", 2)
    counts.close("gw")
    counts.open("gw", 2)
    counts.close("gw")
    counts.close("gw")
    assert counts.count("gw") == 0
    counts.close("gw")
    assert counts.count("gw") == 0


def test_the_default_link_burst_lets_a_largest_message_through() -> None:
    from orchestrator.config import Limits

    assert RateLimits().link_byte_burst >= Limits().max_message_bytes
