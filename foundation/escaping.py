"""Text from outside made safe to print: in a log line, on an operator's terminal.

A gateway chooses the characters of its event messages, device ids, firmware version and
refusal reasons; a caller those of the ids and reasons it types. Printed as they are, a
newline forges a line of the log, ESC and the C1 controls start terminal escape sequences
(colours, cursor moves, window titles, clipboard writes), and the bidirectional overrides
make a line read differently from what it holds (Trojan Source, CVE-2021-42574).

:func:`escape` is the one function every log line and every CLI output passes such text
through: each character of Unicode's "other" categories (controls C0, DEL and C1, format
characters such as the bidi overrides and isolates, surrogates, private use, unassigned)
and the line and paragraph separators becomes a visible ``\\n``, ``\\xNN``, ``\\uNNNN``
or ``\\UNNNNNNNN``, and a backslash is doubled so that an escape cannot be faked.
Everything else, accents and other scripts included, is left as it is.
"""

from __future__ import annotations

import unicodedata

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Every category str.isprintable() rejects, except the space separators (harmless).
_ESCAPED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escaped(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    if unicodedata.category(char) not in _ESCAPED:
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str) -> str:
    """``text`` with every control, format and separator character made visible (see the
    module docstring); printable text without a backslash comes back unchanged."""
    # Fast path: isprintable() is False for every character escaped here.
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escaped(char) for char in text)


# What a spreadsheet reads as the start of a formula (OWASP "CSV injection"): the sign
# characters, and a tab or carriage return that some programs skip before one.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """``text`` safe as a CSV cell opened in a spreadsheet: one that starts like a formula
    gets a leading apostrophe (the spreadsheet then shows it as text); quoting is the CSV
    writer's."""
    return "'" + text if text.startswith(_FORMULA_START) else text
