"""Log lines: one per event, JSON when asked, the level from [log], outside text escaped."""

from __future__ import annotations

import io
import json
import logging

import pytest

from foundation.logs import LogSettings, configure
from foundation.settings import ConfigError, convert

FORGED = "lamp-1\n2026-01-01 00:00:00 ERROR ondijon: forged line \x1b[31m\u202e"


@pytest.fixture(autouse=True)
def restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_keeps_gateway_text_on_its_line_and_escaped() -> None:
    out = io.StringIO()
    configure(LogSettings(level="info", format="text"), out)
    logging.getLogger("ondijon.test").info("gateway said %s", FORGED)
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logging.getLogger("ondijon.test").exception("failed on %s", "x")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "\\n2026-01-01" in lines[0] and "\\x1b[31m" in lines[0] and "\\u202e" in lines[0]
    assert "\x1b" not in out.getvalue() and "\u202e" not in out.getvalue()
    assert "Traceback" in lines[1] and "ValueError: bad\\nvalue" in lines[1]


def test_json_is_one_object_per_line_with_the_message_intact() -> None:
    out = io.StringIO()
    configure(LogSettings(level="debug", format="json"), out)
    logging.getLogger("ondijon.test").debug("gateway said %s", FORGED)
    (line,) = out.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "debug" and entry["logger"] == "ondijon.test"
    assert entry["message"] == f"gateway said {FORGED}"
    assert line.isascii() and "\x1b" not in line


def test_the_level_filters() -> None:
    out = io.StringIO()
    configure(LogSettings(level="warning"), out)
    logging.getLogger("ondijon.test").info("quiet")
    logging.getLogger("ondijon.test").warning("loud")
    assert [line.split(": ", 1)[1] for line in out.getvalue().splitlines()] == ["loud"]


def test_an_unknown_level_or_format_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^level: must be one of 'debug', 'info'"):
        convert({"level": "verbose"}, LogSettings)
    with pytest.raises(ConfigError, match=r"^format: must be 'text' or 'json'"):
        convert({"format": "xml"}, LogSettings)
