"""Durable file operations for the firmware subsystem, with named crash points.

Power can be cut at any byte: a file is written under a temporary name, fsynced, renamed
over the target with ``os.replace`` and its directory fsynced, so a reader sees the old or
the new content, never a mix. Every step that matters calls a :data:`CrashPoint` with its
name; production passes :func:`no_crash`, tests raise from it to stop the program exactly
there and then check that the next boot still finds a good version.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

CrashPoint = Callable[[str], None]
"""Called with the name of the step just completed; raising simulates a power cut there."""


def no_crash(point: str) -> None:
    """The production crash point: carry on."""
    del point


def fsync_dir(directory: Path) -> None:
    """Make renames and creations in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, data: bytes, *, mode: int = 0o644, crash: CrashPoint = no_crash
) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Args:
        path: the file to replace (its directory must exist).
        data: the new content.
        mode: permission bits, set before the first byte is written.
        crash: crash point, called as ``write:<name>:synced`` and ``write:<name>:replaced``.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    os.close(fd)
    crash(f"write:{path.name}:synced")
    os.replace(tmp, path)
    crash(f"write:{path.name}:replaced")
    fsync_dir(path.parent)


def fsync_tree(root: Path) -> None:
    """Fsync every file and directory under ``root`` (after unpacking a release into it)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(Path(dirpath) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))
