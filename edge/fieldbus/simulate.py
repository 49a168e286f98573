"""Virtual luminaire nodes on a PC: the node's own code, on CPython, against a real broker.

Host-only (not installed on boards). Each :class:`VirtualNode` is the firmware's
:class:`~edge.node.link.Link` with micropython-lib's umqtt client
(:mod:`edge.fieldbus.host_umqtt`), a simulated lamp (:class:`SimulatedLamp`), a flash
directory of its own and a board clock (:class:`SimulatedRTC`). A :class:`Fleet` runs
any number of them in one thread, polling a node when its socket is readable or its
timers are due, so a hundred nodes take a few percent of one core.

Time is injected: the fleet's tick counter is a :class:`~edge.node.ticks.ManualTicks`
(tests and the bench move it) or :class:`ScaledTicks` (real time, optionally faster).
Ticks wrap at 2**30 ms like a 32-bit board's.

    python -m edge.fieldbus.simulate --provisioned var/cab --nodes 100 --broker 127.0.0.1:1883

runs the first 100 node configurations written by ``python -m edge.fieldbus.broker``
(``--gateway`` adds a stand-in gateway that sends heartbeats and a demo program).
"""

from __future__ import annotations

import argparse
import json
import random
import select
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from edge.fieldbus.host_umqtt import HostClient
from edge.node.config import NodeConfig, parse_config
from edge.node.flash import Flash
from edge.node.link import Link
from edge.node.ticks import TICKS_PERIOD, ticks_diff

STANDBY_W = 0.5


class SimulatedLamp:
    """An LED luminaire: power follows the level; :attr:`failed` draws nothing."""

    def __init__(self, nominal_w: float) -> None:
        self.nominal_w = nominal_w
        self.level = 0
        self.failed = False
        self.levels: list[int] = []  # every level it was set to, in order

    def set_level(self, level: int) -> None:
        self.level = level
        self.levels.append(level)

    def power_w(self) -> float:
        if self.failed:
            return 0.0
        return STANDBY_W + self.nominal_w * self.level / 100


class SimulatedRTC:
    """A board's real-time clock reading ``wall()``; :meth:`lose_power` resets it to 2000."""

    def __init__(self, wall: Callable[[], float]) -> None:
        self._wall = wall
        self.powered = True
        self.sets = 0

    def now(self) -> int:
        # A clock that lost power restarts at MicroPython's epoch, 2000-01-01.
        return int(self._wall()) if self.powered else 946684800

    def set(self, epoch_s: int) -> None:
        self.sets += 1


