"""Fixtures of the storage tests: a writer process killed with SIGKILL mid-work.

The writer is a forked child (no interpreter start-up, so 30 kills fit in a few seconds)
running the real storage code; it reports each durable write on a pipe *after* the call
returned, and the parent kills it after a random number of reports, i.e. at whatever byte
of a write it happens to be. What the child reported is what it was promised.
"""

from __future__ import annotations

import os
import random
import signal
import time
import traceback
from collections.abc import Callable

import pytest

Report = Callable[[str], None]
Writer = Callable[[Report], None]
KillAfter = Callable[[Writer, int], list[str]]


def _run_child(writer: Writer, write_fd: int) -> None:
    def report(line: str) -> None:
        os.write(write_fd, (line + "\n").encode())

    code = 1
    try:
        writer(report)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


@pytest.fixture
def kill_after() -> KillAfter:
    """``kill_after(writer, n)``: fork ``writer``, SIGKILL it soon after ``n`` reports.

    Returns every line the child reported before it died (a report is written only once
    the write it reports has returned).
    """

    rng = random.Random(20260301)

    def run(writer: Writer, reports: int) -> list[str]:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _run_child(writer, write_fd)
        os.close(write_fd)
        buffer = b""
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while buffer.count(b"\n") < reports:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                buffer += chunk
            # A random pause lands the kill at any byte of the writes that follow the
            # last report, instead of always just after it; nothing waits on it.
            time.sleep(rng.uniform(0.0, 0.005))
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            while chunk := pipe.read(65536):
                buffer += chunk
        assert os.WIFSIGNALED(status), "the writer stopped before it was killed"
        text = buffer.decode()
        complete = text[: text.rfind("\n") + 1]  # a line cut by the kill was never reported
        return complete.splitlines()

    return run
