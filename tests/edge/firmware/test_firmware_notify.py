"""systemd hears READY, WATCHDOG and STATUS over a real unix datagram socket."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.firmware.notify import Notifier, watchdog_interval


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield sock, str(path)


def test_ready_watchdog_and_status_arrive_as_datagrams(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    sock, path = systemd_socket
    notifier = Notifier(path)
    assert notifier.enabled
    assert notifier.ready("schedule loaded")
    assert sock.recv(4096) == b"READY=1\nSTATUS=schedule loaded"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.status("downloading 1.5.0: 40%")
    assert sock.recv(4096) == b"STATUS=downloading 1.5.0: 40%"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_socket_names_start_with_at() -> None:
    name = f"ondijon-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        assert Notifier(f"@{name}").watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_the_socket_comes_from_the_environment(
    systemd_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = systemd_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert Notifier().ready()
    assert sock.recv(4096) == b"READY=1"


def test_without_systemd_nothing_is_sent_and_nothing_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier().enabled
    assert not Notifier().ready()
    assert not Notifier(str(tmp_path / "gone")).watchdog()


def test_a_value_cannot_smuggle_another_field(systemd_socket: tuple[socket.socket, str]) -> None:
    _sock, path = systemd_socket
    with pytest.raises(ValueError, match="one line"):
        Notifier(path).status("ok\nREADY=1")


def test_watchdog_interval_is_half_the_systemd_timeout() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    mine = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(mine) == 0.5
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
