"""Helpers for the node's tests, which run on CPython (pytest) and on MicroPython (its
WebAssembly port, tests/edge/node/micropython_runner.mjs): no pytest, no tempfile there.

Test modules named ``test_node_*.py`` use only this and :mod:`edge.node`.
"""

import os

_made = [0]


def raises(kind, fn, *args, **kwargs):
    """Call ``fn``; return the ``kind`` exception it raised, fail if it raised none."""
    try:
        fn(*args, **kwargs)
    except kind as exc:
        return exc
    raise AssertionError("expected " + kind.__name__)


def scratch_dir() -> str:
    """A new empty directory (a temporary one on CPython, under /tmp on MicroPython)."""
    try:
        import tempfile

        return tempfile.mkdtemp(prefix="node-")
    except ImportError:
        _made[0] += 1
        path = "/tmp/node-" + str(_made[0])
        os.mkdir(path)
        return path


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def exists(path: str) -> bool:
    try:
        os.stat(path)
        return True
    except OSError:
        return False