class ScaledTicks:
    """Real time in milliseconds, ``speed`` times faster, wrapping like a board's."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed
        self._t0 = time.monotonic()

    def ms(self) -> int:
        return int((time.monotonic() - self._t0) * 1000 * self.speed) % TICKS_PERIOD


class VirtualNode:
    """One simulated board: configuration, flash directory, lamp, clock, and its Link."""

    def __init__(
        self,
        config: NodeConfig,
        flash_dir: Path,
        ticks_ms: Callable[[], int],
        rtc: SimulatedRTC,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.flash_dir = flash_dir
        self.lamp = SimulatedLamp(config.nominal_w)
        self.rtc = rtc
        self._ticks = ticks_ms
        self._rand = rand
        flash_dir.mkdir(parents=True, exist_ok=True)
        self.link = self._boot()

    def _boot(self) -> Link:
        client = HostClient(
            self.config.node,
            self.config.broker,
            self.config.port,
            self.config.node,
            self.config.password,
            self.config.keepalive_s,
        )
        return Link(
            self.config,
            client,
            self.lamp,
            Flash(str(self.flash_dir)),
            self._ticks,
            ticks_diff,
            rtc=self.rtc,
            rand=self._rand,
        )

    @property
    def client(self) -> HostClient:
        client: HostClient = self.link.client
        return client

    def reboot(self) -> None:
        """Power cycle: the connection dies without a goodbye, RAM is lost, flash stays."""
        self.crash()
        self.link = self._boot()

    def crash(self) -> None:
        """Drop the connection as a dead board would (the broker sends its will)."""
        if self.client.sock is not None:
            self.client.sock.close()
        self.link.connected = False


class Fleet:
    """Virtual nodes driven from one thread."""

    def __init__(self, nodes: Iterable[VirtualNode]) -> None:
        self.nodes = list(nodes)

    def step(self, wait_s: float = 0.0) -> None:
        """Wait up to ``wait_s`` for a socket to be readable, then poll every node."""
        if wait_s > 0:
            fds = [n.client.fileno() for n in self.nodes if n.link.connected]
            fds = [fd for fd in fds if fd >= 0]
            if fds:
                select.select(fds, [], [], wait_s)
            else:
                time.sleep(wait_s)
        for node in self.nodes:
            node.link.poll()

    def run_until(
        self,
        done: Callable[[], bool],
        *,
        timeout_s: float = 10.0,
        also: Callable[[], None] | None = None,
    ) -> bool:
        """Step until ``done()`` (True) or ``timeout_s`` of real time (False).

        ``also`` runs at each step (e.g. the gateway stand-in's ``poll``).
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.step(0.01)
            if also is not None:
                also()
            if done():
                return True
        return False

    def close(self) -> None:
        for node in self.nodes:
            node.link.close()


def load_configs(provisioned: Path, count: int, broker: str | None) -> list[NodeConfig]:
    """The first ``count`` node configurations of a provisioned cabinet directory."""
    configs = []
    for path in sorted((provisioned / "nodes").glob("*.json"))[:count]:
        config = parse_config(path.read_text())
        if broker is not None:
            host, _, port = broker.rpartition(":")
            config.broker, config.port = host, int(port)
        configs.append(config)
    return configs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run virtual luminaire nodes on this PC.")
    parser.add_argument("--provisioned", type=Path, required=True, help="from edge.fieldbus.broker")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--broker", help="host:port, instead of the configured one")
    parser.add_argument("--flash", type=Path, help="flash directories (<provisioned>/flash)")
    parser.add_argument("--speed", type=float, default=1.0, help="time runs this many times faster")
    parser.add_argument("--duration", type=float, default=0, help="real seconds; 0: until Ctrl-C")
    parser.add_argument("--gateway", action="store_true", help="add a stand-in gateway")
    args = parser.parse_args(argv)
    configs = load_configs(args.provisioned, args.nodes, args.broker)
    if not configs:
        parser.error(f"--provisioned: no node configuration in {args.provisioned / 'nodes'}")
    ticks = ScaledTicks(args.speed)
    start = time.time()

    def wall() -> float:
        return start + (time.monotonic() - ticks._t0) * float(args.speed)

    flash = args.flash or args.provisioned / "flash"
    fleet = Fleet(VirtualNode(c, flash / c.node, ticks.ms, SimulatedRTC(wall)) for c in configs)
    gateway = _stand_in(args, configs, wall) if args.gateway else None
    print(f"{len(configs)} virtual nodes on {configs[0].broker}:{configs[0].port}")
    end = time.monotonic() + args.duration if args.duration else None
    last_print = 0.0
    try:
        while end is None or time.monotonic() < end:
            fleet.step(0.05)
            if gateway is not None:
                gateway()
            if time.monotonic() - last_print >= 2:
                last_print = time.monotonic()
                up = sum(n.link.connected for n in fleet.nodes)
                modes = sorted({f"{n.link.mode}{n.link.level}" for n in fleet.nodes})
                print(f"connected {up}/{len(configs)}; mode+level: {' '.join(modes)}")
    except KeyboardInterrupt:
        pass
    fleet.close()
    return 0


def _stand_in(
    args: argparse.Namespace, configs: list[NodeConfig], wall: Callable[[], float]
) -> Callable[[], None]:
    from datetime import UTC, datetime

    from domain.schedule.model import Site
    from edge.fieldbus.program import node_program
    from edge.fieldbus.standin import GatewayStandIn

    credentials = json.loads((args.provisioned / "credentials.json").read_text())
    gateway = GatewayStandIn(
        configs[0].cabinet, configs[0].broker, configs[0].port, credentials["gateway"]
    )
    gateway.connect()
    site = Site(47.322, 5.0415, "Europe/Paris")
    now = datetime.fromtimestamp(wall(), UTC)
    for config in configs:
        program = node_program(None, site, now, number=int(wall()), device_id=config.node)
        gateway.program(config.node, program)
    last = [0.0]

    def tick() -> None:
        gateway.poll()
        if wall() - last[0] >= 60 or gateway.answer_births(int(wall())):
            gateway.heartbeat(int(wall()))
            last[0] = wall()

    return tick


if __name__ == "__main__":
    raise SystemExit(main())
