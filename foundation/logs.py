"""Log lines: one line per event, as text or JSON, at the level the TOML sets.

``[log]`` in the agent's and the orchestrator's TOML::

    [log]
    level = "info"       # debug | info | warning | error
    format = "text"      # text | json (one JSON object per line, for a log shipper)

Whatever a gateway or a caller wrote stays on its line: the text format passes every
message (and a traceback) that holds a control, format or separator character through
:func:`foundation.escaping.escape`, so a newline cannot forge a line nor ESC drive the
terminal; JSON escapes them itself (``ensure_ascii``: bidi overrides too). Call sites go on
escaping what they quote (``escape(gateway_text)``): this is the net under them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal, TextIO

from foundation.escaping import escape
from foundation.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogSettings(Settings, frozen=True):
    """``[log]``: how much to log and in which format."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


def _one_line(text: str) -> str:
    # Already-escaped text is printable and left as it is (no doubled backslashes).
    return text if text.isprintable() else escape(text)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, a traceback escaped onto the same line."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        message = _one_line(record.getMessage())
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {message}"
        if record.exc_info:
            line += " " + escape(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message`` and, for an exception, ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True)


def configure(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (stderr) as ``settings`` say, replacing the
    handlers set before (the CLI's defaults, until the configuration was read)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
