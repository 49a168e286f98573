"""The cabinet agent's side of the field bus: one aiomqtt connection to the cabinet broker.

:class:`FieldBus` is what docs/fieldbus.md ("What the gateway must do") asks of the
gateway, on ``aiomqtt`` 2.x (paho-mqtt 2) in the agent's event loop:

- it connects as ``gateway``, subscribes to every node's ``state`` and ``presence``, and
  sends a heartbeat every :data:`HEARTBEAT_S`, and soon after a node says it is up or the
  wall clock stepped, never more than one per :data:`HEARTBEAT_MIN_GAP_S` on the agent's
  clock (a hundred nodes joining at once cost one heartbeat, not a hundred);
- each lamp's level goes out as a retained QoS 1 ``cmd`` with a growing ``s`` whenever it
  changes; each node's program (computed by the cabinet from the schedule,
  :mod:`edge.fieldbus.program`) as a retained QoS 1 ``program`` when the schedule changes
  and once a day, and after a step of the wall clock (the switch points are epoch
  seconds computed from it); a program's ``n`` grows above every number sent or reported
  by a node, even after the clock was set back (a node refuses one not newer than
  what it holds); after any (re)connection, every node's ``cmd`` and ``program`` again, so
  a broker that restarted without its retained messages loses nothing: what the nodes must
  do lives here, in the agent;
- every message is decoded with :mod:`edge.node.bus`; a node that lies (a wrong topic, a
  malformed payload, impossible values, an implausible change) is refused with one
  ``fieldbus.refused`` event naming the node, field and reason, and nothing else changes:
  its last valid state stands;
- a node that is not configured as a lamp is recorded once (``fieldbus.unknown_node``);
- a lost broker is retried with backoff (1 s doubling to 30 s, from 1 s again after a
  connection that worked) on the agent's clock.

The lamps themselves are :class:`edge.equipment.lamp.fieldbus.FieldbusLamp` drivers that
read :meth:`FieldBus.node` and call :meth:`FieldBus.command`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from domain.schedule.model import Schedule, Site
from edge.events import EquipmentEvent, EventSink, Priority
from edge.fieldbus.broker import GATEWAY_USER
from edge.fieldbus.config import FieldbusConfig, gateway_password
from edge.fieldbus.program import node_program
from edge.node import bus
from edge.node.errors import FieldBusError, InvalidMessage
from edge.node.program import Program
from foundation.clock import Clock
from foundation.escaping import escape

if TYPE_CHECKING:
    # Imported when the bus runs: a cabinet without field-bus lamps never loads aiomqtt
    # (and paho-mqtt under it), which the agent's configuration reaches through this module.
    import aiomqtt

log = logging.getLogger("ondijon.edge.fieldbus")

HEARTBEAT_S = 60.0
HEARTBEAT_MIN_GAP_S = 1.0
PROGRAM_REFRESH_S = 86400.0
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0


def _stop_if_cancelled() -> None:
    """Raise the cancellation a call returned from anyway.

    aiomqtt waits for a publication's acknowledgement with ``asyncio.wait_for``, which on
    Python 3.11 returns normally when the acknowledgement and a cancellation (the agent
    stopping) come in the same loop iteration; the request stays counted on the task.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass
class Node:
    """What the gateway knows of one node.

    Attributes:
        state: its last valid state, None before the first.
        up: its presence (birth: True, will: False), None before any.
        level: the level the agent wants (None: never commanded).
        seq: ``s`` of the last command sent.
        program: the program last computed for it.
        heard_at: when its last valid state arrived (the agent's clock).
    """

    state: bus.NodeState | None = None
    up: bool | None = None
    level: int | None = None
    seq: int = 0
    program: Program | None = None
    heard_at: datetime | None = None
    listeners: list[Callable[[], None]] = field(default_factory=list)


