"""Atomic file writes: power can be cut at any byte.

A file is written to a temporary name in the same directory, flushed and fsynced, renamed
over the target with ``os.replace`` and the directory is fsynced, so a reader sees either
the old content or the new one, never a torn mix. Secret files get their mode before the
first byte is written. This is the one implementation; the agent's storage and firmware
modules, the CA and the orchestrator all write through it.

Modes are set explicitly, whatever the process's umask: what the agent and the
orchestrator create is theirs alone (directories 0700, files 0600); a file meant for
others (a CA certificate, the CRL) says so with ``mode=PUBLIC_FILE``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600
PUBLIC_FILE = 0o644

CrashPoint = Callable[[str], None]
"""Called with the name of the step just completed; raising simulates a power cut there."""


def no_crash(point: str) -> None:
    """The production crash point: carry on."""
    del point


def temporary_prefix(target: Path) -> str:
    """Prefix of the temporary files :func:`write_atomic` makes beside ``target``."""
    return f".{target.name}."


def private_directory(directory: Path) -> Path:
    """Create ``directory`` (and its missing parents) if needed and make it 0700: the
    state of one service, nobody else's to list."""
    directory.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
    os.chmod(directory, PRIVATE_DIRECTORY)
    return directory


def private_file(path: Path) -> Path:
    """Create ``path`` empty if it is missing (a database its library will fill) and make
    it 0600, before anything is written to it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    return path


def fsync_dir(directory: Path) -> None:
    """Make renames and creations in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int = PRIVATE_FILE,
    crash: CrashPoint = no_crash,
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
