"""Durable file operations for the firmware subsystem, with named crash points.

The implementation is :mod:`foundation.files`, shared by the whole project; this module
names the part of it the firmware code uses.

Power can be cut at any byte: a file is written under a temporary name, fsynced, renamed
over the target with ``os.replace`` and its directory fsynced, so a reader sees the old or
the new content, never a mix. Every step that matters calls a :data:`CrashPoint` with its
name; production passes :func:`no_crash`, tests raise from it to stop the program exactly
there and then check that the next boot still finds a good version.
"""

from __future__ import annotations

from foundation.files import CrashPoint, fsync_dir, fsync_tree, no_crash, write_atomic

__all__ = ["CrashPoint", "fsync_dir", "fsync_tree", "no_crash", "write_atomic"]
