"""An atomic write cut at any point leaves the old content or the new, never a mix."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edge.firmware.durable import fsync_tree, write_atomic


class PowerCut(BaseException):
    pass


@pytest.mark.parametrize("cut", ["synced", "replaced"])
def test_a_cut_write_leaves_old_or_new_content(tmp_path: Path, cut: str) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")

    def crash(point: str) -> None:
        if point.endswith(cut):
            raise PowerCut

    with pytest.raises(PowerCut):
        write_atomic(target, b"new", crash=crash)
    assert target.read_bytes() == (b"old" if cut == "synced" else b"new")


def test_write_sets_the_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    write_atomic(target, b"k", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["secret"]


def test_fsync_tree_walks_nested_directories(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f.py").write_text("x")
    fsync_tree(tmp_path)
    assert (tmp_path / "a" / "b" / "f.py").read_text() == "x"
