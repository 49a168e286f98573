"""A real Mosquitto with the generated configuration, and virtual nodes on it.

The broker is started by the test on a free port and stopped after it; outside CI a
machine without mosquitto skips these tests with the reason, in CI they fail.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge.fieldbus import broker
from edge.fieldbus.simulate import Fleet, SimulatedRTC, VirtualNode, load_configs
from edge.fieldbus.standin import GatewayStandIn
from edge.node.ticks import ManualTicks
from tests.conftest import mosquitto_binary

T0 = 1774699200  # 2026-03-28 12:00 UTC: the DST change in Paris is that night


@dataclass
class Cabinet:
    """A provisioned field bus with its broker running, a shared node clock and wall."""

    directory: Path
    config: broker.BrokerConfig
    files: broker.BrokerFiles
    port: int
    running: broker.RunningBroker
    ticks: ManualTicks = field(default_factory=ManualTicks)
    wall: list[float] = field(default_factory=lambda: [float(T0)])
    gateways: list[GatewayStandIn] = field(default_factory=list)

    @property
    def password(self) -> dict[str, str]:
        return dict(json.loads((self.directory / "credentials.json").read_text())["nodes"])

    def advance(self, seconds: float) -> None:
        """Move the nodes' ticks and the wall clock together."""
        self.ticks.advance(int(seconds * 1000))
        self.wall[0] += seconds

    def fleet(self, count: int | None = None) -> Fleet:
        configs = load_configs(self.directory, count or len(self.config.nodes), None)
        return Fleet(
            VirtualNode(
                c,
                self.directory / "flash" / c.node,
                self.ticks.ms,
                SimulatedRTC(lambda: self.wall[0]),
                rand=lambda: 0.5,
            )
            for c in configs
        )

    def gateway(self) -> GatewayStandIn:
        gateway = GatewayStandIn(
            self.config.cabinet, "127.0.0.1", self.port, self.config.gateway_password
        )
        gateway.connect()
        self.gateways.append(gateway)
        return gateway

    def restart_broker(self) -> None:
        self.running = broker.start(self.files, self.port, binary=mosquitto_binary())


def make_cabinet(tmp_path: Path, nodes: int, **node_settings: object) -> Cabinet:
    binary = mosquitto_binary()
    port = broker.free_port()
    run_as = getpass.getuser() if os.geteuid() == 0 else None
    ids = [f"n-{i:04d}" for i in range(1, nodes + 1)]
    config, files = broker.provision(
        "cab-01", ids, tmp_path / "cab", port=port, run_as=run_as, **node_settings
    )
    running = broker.start(files, port, binary=binary)
    return Cabinet(tmp_path / "cab", config, files, port, running)


@pytest.fixture
def cabinet(tmp_path: Path) -> Iterator[Cabinet]:
    """Five nodes (default level 80 %, fallback after 300 s) on a running broker."""
    made = make_cabinet(tmp_path, 5, default_level=80, fallback_s=300)
    try:
        yield made
    finally:
        made.running.stop()
