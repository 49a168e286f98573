"""The one escape of outside text for logs and terminals (foundation/escaping.py)."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from foundation.escaping import escape

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
C0 = "".join(map(chr, range(0x20))) + "\x7f"
C1 = "".join(map(chr, range(0x80, 0xA0)))


def unescape(text: str) -> str:
    """An independent inverse: Python's own unicode_escape codec."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def harmless(char: str) -> bool:
    return unicodedata.category(char) not in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def test_controls_c1_bidi_and_separators_are_made_visible() -> None:
    for char in C0 + C1 + BIDI + "\u2028\u2029\ufeff\U000e0001":
        shown = escape(f"a{char}b")
        assert shown.startswith("a\\") and shown.endswith("b"), repr(char)
        assert all(c.isprintable() for c in shown), repr(char)
    assert escape("line\nforged") == "line\\nforged"
    assert escape("\x1b[2J\x07") == "\\x1b[2J\\x07"
    assert escape("\u202eexe.txt") == "\\u202eexe.txt"


def test_ordinary_text_is_left_alone_and_backslashes_cannot_fake_an_escape() -> None:
    for text in ("Dijon", "Quetigny — rue de l'Église", "Σ 42 ℃", "café\u00a0crème", ""):
        assert escape(text) == text
    assert escape("\\x1b") == "\\\\x1b"  # the text "\x1b" never reads as an ESC
    assert escape("C:\\temp") == "C:\\\\temp"


@given(st.text())
def test_escaping_is_lossless_and_leaves_nothing_unsafe(text: str) -> None:
    shown = escape(text)
    assert all(harmless(c) for c in shown)
    assert unescape(shown) == text
