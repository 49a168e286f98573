"""A record per bench run, in the manner of OpenHTF: measurements with limits, pass or fail,
the faults injected, the alarms raised and a timestamped trace of every pin, written as
JSON (``report.json``, for machines), a text summary (``report.txt``) and an HTML page
with a timeline of the pins of each scenario (``report.html``, SVG, no script).

A scenario takes a measurement with :meth:`Record.measure`: the value is kept with its
limits whether it passes or not, and an out-of-limits value fails the scenario.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from foundation.escaping import escape


@dataclass(frozen=True)
class Measurement:
    """One measured value and its limits (inclusive); ``None`` limits are open."""

    name: str
    value: float
    unit: str = ""
    low: float | None = None
    high: float | None = None
    description: str = ""

    @property
    def passed(self) -> bool:
        """Within the limits (a value that is not a number never is)."""
        if not math.isfinite(self.value):
            return False
        return (self.low is None or self.value >= self.low) and (
            self.high is None or self.value <= self.high
        )

    def limits(self) -> str:
        """The limits in words: ``>= 1 s``, ``0 .. 1 s``, ``<= 3``."""
        unit = f" {self.unit}" if self.unit else ""
        if self.low is not None and self.high is not None:
            return f"{self.low:g} .. {self.high:g}{unit}"
        if self.low is not None:
            return f">= {self.low:g}{unit}"
        if self.high is not None:
            return f"<= {self.high:g}{unit}"
        return "(recorded)"


class MeasurementFailed(AssertionError):
    """A measurement out of its limits (fails the scenario that took it)."""


@dataclass(frozen=True)
class PinEvent:
    """One pin change: agent-clock time, seconds since the scenario started, pin, line."""

    at: str
    t: float
    pin: str
    line: str
    state: float


@dataclass
class Record:
    """What one scenario did and what was measured."""

    scenario: str
    description: str = ""
    started: str = ""
    outcome: str = "unknown"
    measurements: list[Measurement] = field(default_factory=list)
    faults: list[dict[str, str]] = field(default_factory=list)
    alarms: list[dict[str, str]] = field(default_factory=list)
    trace: list[PinEvent] = field(default_factory=list)
    error: str = ""

    def measure(
        self,
        name: str,
        value: float,
        *,
        unit: str = "",
        low: float | None = None,
        high: float | None = None,
        description: str = "",
    ) -> Measurement:
        """Record ``value`` with its limits.

        Raises:
            MeasurementFailed: the value is out of its limits (it is recorded all the same).
        """
        taken = Measurement(name, float(value), unit, low, high, description)
        self.measurements.append(taken)
        if not taken.passed:
            raise MeasurementFailed(f"{name} = {value:g}{unit}, limits {taken.limits()}")
        return taken

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


@dataclass
class Report:
    """Every scenario of a run on one bench."""

    bench: str
    inventory: str
    pin_factory: str
    started: str
    records: list[Record] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for record, raw in zip(self.records, data["records"], strict=True):
            for measured, out in zip(record.measurements, raw["measurements"], strict=True):
                out["passed"] = measured.passed
                out["limits"] = measured.limits()
        data["passed"] = all(r.outcome in ("passed", "skipped") for r in self.records)
        return data

    def write(self, directory: Path) -> Path:
        """Write ``report.json``, ``report.txt`` and ``report.html`` under ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "report.json").write_text(json.dumps(self.to_json(), indent=1) + "\n")
        (directory / "report.txt").write_text(self.text())
        (directory / "report.html").write_text(self.html())
        return directory / "report.json"

    def text(self) -> str:
        """A readable summary: each scenario, its measurements and limits, its faults."""
        lines = [
            f"bench {escape(self.bench)} ({escape(self.inventory)}), pins: {self.pin_factory},"
            f" started {self.started}",
            "",
        ]
        for record in self.records:
            lines.append(f"{record.outcome.upper():8} {escape(record.scenario)}")
            for fault in record.faults:
                lines.append(f"         fault {fault['fault']} on {escape(fault['target'])}"
                             f" at {fault['at']}")  # fmt: skip
            for m in record.measurements:
                mark = "ok  " if m.passed else "FAIL"
                unit = f" {m.unit}" if m.unit else ""
                lines.append(
                    f"         {mark} {escape(m.name)} = {m.value:g}{unit}  [{m.limits()}]"
                )
            for alarm in record.alarms:
                lines.append(f"         alarm {escape(alarm['type'])} on {escape(alarm['device'])}")
            if record.error:
                lines.append(f"         {escape(record.error.splitlines()[0])}")
        passed = sum(r.outcome == "passed" for r in self.records)
        lines += ["", f"{passed} of {len(self.records)} scenarios passed"]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        """The summary as an HTML page with a pin timeline (SVG) per scenario."""
        e = html.escape
        parts = [
            "<!doctype html><meta charset=utf-8><title>OnDijon bench report</title>",
            "<style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px}.passed{color:#060}"
            ".failed{color:#b00}</style>",
            f"<h1>Bench {e(self.bench)}</h1><p>{e(self.inventory)} · pins: "
            f"{e(self.pin_factory)} · {e(self.started)}</p>",
        ]
        for record in self.records:
            parts.append(
                f"<h2 class={e(record.outcome)}>{e(record.outcome)}: {e(record.scenario)}</h2>"
            )
            if record.description:
                parts.append(f"<p>{e(record.description)}</p>")
            if record.measurements:
                parts.append("<table><tr><th>measurement<th>value<th>limits<th>result")
                for m in record.measurements:
                    result = "pass" if m.passed else "FAIL"
                    parts.append(
                        f"<tr><td>{e(m.name)}<td>{m.value:g} {e(m.unit)}<td>{e(m.limits())}"
                        f"<td class={'passed' if m.passed else 'failed'}>{result}"
                    )
                parts.append("</table>")
            for fault in record.faults:
                parts.append(f"<p>fault <b>{e(fault['fault'])}</b> on {e(fault['target'])} at "
                             f"{e(fault['at'])}</p>")  # fmt: skip
            for alarm in record.alarms:
                parts.append(f"<p>alarm <b>{e(alarm['type'])}</b> on {e(alarm['device'])} at "
                             f"{e(alarm['at'])}</p>")  # fmt: skip
            if record.error:
                parts.append(f"<pre>{e(record.error)}</pre>")
            parts.append(timeline(record.trace, record.faults))
        return "\n".join(parts) + "\n"


