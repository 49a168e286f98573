"""The rig's lock: one run at a time on a bench wired to real equipment (an exclusive
``flock`` on the inventory's ``lock_file``, dropped by the kernel when the holder dies, so a
killed run leaves no stale lock)."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RigBusy(Exception):
    """Another run holds the rig."""


@contextmanager
def hold_lock(path: Path, wait_s: float) -> Iterator[Path]:
    """Take the rig's lock file (an exclusive ``flock``), waiting up to ``wait_s``.

    Raises:
        RigBusy: still held by another run after ``wait_s``, naming the holder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = path.read_text(errors="replace").strip() or "another run"
                    raise RigBusy(f"the rig is held ({path}): {holder}") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: ondijon hil_tests\n".encode())
        yield path
    finally:
        os.close(fd)  # closing drops the lock
