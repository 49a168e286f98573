"""umqtt.simple on CPython: the vendored copy is the one the README names, and the
socket it is given behaves like MicroPython's stream socket."""

from __future__ import annotations

import hashlib
import re
import socket
from pathlib import Path

from edge.fieldbus.host_umqtt import StreamSocket

VENDOR = Path(__file__).resolve().parents[3] / "edge" / "fieldbus" / "vendor"


def test_the_vendored_umqtt_simple_is_the_exact_file_the_readme_names() -> None:
    named = re.search(r"SHA-256\s+`([0-9a-f]{64})`", (VENDOR / "README.md").read_text())
    assert named is not None
    digest = hashlib.sha256((VENDOR / "umqtt" / "simple.py").read_bytes()).hexdigest()
    assert digest == named.group(1)
    assert "MIT License" in (VENDOR / "LICENSE").read_text()


def test_stream_reads_block_for_n_bytes_or_return_none_when_non_blocking() -> None:
    a, b = socket.socketpair()
    stream = StreamSocket(a)
    stream.setblocking(False)
    assert stream.read(1) is None
    b.sendall(b"ab")
    stream.setblocking(True)
    b.sendall(b"cd")
    assert stream.read(4) == b"abcd"
    assert stream.write(b"hello", 3) == 3 and stream.write("é") == 2
    assert b.recv(10) == b"hel\xc3\xa9"
    b.close()
    assert stream.read(1) == b""  # end of stream, as umqtt expects
    assert (stream.sent, stream.received) == (5, 4)
    stream.close()
