"""write_atomic: a reader sees the old content or the new, a secret is never readable by
others even for an instant, and a failed write leaves no debris."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from foundation.files import fsync_tree, temporary_prefix, write_atomic


class PowerCut(Exception):
    pass


def debris(directory: Path, target: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(temporary_prefix(target))]


def test_a_secret_has_its_mode_before_its_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "gateway.key"
    modes: list[int] = []
    real_write = os.write

    def checking_write(fd: int, data: bytes | memoryview) -> int:
        modes.append(os.fstat(fd).st_mode & 0o777)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", checking_write)
    write_atomic(target, b"-----BEGIN PRIVATE KEY-----\n" * 1000, mode=0o600)
    monkeypatch.undo()
    assert modes and set(modes) == {0o600}
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.read_bytes() == b"-----BEGIN PRIVATE KEY-----\n" * 1000


def test_the_mode_is_exactly_as_asked_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "root.pem", b"public", mode=0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "root.pem").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("point", ["synced", "replaced"])
def test_a_cut_keeps_either_the_old_or_the_new_content_whole(tmp_path: Path, point: str) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b'{"version": 1}')

    def cut(at: str) -> None:
        if at == f"write:state.json:{point}":
            raise PowerCut(at)

    with pytest.raises(PowerCut):
        write_atomic(target, b'{"version": 2}', crash=cut)
    expected = b'{"version": 1}' if point == "synced" else b'{"version": 2}'
    assert target.read_bytes() == expected
    assert debris(tmp_path, target) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "outbox.db"
    write_atomic(target, b"old")

    def disk_full(fd: int, fsync: object = None) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, b"new" * 1000)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert debris(tmp_path, target) == []


def test_a_missing_directory_is_an_error_not_a_new_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "absent" / "file", b"x")
    assert list(tmp_path.iterdir()) == []


def test_fsync_tree_reaches_every_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one").write_bytes(b"1")
    (tmp_path / "a" / "b" / "two").write_bytes(b"2")
    synced: list[int] = []
    real = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    fsync_tree(tmp_path)
    monkeypatch.undo()
    assert len(synced) == 5  # two files, three directories
