"""Atomic file writes: power can be cut at any byte.

A file is written to a temporary name in the same directory, flushed and fsynced, renamed
over the target with ``os.replace`` and the directory is fsynced, so a reader sees either
the old content or the new one, never a torn mix. Secret files get their mode before the
first byte is written. This is the one implementation; the agent's storage and firmware
modules, the CA and the orchestrator all write through it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

CrashPoint = Callable[[str], None]
"""Called with the name of the step just completed; raising simulates a power cut there."""


def no_crash(point: str) -> None:
    """The production crash point: carry on."""
    del point


def temporary_prefix(target: Path) -> str:
    """Prefix of the temporary files :func:`write_atomic` makes beside ``target``."""
    return f".{target.name}."


def fsync_dir(directory: Path) -> None:
    """Make renames and creations in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644, crash: CrashPoint = no_crash
) -> None:
    """Replace ``path`` with ``data`` atomically and durably, with file mode ``mode``.

    Args:
        path: the file to replace (its directory must exist).
        data: the new content.
        mode: permission bits (not subject to the umask), set before the first byte.
        crash: test hook, called as ``write:<name>:synced`` and ``write:<name>:replaced``.

    Raises:
        OSError: the file could not be written; the old content is untouched.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(
        prefix=temporary_prefix(target), suffix=".tmp", dir=target.parent
    )
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        crash(f"write:{target.name}:synced")
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    crash(f"write:{target.name}:replaced")
    fsync_dir(target.parent)


def fsync_tree(root: Path) -> None:
    """Fsync every file and directory under ``root`` (e.g. after unpacking a release)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(Path(dirpath) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))
