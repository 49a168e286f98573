"""Outbox figures on this machine: append and drain rates, disk use, days offline.

Run ``python bench/outbox_bench.py`` (``--help`` for sizes). It works in a temporary
directory, on the real outbox (WAL, ``synchronous=FULL``: every append waits for an fsync),
with readings shaped like the lamp controller's quarter-hour metering records. Wall-clock
time is measured with ``time.perf_counter``; the cabinet's own time is a ``ManualClock``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.events import EquipmentEvent, Priority
from edge.storage.outbox import Outbox
from edge.storage.overflow import MIB, OutboxLimits, sequence_ranges
from foundation.clock import ManualClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)
QUARTER = timedelta(minutes=15)
LAMPS = [f"lamp-{n:03d}" for n in range(100)]


def reading(device_id: str, end: datetime) -> EquipmentEvent:
    """A quarter-hour metering record, shaped like ``edge.equipment.metering``'s."""
    return EquipmentEvent(
        device_id=device_id,
        type="energy_interval",
        priority=Priority.METERING,
        at=end,
        attributes={
            "interval_start": (end - QUARTER).isoformat(),
            "interval_end": end.isoformat(),
            "wh": "9.375",
            "on_seconds": "900",
            "covered_seconds": "900",
        },
    )


def switched(device_id: str, at: datetime) -> EquipmentEvent:
    return EquipmentEvent(device_id, "lamp.switched", Priority.EVENT, at, "", {"level": "100"})


def cabinet_quarter(clock: ManualClock, quarter: int) -> list[EquipmentEvent]:
    """What a 100-lamp cabinet records in one quarter hour: 100 readings, switches twice a day."""
    clock.advance(QUARTER.total_seconds())
    now = clock.now()
    batch = [reading(d, now) for d in LAMPS]
    if quarter % 48 == 0:  # dusk and dawn
        batch += [switched(d, now) for d in LAMPS]
    return batch


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def bench_single(directory: Path, count: int) -> float:
    clock = ManualClock(T0)
    with Outbox(directory / "single.db", clock=clock) as box:
        events = [reading(LAMPS[i % 100], T0) for i in range(count)]
        return count / timed(lambda: [box.append(e) for e in events])


def bench_batched(directory: Path, quarters: int) -> tuple[float, float, int]:
    """Append rate with one append per quarter hour; bytes per reading on disk."""
    clock = ManualClock(T0)
    path = directory / "batched.db"
    with Outbox(path, clock=clock) as box:
        batches = [[reading(d, T0 + q * QUARTER) for d in LAMPS] for q in range(quarters)]
        elapsed = timed(lambda: [box.append_many(b) for b in batches])
        count = box.pending_count
    # Closed: the log is folded in, so the file is what the readings take.
    return count / elapsed, path.stat().st_size / count, count


def bench_days_offline(directory: Path, budget: int) -> tuple[float, int, int]:
    """Fill a budget with a cabinet's records until the first drop; days it held."""
    clock = ManualClock(T0)
    limits = OutboxLimits(max_disk_bytes=budget)
    with Outbox(directory / "offline.db", clock=clock, limits=limits) as box:
        quarter = 0
        while True:
            expected_next = box.last_sequence + 1
            sequences = box.append_many(cabinet_quarter(clock, quarter))
            if sequences[0] != expected_next:  # a gap event took a sequence: first drop
                break
            quarter += 1
        return quarter / (4 * 24), box.pending_count, box.disk_bytes


def bench_drain(directory: Path, quarters: int, window: int) -> float:
    clock = ManualClock(T0)
    with Outbox(directory / "drain.db", clock=clock) as box:
        for q in range(quarters):
            box.append_many(cabinet_quarter(clock, q))
        count = box.pending_count

        def drain() -> None:
            while batch := box.next_batch(max_events=window, max_bytes=256 * 1024):
                box.ack(sequence_ranges(e.sequence for e in batch))

        elapsed = timed(drain)
        assert box.pending_count == 0
        return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=2000, help="single appends to time")
    parser.add_argument("--quarters", type=int, default=672, help="quarter hours (672: a week)")
    parser.add_argument("--budget-mib", type=int, default=64, help="outbox budget for days")
    parser.add_argument("--window", type=int, default=500, help="events per batch when draining")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="outbox-bench-") as tmp:
        directory = Path(tmp)
        single = bench_single(directory, args.single)
        print(f"{'append, one event per transaction':<34}: {single:10,.0f} events/s")
        batched, per_event, count = bench_batched(directory, args.quarters)
        label = "append, 100 readings per append"
        print(f"{label:<34}: {batched:10,.0f} events/s ({count:,} readings)")
        print(f"{'disk per metering reading':<34}: {per_event:10,.1f} bytes (database file)")
        days, held, disk = bench_days_offline(directory, args.budget_mib * MIB)
        label = f"100-lamp cabinet offline, {args.budget_mib} MiB"
        print(
            f"{label:<34}: {days:10,.1f} days before the first drop"
            f" ({held:,} records, {disk / MIB:.1f} MiB on disk)"
        )
        drain = bench_drain(directory, args.quarters, args.window)
        label = f"drain, next_batch({args.window}) + ack"
        print(f"{label:<34}: {drain:10,.0f} events/s")


if __name__ == "__main__":
    main()
