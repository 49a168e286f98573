"""Energy metering in fixed 15-minute intervals, aligned on the UTC quarter hour.

The agent samples each lamp's monotonic counters (energy in Wh, operating hours) on its
timer and feeds them to a :class:`QuarterHourMeter`; the meter turns the differences into
one record per lamp per quarter hour (start, end, wh, on_seconds), emitted as a METERING
:class:`~edge.events.EquipmentEvent` when the interval closes. A week offline is
then 672 small records per lamp in the outbox, whatever the sampling rate.

Rules (I/O-free; time is the sample's ``now``):

- Between two samples the counters' increase is spread over the elapsed time in proportion
  to it, so an interval boundary crossed between samples splits the energy fairly.
- A counter that goes down has restarted from zero (a field node that rebooted): the new
  value is what was used since the restart.
- Samples further apart than ``max_gap_s`` (the agent was stopped, a node was offline) are
  not spread over the silence: the interval open before the gap closes with what it saw,
  one record spanning the whole quarters of the gap carries the energy used meanwhile, and
  metering resumes in the quarter of the new sample. Nothing is lost and no empty records
  are invented.
- A sample earlier than the previous one (the clock was set back) closes the open interval
  and starts again from that sample.
- ``covered_seconds`` says how much of an interval samples actually spanned; after a restart
  of the agent the same quarter can be reported twice with partial coverage, and consumers
  add records of the same (device, start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from edge.events import EquipmentError, EquipmentEvent, Priority

INTERVAL_S = 900
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MeteringError(EquipmentError):
    """A sample was refused (naming the field and why); the meter's state is unchanged."""


@dataclass(frozen=True)
class MeteringInterval:
    """Energy used by one device over one interval."""

    device_id: str
    start: datetime
    end: datetime
    wh: float
    on_seconds: float
    covered_seconds: float

    def to_event(self) -> EquipmentEvent:
        """The outbox record: a METERING event stamped with the interval's end."""
        return EquipmentEvent(
            device_id=self.device_id,
            type="energy_interval",
            priority=Priority.METERING,
            at=self.end,
            attributes={
                "interval_start": self.start.isoformat(),
                "interval_end": self.end.isoformat(),
                "wh": f"{self.wh:.3f}",
                "on_seconds": f"{self.on_seconds:.0f}",
                "covered_seconds": f"{self.covered_seconds:.0f}",
            },
        )


def quarter_start(when: datetime) -> datetime:
    """The start of the UTC quarter hour containing ``when``."""
    seconds = (when - _EPOCH) // timedelta(seconds=1)
    return _EPOCH + timedelta(seconds=seconds - seconds % INTERVAL_S)


def _events(intervals: list[MeteringInterval]) -> list[EquipmentEvent]:
    # An interval no sample reached and no energy fell into says nothing: not worth a record.
    return [i.to_event() for i in intervals if i.covered_seconds or i.wh or i.on_seconds]


@dataclass
class _Device:
    at: datetime
    wh: float
    hours: float
    start: datetime
    interval_wh: float = 0.0
    interval_on_s: float = 0.0
    interval_covered_s: float = 0.0


class QuarterHourMeter:
    """Aggregates counter samples of many devices into closed quarter-hour intervals."""

    def __init__(self, *, max_gap_s: float = 3600.0) -> None:
        """Create an empty meter.

        Args:
            max_gap_s: samples further apart are treated as a gap (at least 30 minutes,
                so a gap always spans a whole quarter).
        """
        if not max_gap_s >= 2 * INTERVAL_S:
            raise ValueError(f"max_gap_s: must be at least {2 * INTERVAL_S} s")
        self._max_gap_s = max_gap_s
        self._devices: dict[str, _Device] = {}

    def feed(
        self, device_id: str, now: datetime, energy_wh: float, operating_hours: float
    ) -> list[EquipmentEvent]:
        """Take one sample of a device's counters.

        Args:
            device_id: the device.
            now: when the counters were read (timezone-aware).
            energy_wh: the device's energy counter.
            operating_hours: the device's operating-hours counter.

        Returns:
            The METERING events of the intervals this sample closed, oldest first.

        Raises:
            MeteringError: a timezone-naive time or a counter that is not a finite,
                non-negative number.
        """
        if now.tzinfo is None:
            raise MeteringError("now: must be timezone-aware")
        for name, value in (("energy_wh", energy_wh), ("operating_hours", operating_hours)):
            if not math.isfinite(value) or value < 0:
                raise MeteringError(f"{name}: must be a finite, non-negative number")
        now = now.astimezone(UTC)
        device = self._devices.get(device_id)
        if device is None:
            self._devices[device_id] = _Device(now, energy_wh, operating_hours, quarter_start(now))
            return []
        closed: list[MeteringInterval] = []
        wh = energy_wh - device.wh if energy_wh >= device.wh else energy_wh
        on_s = 3600.0 * (
            operating_hours - device.hours if operating_hours >= device.hours else operating_hours
        )
        elapsed = (now - device.at).total_seconds()
        if elapsed < 0:
            closed.append(self._close(device_id, device))
            # The energy is real even if the clock is not: the new interval keeps it.
            self._devices[device_id] = _Device(
                now, energy_wh, operating_hours, quarter_start(now), wh, 0.0, 0.0
            )
            return _events(closed)
        if elapsed > self._max_gap_s:
            closed.append(self._close(device_id, device))
            gap_end = quarter_start(now)
            closed.append(
                MeteringInterval(
                    device_id=device_id,
                    start=device.start + timedelta(seconds=INTERVAL_S),
                    end=gap_end,
                    wh=wh,
                    on_seconds=min(on_s, elapsed),
                    covered_seconds=0.0,
                )
            )
            device.start = gap_end
        else:
            self._spread(device_id, device, now, elapsed, wh, on_s, closed)
        device.at, device.wh, device.hours = now, energy_wh, operating_hours
        return _events(closed)

    def flush(self) -> list[EquipmentEvent]:
        """Close every open interval as it stands (at shutdown) and forget all devices."""
        closed = [self._close(key, device) for key, device in self._devices.items()]
        self._devices.clear()
        return _events(closed)

    def _spread(
        self,
        device_id: str,
        device: _Device,
        now: datetime,
        elapsed: float,
        wh: float,
        on_s: float,
        closed: list[MeteringInterval],
    ) -> None:
        if elapsed == 0:
            device.interval_wh += wh
            device.interval_on_s += on_s
            return
        on_fraction = min(1.0, on_s / elapsed)
        cursor = device.at
        while True:
            end = device.start + timedelta(seconds=INTERVAL_S)
            slice_end = min(end, now)
            share = (slice_end - cursor).total_seconds()
            device.interval_wh += wh * share / elapsed
            device.interval_on_s += on_fraction * share
            device.interval_covered_s += share
            if now < end:
                return
            closed.append(self._close(device_id, device))
            device.start, cursor = end, end

    def _close(self, device_id: str, device: _Device) -> MeteringInterval:
        interval = MeteringInterval(
            device_id=device_id,
            start=device.start,
            end=device.start + timedelta(seconds=INTERVAL_S),
            wh=device.interval_wh,
            on_seconds=device.interval_on_s,
            covered_seconds=device.interval_covered_s,
        )
        device.interval_wh = device.interval_on_s = device.interval_covered_s = 0.0
        return interval
