"""A CSV cell opened in a spreadsheet never starts a formula, and reads back as typed."""

from __future__ import annotations

import random

from foundation.escaping import csv_cell

STARTS = ("=", "+", "-", "@", "\t", "\r")


def test_a_cell_never_starts_like_a_formula_and_keeps_its_text() -> None:
    rng = random.Random(4180)
    alphabet = "=+-@\t\r'abc 1;,\"é"
    for _ in range(5_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        cell = csv_cell(text)
        assert not cell.startswith(STARTS)
        if text.startswith(STARTS):
            assert cell == "'" + text
        else:
            assert cell == text  # an ordinary cell, an apostrophe first included, is untouched