class FieldBus:
    """The agent's connection to its cabinet's broker (a :class:`~edge.equipment.device.Bus`)."""

    name = "fieldbus"

    def __init__(
        self,
        config: FieldbusConfig,
        password: str,
        *,
        clock: Clock,
        record: EventSink,
        nodes: Iterable[str],
        site: Site | None = None,
        schedule: Callable[[], Schedule | None] = lambda: None,
    ) -> None:
        self.config = config
        self._password = password
        self._clock = clock
        self._record = record
        self._site = site
        self._schedule = schedule
        self.nodes: dict[str, Node] = {node: Node() for node in nodes}
        self._unknown: set[str] = set()
        # Commands must grow across agent restarts: start from the time in seconds.
        self._seq = int(clock.now().timestamp())
        self._client: aiomqtt.Client | None = None
        self._dirty: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._programs_due = True
        self._programs_at: datetime | None = None
        self._heartbeat_due = True
        self._heartbeat_at: float | None = None  # the agent's monotonic clock
        self._program_number = 0
        #: Heartbeats sent (the bench's and the tests' figure).
        self.heartbeats_sent = 0
        #: Bytes of MQTT payload sent and received (the bench's figure), and connections made.
        self.payload_bytes_sent = 0
        self.connections = 0
        self.connected = asyncio.Event()

    # -- what the lamps and the agent call ----------------------------------------------------

    def node(self, node: str) -> Node:
        return self.nodes[node]

    def command(self, node: str, level: int) -> None:
        """Want ``node`` at ``level``: a retained command goes out (now, or on reconnection)."""
        entry = self.nodes[node]
        if entry.level == level:
            return
        entry.level = level
        self._dirty.add((node, bus.CMD))
        self._wake.set()

    def schedule_changed(self) -> None:
        """Recompute and send every node's program (a new schedule)."""
        self._programs_due = True
        self._wake.set()

    def clock_stepped(self) -> None:
        """The wall clock stepped: the nodes' time (a heartbeat) and their programs again."""
        self._programs_due = True
        self._heartbeat_due = True
        self._wake.set()

    # -- the connection -----------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until cancelled, reconnecting with backoff."""
        import aiomqtt

        backoff = FIRST_BACKOFF_S
        while True:
            connections = self.connections
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                # A lost broker (refused, reset, restarted): retried, never an alarm storm.
                for exc in group.exceptions:
                    log.warning("field bus: %s; retrying in %.0f s", escape(str(exc)), backoff)
            finally:
                self._client = None
                self.connected.clear()
            if self.connections > connections:
                backoff = FIRST_BACKOFF_S  # it was connected: a new outage starts afresh
            await self._clock.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def close(self) -> None:
        """Nothing held outside :meth:`run` (its ``async with`` closes the connection)."""

    async def _session(self) -> None:
        import aiomqtt

        async with aiomqtt.Client(
            self.config.host,
            self.config.port,
            identifier=GATEWAY_USER,
            username=GATEWAY_USER,
            password=self._password,
            keepalive=60,
            max_queued_outgoing_messages=10000,
        ) as client:
            self._client = client
            self.connections += 1
            prefix = f"{bus.PREFIX}{self.config.cabinet}/node/+/"
            await client.subscribe(prefix + bus.STATE, qos=0)
            await client.subscribe(prefix + bus.PRESENCE, qos=0)
            # Whatever the broker lost: every node's desired state again, the same programs
            # (a node rewrites its flash only for a program of different content).
            self._dirty |= {(n, bus.CMD) for n, e in self.nodes.items() if e.level is not None}
            self._dirty |= {(n, bus.PROGRAM) for n, e in self.nodes.items() if e.program}
            self._heartbeat_due = True
            self.connected.set()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._publisher(client))
                group.create_task(self._heartbeats())
                async for message in client.messages:
                    self._received(str(message.topic), message.payload)

    async def _heartbeats(self) -> None:
        while True:
            self._heartbeat_due = True
            self._wake.set()
            await self._clock.sleep(HEARTBEAT_S)

    async def _publisher(self, client: aiomqtt.Client) -> None:
        while True:
            now = self._clock.now()
            since = None if self._programs_at is None else now - self._programs_at
            if since is None or not timedelta(0) <= since < timedelta(seconds=PROGRAM_REFRESH_S):
                self._programs_due = True
            held_back = self._heartbeat_wait()
            if self._heartbeat_due and held_back <= 0:
                self._heartbeat_due = False
                self._heartbeat_at = self._clock.monotonic()
                self.heartbeats_sent += 1
                await self._publish(
                    client,
                    bus.gateway_topic(self.config.cabinet),
                    bus.encode_heartbeat(int(now.timestamp())),
                    qos=0,
                )
            if self._programs_due:
                self._programs_due = False
                self._programs_at = now
                self._compute_programs(now)
            while self._dirty:
                node, kind = self._dirty.pop()
                entry = self.nodes[node]
                topic = bus.node_topic(self.config.cabinet, node, kind)
                if kind == bus.CMD and entry.level is not None:
                    self._seq += 1
                    entry.seq = self._seq
                    payload = bus.encode_command(entry.level, entry.seq)
                elif kind == bus.PROGRAM and entry.program is not None:
                    payload = bus.encode_program(entry.program)
                else:
                    continue
                await self._publish(client, topic, payload, qos=1, retain=True)
            self._wake.clear()
            if self._dirty or self._programs_due:
                continue
            if self._heartbeat_due:
                held_back = self._heartbeat_wait()
                if held_back <= 0:
                    continue
                await self._woken_or_after(held_back)
            else:
                await self._woken_or_after(HEARTBEAT_S)

    def _heartbeat_wait(self) -> float:
        """Seconds before the next heartbeat may go (0: now)."""
        if self._heartbeat_at is None:
            return 0.0
        return self._heartbeat_at + HEARTBEAT_MIN_GAP_S - self._clock.monotonic()

    async def _woken_or_after(self, seconds: float) -> None:
        """Until :meth:`command` and the like wake the publisher, or ``seconds`` on the clock."""
        sleeper = asyncio.create_task(self._clock.sleep(seconds))
        waker = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)

    async def _publish(
        self, client: aiomqtt.Client, topic: str, payload: bytes, *, qos: int, retain: bool = False
    ) -> None:
        self.payload_bytes_sent += len(payload)
        await client.publish(topic, payload, qos=qos, retain=retain)
        _stop_if_cancelled()

    def _compute_programs(self, now: datetime) -> None:
        if self._site is None:
            return
        schedule = self._schedule()
        # Above anything sent or held: after the clock was set back, the time is lower
        # than the number of the programs the nodes carry, and they would refuse it.
        reported = (e.state.program for e in self.nodes.values() if e.state is not None)
        number = max(int(now.timestamp()), self._program_number + 1, max(reported, default=0) + 1)
        self._program_number = number
        for node, entry in self.nodes.items():
            try:
                program = node_program(
                    schedule,
                    self._site,
                    now,
                    number=number,
                    device_id=node,
                    days=self.config.program_days,
                )
            except FieldBusError as exc:
                self._event(node, "fieldbus.program_refused", Priority.ALARM, str(exc))
                continue
            entry.program = program
            self._dirty.add((node, bus.PROGRAM))

    # -- what arrives -------------------------------------------------------------------------

    def _received(self, topic: str, payload: bytes | bytearray | object) -> None:
        node: str | None = None
        try:
            cabinet, node, kind = bus.parse_topic(topic)
            if cabinet != self.config.cabinet or node is None:
                raise InvalidMessage("topic", "not a node of this cabinet")
            if node not in self.nodes:
                if node not in self._unknown:
                    self._unknown.add(node)
                    self._event(
                        node,
                        "fieldbus.unknown_node",
                        Priority.EVENT,
                        f"node {node} is on the bus but no lamp of the configuration names it",
                    )
                return
            entry = self.nodes[node]
            if kind == bus.STATE:
                state = bus.decode_state(payload)
                if entry.state is not None:
                    lie = bus.implausible_change(entry.state, state)
                    if lie is not None:
                        raise InvalidMessage(*lie)
                self._faults_changed(node, entry.state, state)
                entry.state = state
                entry.heard_at = self._clock.now()
                if self._site is not None and state.program > self._program_number:
                    # It holds a program newer than any we made (an agent restarted after
                    # the clock was set back): ours would be refused; number them above.
                    self._programs_due = True
                    self._wake.set()
            elif kind == bus.PRESENCE:
                up, _firmware = bus.decode_presence(payload)
                if entry.up is not False and not up:
                    self._event(node, "fieldbus.node_lost", Priority.ALARM, f"node {node} lost")
                elif entry.up is False and up:
                    self._event(node, "fieldbus.node_back", Priority.EVENT, f"node {node} back")
                entry.up = up
                if up:
                    self._heartbeat_due = True
                    self._wake.set()
            else:
                raise InvalidMessage("topic", f"a gateway does not read {kind}")
        except InvalidMessage as exc:
            who = node or "?"
            self._event(
                node or "",
                "fieldbus.refused",
                Priority.ALARM,
                f"node {who}: {exc.field}: {exc.reason}",
                field=exc.field,
                reason=exc.reason,
            )
            return
        for listener in list(self.nodes[node].listeners):
            listener()

    def _faults_changed(
        self, node: str, before: bus.NodeState | None, after: bus.NodeState
    ) -> None:
        # The node's storage fault has no lamp alarm of its own: one here, raised and cleared.
        was = before is not None and bus.FAULT_FLASH in before.faults
        now = bus.FAULT_FLASH in after.faults
        if now and not was:
            self._event(node, "node_storage", Priority.ALARM, "stored program unreadable")
        elif was and not now:
            self._event(node, "node_storage", Priority.EVENT, "stored program readable again")

    def _event(
        self, node: str, type_: str, priority: Priority, message: str, **attributes: str
    ) -> None:
        self._record(
            EquipmentEvent(
                device_id=node,
                type=type_,
                priority=priority,
                at=self._clock.now(),
                message=escape(message),
                attributes=dict(attributes),
            )
        )


__all__ = ["FieldBus", "FieldbusConfig", "Node", "gateway_password"]
