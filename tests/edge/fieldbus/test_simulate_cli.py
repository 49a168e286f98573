"""The commands integrators run: provision a cabinet's bus, start its broker, run
virtual nodes with a stand-in gateway against it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import mosquitto_binary, port_open

pytestmark = [pytest.mark.integration, pytest.mark.mqtt]


def test_provision_start_and_simulate_from_the_command_line(tmp_path: Path) -> None:
    mosquitto_binary()
    from edge.fieldbus.broker import free_port

    port = free_port()
    broker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.fieldbus.broker",
            "--cabinet",
            "cab-07",
            "--nodes",
            "12",
            "--dir",
            str(tmp_path / "cab"),
            "--port",
            str(port),
            "--start",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert broker.stdout is not None
        lines = [broker.stdout.readline() for _ in range(3)]
        assert "12 nodes" in lines[0] and "mosquitto running" in lines[2], lines
        assert len(list((tmp_path / "cab" / "nodes").glob("n-*.json"))) == 12
        started = time.monotonic()
        nodes = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge.fieldbus.simulate",
                "--provisioned",
                str(tmp_path / "cab"),
                "--nodes",
                "10",
                "--duration",
                "3",
                "--gateway",
                "--speed",
                "60",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert nodes.returncode == 0, nodes.stderr
        assert time.monotonic() - started < 30
        assert "10 virtual nodes" in nodes.stdout
        assert "connected 10/10" in nodes.stdout, nodes.stdout
        # with the stand-in gateway's heartbeats, the nodes run on its commands or program
        assert " d" not in nodes.stdout.splitlines()[-1].split(":", 2)[-1], nodes.stdout
    finally:
        broker.terminate()
        broker.wait(10)
    # the broker went with the command that started it
    deadline = time.monotonic() + 5
    while port_open("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not port_open("127.0.0.1", port)
