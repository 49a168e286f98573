"""What a full disk holds back: bounded, alarms kept, one alarm raised and cleared; and the
outbox leaves its database in place when the disk refuses a write."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.events import EquipmentEvent, Priority
from edge.storage.unwritten import FULL, Unwritten

T = datetime(2026, 12, 7, 20, tzinfo=UTC)


def _event(i: int, priority: Priority) -> EquipmentEvent:
    return EquipmentEvent(f"lamp-{i}", "x", priority, T + timedelta(seconds=i))


def test_held_events_stay_in_order_behind_one_alarm_and_the_bound_drops_metering_first() -> None:
    rng = random.Random(17)
    for _ in range(200):
        limit = rng.randint(2, 30)
        held = Unwritten(limit=limit)
        given = [_event(i, rng.choice(list(Priority))) for i in range(rng.randint(1, 60))]
        for start in range(0, len(given), 5):
            held.hold(given[start : start + 5], "disk full", T)
        assert held.held[0].type == FULL and held.held[0].priority is Priority.ALARM
        kept = held.held[1:]
        assert len(held.held) <= limit or all(e.priority is Priority.ALARM for e in kept)
        assert kept == [e for e in given if e in kept]  # order kept
        # Alarms are kept while the bound allows; nothing but metering goes while any
        # metering is left.
        alarms = [e for e in given if e.priority is Priority.ALARM]
        if len(alarms) < limit:
            assert all(a in kept for a in alarms)
        if any(e.priority is Priority.METERING for e in kept):
            assert all(e in kept for e in given if e.priority is not Priority.METERING)
        assert held.dropped == len(given) - len(kept)
        end = held.cleared(T + timedelta(minutes=5))
        assert (end.type, end.priority, end.attributes["state"]) == (
            FULL,
            Priority.EVENT,
            "cleared",
        )
        assert end.attributes["held_s"] == "300" and held.failing_since is None


def test_a_write_the_disk_refuses_leaves_the_outbox_whole(tmp_path: Path) -> None:
    # RLIMIT_FSIZE in a child process: the file-size limit a full disk gives (EFBIG).
    script = textwrap.dedent(f"""
        import resource
        from datetime import UTC, datetime
        from edge.events import EquipmentEvent, Priority
        from edge.storage.outbox import Outbox
        from foundation.clock import ManualClock
        clock = ManualClock(datetime(2026, 12, 7, 20, tzinfo=UTC))
        box = Outbox({str(tmp_path / "outbox.sqlite")!r}, clock=clock)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, hard))
        written = 0
        while True:
            try:
                box.append(EquipmentEvent("lamp-1", "x", Priority.EVENT, clock.now()))
            except Exception as exc:
                print(type(exc).__name__, written)
                break
            written += 1
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        print(box.append(EquipmentEvent("lamp-1", "y", Priority.ALARM, clock.now())))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    failed, written, after = done.stdout.split()
    assert failed == "OperationalError" and int(written) > 0
    assert int(after) == int(written) + 1  # the same database, the sequence contiguous
    assert not list(tmp_path.glob("*.corrupt*"))
