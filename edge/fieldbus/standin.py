"""A gateway stand-in: the cabinet's side of the bus, reduced to what tests and the bench need.

Until the agent's MQTT backend exists, this plays the gateway with the gateway's account:
it sends heartbeats, commands and programs exactly as docs/fieldbus.md says the gateway
must, and decodes what nodes report with the shared contract (:mod:`edge.node.bus`),
keeping refusals apart. It is no part of a cabinet: it has no schedule, no outbox, no
link, and it runs on the host's umqtt client (:mod:`edge.fieldbus.host_umqtt`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.fieldbus.broker import GATEWAY_USER
from edge.fieldbus.host_umqtt import HostClient
from edge.node import bus
from edge.node.errors import InvalidMessage
from edge.node.program import Program


@dataclass
class Seen:
    """What the stand-in learnt from the bus.

    Attributes:
        states: the latest valid state of each node.
        presence: whether each node said it is up (birth) or its will said it is gone.
        refused: (topic, field, reason) of every message the contract refused.
        births: node ids in the order their births arrived.
    """

    states: dict[str, bus.NodeState] = field(default_factory=dict)
    presence: dict[str, bool] = field(default_factory=dict)
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    births: list[str] = field(default_factory=list)


class GatewayStandIn:
    """The gateway's account on ``cabinet``'s broker at ``host:port``."""

    def __init__(self, cabinet: str, host: str, port: int, password: str) -> None:
        self.cabinet = cabinet
        self.seen = Seen()
        self.client = HostClient(GATEWAY_USER, host, port, GATEWAY_USER, password, 60)
        self.client.set_callback(self._on_message)
        self._seq = 0
        self._births_pending = False

    def connect(self) -> None:
        self.client.connect(timeout=5)
        self.client.subscribe(f"{bus.PREFIX}{self.cabinet}/node/+/{bus.STATE}".encode(), 0)
        self.client.subscribe(f"{bus.PREFIX}{self.cabinet}/node/+/{bus.PRESENCE}".encode(), 0)

    def close(self) -> None:
        self.client.disconnect()

    def poll(self) -> None:
        """Read what arrived (without blocking)."""
        while self.client.check_msg() is not None:
            pass

    def heartbeat(self, epoch_s: int) -> None:
        self.client.publish(bus.gateway_topic(self.cabinet).encode(), bus.encode_heartbeat(epoch_s))
        self._births_pending = False

    def answer_births(self, epoch_s: int) -> bool:
        """The contract's rule: a node's birth is answered with a heartbeat at once."""
        if self._births_pending:
            self.heartbeat(epoch_s)
            return True
        return False

    def command(self, node: str, level: int) -> int:
        """Command ``node`` to ``level`` (retained); returns the command's seq."""
        self._seq += 1
        topic = bus.node_topic(self.cabinet, node, bus.CMD).encode()
        self.client.publish(topic, bus.encode_command(level, self._seq), True, 1)
        return self._seq

    def program(self, node: str, program: Program) -> None:
        topic = bus.node_topic(self.cabinet, node, bus.PROGRAM).encode()
        self.client.publish(topic, bus.encode_program(program), True, 1)

    def _on_message(self, topic: bytes, payload: bytes) -> None:
        try:
            cabinet, node, kind = bus.parse_topic(topic)
            if cabinet != self.cabinet or node is None:
                raise InvalidMessage("topic", "not a node of this cabinet")
            if kind == bus.STATE:
                state = bus.decode_state(payload)
                previous = self.seen.states.get(node)
                if previous is not None:
                    lie = bus.implausible_change(previous, state)
                    if lie is not None:
                        raise InvalidMessage(*lie)
                self.seen.states[node] = state
            elif kind == bus.PRESENCE:
                up, _ = bus.decode_presence(payload)
                self.seen.presence[node] = up
                if up:
                    self.seen.births.append(node)
                    self._births_pending = True
            else:
                raise InvalidMessage("topic", f"a gateway does not read {kind}")
        except InvalidMessage as exc:
            self.seen.refused.append((topic.decode(errors="replace"), exc.field, exc.reason))