def timeline(trace: Sequence[PinEvent], faults: Sequence[dict[str, str]] = ()) -> str:
    """An SVG picture of every pin of ``trace``: one row per line, high as a raised band."""
    if not trace:
        return "<p>(no pin changed)</p>"
    rows: dict[str, list[PinEvent]] = {}
    for event in trace:
        rows.setdefault(event.line, []).append(event)
    end = max(event.t for event in trace) or 1.0
    width, label, row_h = 900, 230, 18
    scale = (width - label - 10) / end
    height = row_h * len(rows) + 24
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'font-family="monospace" font-size="11">']  # fmt: skip
    for i, (line, events) in enumerate(sorted(rows.items())):
        y = 4 + i * row_h
        out.append(f'<text x="0" y="{y + 12}">{html.escape(line)}</text>')
        state, since = 0.0, 0.0
        for event in [*events, PinEvent("", end, "", line, events[-1].state)]:
            if state:
                x = label + since * scale
                w = max(1.0, (event.t - since) * scale)
                h = max(2.0, (row_h - 4) * min(1.0, state))
                out.append(
                    f'<rect x="{x:.1f}" y="{y + row_h - 2 - h:.1f}" width="{w:.1f}" '
                    f'height="{h:.1f}" fill="#2a6"/>'
                )
            state, since = event.state, event.t
        out.append(
            f'<line x1="{label}" x2="{width - 10}" y1="{y + row_h - 2}" y2="{y + row_h - 2}" '
            'stroke="#999"/>'
        )
    out.append(f'<text x="{label}" y="{height - 4}">0 s</text>')
    out.append(f'<text x="{width - 60}" y="{height - 4}">{end:.1f} s</text>')
    out.append("</svg>")
    return "\n".join(out)


def pin_events(trace: Sequence[Any], since: float, line_of: Callable[[str], str]) -> list[PinEvent]:
    """``trace`` (pin changes with ``at``, ``pin``, ``state``, ``mono``) as report events,
    ``t`` in seconds since the monotonic reading ``since``, lines named by ``line_of``."""
    return [
        PinEvent(
            at=change.at.isoformat(),
            t=round(change.mono - since, 6),
            pin=change.pin,
            line=line_of(change.pin),
            state=float(change.state),
        )
        for change in trace
        if change.mono >= since
    ]
