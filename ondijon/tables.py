"""Listings for a person (a table with a header) or for a program (``--json``).

Every cell passes :func:`foundation.escaping.escape`: gateway ids, communes, device ids and
event messages come from operators and gateways, and none may add a line or reach the
terminal as a control sequence. JSON is written with ``ensure_ascii``, so every control,
C1 and bidi character is a ``\\u`` escape already.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from foundation.escaping import escape


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns under an upper-case header; cells escaped."""
    cells = [[escape(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [headers, *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def to_dict(message: Message) -> dict[str, Any]:
    """A message as JSON values, with the .proto field names."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=True)


def when(stamp: timestamp_pb2.Timestamp, *, never: str = "never") -> str:
    """``2024-11-03 18:02:11 UTC``, or ``never`` for an unset timestamp."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return never
    return f"{stamp.ToDatetime(tzinfo=UTC):%Y-%m-%d %H:%M:%S} UTC"


def ago(stamp: timestamp_pb2.Timestamp, now: datetime, *, never: str = "never") -> str:
    """``3 min ago`` for a recent instant, the instant itself past a day."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return never
    seconds = (now - stamp.ToDatetime(tzinfo=UTC)).total_seconds()
    if seconds < 0 or seconds >= 86400:
        return when(stamp)
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min ago"
