"""Every benchmark script under bench/ still loads against the code it measures.

Benchmarks run by hand (README, "Benchmarks"), not in CI; an API they call can move
without any test noticing until someone needs the figures. Loading each script (its
``__main__`` block not run) catches a removed or renamed import the day it happens.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_the_script_loads(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))  # the scripts import their siblings (city.py)
    namespace = runpy.run_path(str(BENCH / script), run_name="bench_check")
    assert namespace["__doc__"], f"{script}: a docstring saying what it measures and how to run it"
