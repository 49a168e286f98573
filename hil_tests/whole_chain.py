"""The whole chain on the bench: an orchestrator, a link the bench can cut, the agent's rig.

:func:`city_bench` starts a real orchestrator (gRPC over mutual TLS, its own CA, SQLite),
registers and enrolls the bench's gateway with a one-time token as an installer does,
puts a :class:`~tests.nothing_lost.harness.LinkProxy` between the gateway and the
orchestrator (cut the live connections, refuse new ones, hold every byte, flip one), and
starts the rig (:mod:`edge.bench.cabinet`): the real agent in its own process on the
inventory's pins, the simulated street behind them. The bench then checks the street
through the pin journal (:class:`cabinet_process.Rig`) and the control centre through the
admin API, and puts the pins' trace, the faults and the alarms the orchestrator stored in
the scenario's record.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cabinet_process import Rig

from edge.bench.inventory import Inventory, agent_equipment, subset, to_toml
from edge.bench.report import Record
from ondijon.client import AdminClient
from protos.ondijon.v1 import control_pb2, link_pb2
from provisioning.ca import CertificateAuthority
from tests.conftest import City, started_city
from tests.nothing_lost.harness import LinkProxy, stored_events

GATEWAY = "hil-bench"


@dataclass
class CityBench:
    """The orchestrator, the link's proxy and the rig of one scenario."""

    city: City
    proxy: LinkProxy
    rig: Rig
    record: Record
    began: datetime

    async def put(self, kind: link_pb2.DocumentKind.ValueType, payload: bytes) -> int:
        """An operator puts a desired-state document for the bench's gateway; its version."""
        response = await AdminClient(self.city.admin).put_desired_state(
            control_pb2.PutDesiredStateRequest(gateway_id=GATEWAY, kind=kind, payload=payload)
        )
        return response.document.version

    async def command(self, command: link_pb2.Command) -> None:
        """An operator's command to the bench's gateway."""
        await AdminClient(self.city.admin).send_command(
            control_pb2.SendCommandRequest(gateway_id=GATEWAY, command=command)
        )

    async def gateway(self) -> control_pb2.Gateway:
        response = await AdminClient(self.city.admin).get_gateway(
            control_pb2.GetGatewayRequest(gateway_id=GATEWAY)
        )
        return response.gateway

    async def holds(self, kind: link_pb2.DocumentKind.ValueType, version: int) -> None:
        """Wait until the orchestrator records the gateway as holding ``version``."""
        for _ in range(600):
            g = await self.gateway()
            if any(h.kind == kind and h.version == version for h in g.held):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the gateway never reported holding version {version}")

    async def connected(self) -> None:
        for _ in range(600):
            if (await self.gateway()).connected:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the gateway never connected: {self.rig.tail()}")

    async def stored(self) -> list[control_pb2.StoredEvent]:
        """Every event the orchestrator stored for the bench's gateway, by sequence."""
        return await stored_events(self.city, GATEWAY)

    async def delivered(self, timeout_s: float = 60.0) -> list[int]:
        """Wait until the agent's outbox is empty and the orchestrator holds its last
        sequence; every sequence the orchestrator stored, in order."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            sequences = [e.event.sequence for e in await self.stored()]
            if self.rig.pending == 0 and sequences and sequences[-1] >= self.rig.last_sequence:
                return sequences
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not delivered: {self.rig.pending} pending")
            await asyncio.sleep(0.1)

    def cut_link(self) -> None:
        """The line goes dead: live connections reset, new ones refused."""
        self.proxy.online = False
        self.proxy.cut_now()
        self.record.faults.append(self._fault("link_cut", "orchestrator link"))

    def corrupt_link(self, after_bytes: int = 64) -> None:
        """Flip one bit of the byte ``after_bytes`` further towards the orchestrator."""
        self.proxy.flip_after(after_bytes)
        self.record.faults.append(self._fault("link_corrupted", "orchestrator link"))

    def hold_link(self) -> None:
        """Hold every byte both ways, new connections too, until :meth:`release_link`."""
        self.proxy.stall()
        self.record.faults.append(self._fault("link_held", "orchestrator link"))

    def release_link(self) -> None:
        self.proxy.resume()
        self.record.faults.append(self._fault("link_released", "orchestrator link"))

    def restore_link(self) -> None:
        self.proxy.online = True
        self.record.faults.append(self._fault("link_restored", "orchestrator link"))

    def _fault(self, name: str, target: str) -> dict[str, str]:
        # The rig's clock as it last told it (once a simulated minute).
        at = self.rig.now.isoformat() if self.rig.now else ""
        return {"at": at, "fault": name, "target": target, "detail": ""}

    async def inject(self, fault: str, target: str, detail: str = "") -> datetime:
        at = await self.rig.inject(fault, target, detail)
        self.record.faults.append(
            {"at": at.isoformat(), "fault": fault, "target": target, "detail": detail}
        )
        return at


@contextlib.asynccontextmanager
async def city_bench(
    tmp_path: Path,
    inventory: Inventory,
    inventory_file: Path,
    *,
    kinds: list[str],
    start: datetime,
    record: Record,
    speed: float = 600.0,
    step: float = 0.5,
    pipe: bool = False,
) -> AsyncIterator[CityBench]:
    """An orchestrator, a cuttable link and the rig on ``kinds`` of ``inventory`` (read
    from ``inventory_file``; ``pipe``: the journal through a FIFO, see :class:`Rig`)."""
    ca = CertificateAuthority.init(tmp_path / "ca", now=datetime.now(UTC))
    async with started_city(tmp_path, ca) as city, LinkProxy(lambda: city.running.port) as proxy:
        wired = subset(inventory, kinds)
        config = await city.enrolled(GATEWAY, equipment=to_toml(agent_equipment(wired)))
        journal = tmp_path / "pins.journal"
        rig = Rig(
            config=config.state_dir / "agent.toml",
            inventory=inventory_file,
            journal=journal,
            kinds=",".join(kinds),
            address=proxy.address,
            speed=speed,
            step=step,
            pipe=pipe,
        )
        record.started = start.isoformat()
        await rig.start(start)
        bench = CityBench(city, proxy, rig, record, start)
        try:
            yield bench
        finally:
            with contextlib.suppress(Exception):
                record.alarms = [
                    {
                        "at": e.event.at.ToDatetime(tzinfo=UTC).isoformat(),
                        "type": e.event.type,
                        "device": e.event.device_id,
                    }
                    for e in await bench.stored()
                    if e.event.priority == link_pb2.EVENT_PRIORITY_ALARM
                ]
            if rig.process is not None and rig.process.returncode is None:
                await rig.stop()
            if journal.exists():
                record.trace = rig.trace(start)
