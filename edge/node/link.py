"""The node's link to its cabinet: one MQTT session, driven by :meth:`Link.poll`.

The lamp never waits on the network. :meth:`Link.poll` never blocks for long: it
(re)connects when due, reads what the broker has, decides the level
(:mod:`edge.node.luminaire`), drives the lamp, meters it and reports. The board calls it
every few tens of milliseconds; the simulator calls it when a socket is readable or a
timer is due.

The client is micropython-lib's ``umqtt.simple.MQTTClient`` (or anything with its
methods). Not ``umqtt.robust``: its ``reconnect()`` loops until the broker answers, which
would freeze the fallback timer and the program while the gateway is down. This module
reconnects itself, with exponential backoff and jitter so a cabinet's hundred nodes do
not stampede a broker that comes back. Any failure of a network call ends the session
(the broker's last will tells the gateway) and schedules the next attempt; the lamp goes
on deciding meanwhile.

Messages that break the contract are refused and counted (:attr:`Link.refused`); nothing
else changes. A program is stored to flash only when it differs from the one held, and one
older than it (a lower number) is refused.
"""

from edge.node import bus
from edge.node.config import FIRMWARE, NodeConfig
from edge.node.errors import InvalidMessage
from edge.node.flash import Flash
from edge.node.luminaire import Luminaire
from edge.node.meter import Meter

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated
    pass

BACKOFF_FIRST_MS = 1000
BACKOFF_MAX_MS = 60000
CONNECT_TIMEOUT_S = 5
MAX_MESSAGES_PER_POLL = 20


class Link:
    """One node's session with its cabinet's broker.

    Args:
        config: the node's settings.
        client: an MQTT client with umqtt.simple's methods, made with the node's id as
            client id, its credentials and ``config.keepalive_s``.
        lamp: the output: ``set_level(level)`` and ``power_w()``.
        flash: where the program is kept.
        ticks_ms: the tick counter (``time.ticks_ms`` on a board).
        ticks_diff: its difference (``time.ticks_diff`` on a board).
        rtc: the board's real-time clock, ``now()`` (epoch seconds or None) and
            ``set(epoch)``; None if the board has none worth keeping.
        rand: a uniform random number in [0, 1), for the reconnection jitter.
    """

    def __init__(
        self,
        config: NodeConfig,
        client: Any,
        lamp: Any,
        flash: Flash,
        ticks_ms: Any,
        ticks_diff: Any,
        rtc: Any = None,
        rand: Any = None,
    ) -> None:
        self.config = config
        self.client = client
        self.lamp = lamp
        self.flash = flash
        self._ticks = ticks_ms
        self._diff = ticks_diff
        self._rtc = rtc
        self._rand = rand
        self.luminaire = Luminaire(
            config.default_level, config.fallback_s * 1000, ticks_diff, ticks_ms(), flash.load()
        )
        self.flash_fault = flash.fault is not None
        self.meter = Meter(config.nominal_w)
        self.connected = False
        self.connections = 0
        self.refused = 0
        self.last_refusal: InvalidMessage | None = None
        self.level = -1
        self.mode = ""
        self._attempts = 0
        self._retry_in_ms = 0
        self._since_report_ms = 0
        self._since_sent_ms = 0
        self._reported: tuple[Any, ...] | None = None
        t = bus.node_topic
        self._state_topic = t(config.cabinet, config.node, bus.STATE).encode()
        self._presence_topic = t(config.cabinet, config.node, bus.PRESENCE).encode()
        self._cmd_topic = t(config.cabinet, config.node, bus.CMD).encode()
        self._program_topic = t(config.cabinet, config.node, bus.PROGRAM).encode()
        self._gateway_topic = bus.gateway_topic(config.cabinet).encode()
        self._apply(0)

    # -- the loop ---------------------------------------------------------------------

    def poll(self) -> None:
        """Do what is due now: connect, read, decide, drive, report."""
        elapsed = self.luminaire.advance(self._ticks())
        if not self.connected:
            self._retry_in_ms -= elapsed
            if self._retry_in_ms <= 0:
                self._connect()
        if self.connected:
            try:
                for _ in range(MAX_MESSAGES_PER_POLL):
                    if self.client.check_msg() is None:
                        break
            except Exception:  # any failure of the session ends it; the lamp goes on
                self._drop()
        self._apply(elapsed)

    def close(self) -> None:
        """Leave the bus cleanly: say so (the will is only for deaths), then disconnect."""
        if self.connected:
            try:
                self.client.publish(self._presence_topic, bus.encode_presence(False), True)
                self.client.disconnect()
            except Exception:  # leaving anyway; the broker's will covers a failed goodbye
                pass
        self.connected = False

    def state(self) -> bus.NodeState:
        """What the node would report now."""
        faults = list(self.meter.faults)
        if self.flash_fault:
            faults.append(bus.FAULT_FLASH)
        program = self.luminaire.program
        return bus.NodeState(
            level=self.level,
            mode=self.mode,
            power_w=self.meter.power_w,
            energy_wh=self.meter.energy_wh,
            faults=faults,
            uptime_s=self.luminaire.uptime_s,
            program=program.number if program is not None else 0,
            command=self.luminaire.command_seq,
            flash_writes=self.flash.writes,
        )

    # -- session ----------------------------------------------------------------------

    def _connect(self) -> None:
        client = self.client
        try:
            client.set_callback(self._on_message)
            client.set_last_will(self._presence_topic, bus.encode_presence(False), True)
            client.connect(timeout=CONNECT_TIMEOUT_S)
            client.subscribe(self._gateway_topic, 0)
            client.subscribe(self._cmd_topic, 1)
            client.subscribe(self._program_topic, 1)
            client.publish(self._presence_topic, bus.encode_presence(True, FIRMWARE), True)
        except Exception:  # refused, unreachable, timed out: try again later
            self._attempts += 1
            delay = min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS << min(self._attempts - 1, 10))
            jitter = self._rand() if self._rand is not None else 0.5
            self._retry_in_ms = int(delay * (0.5 + jitter / 2))
            self.connected = False
            return
        self.connected = True
        self.connections += 1
        self._attempts = 0
        self._reported = None  # the broker may have lost the retained state: report again

    def _drop(self) -> None:
        self.connected = False
        self._retry_in_ms = 0
        try:
            self.client.sock.close()
        except Exception:  # already closed or never opened
            pass

    def _on_message(self, topic: bytes, payload: bytes) -> None:
        try:
            self._handle(topic, payload)
        except InvalidMessage as exc:
            self.refused += 1
            self.last_refusal = exc

    def _handle(self, topic: bytes, payload: bytes) -> None:
        cabinet, node, kind = bus.parse_topic(topic)
        if cabinet != self.config.cabinet or node not in (None, self.config.node):
            raise InvalidMessage("topic", "not addressed to this node")
        lum = self.luminaire
        if kind == "gateway":
            epoch = bus.decode_heartbeat(payload)
            lum.heard_gateway(epoch, self._ticks())
            if self._rtc is not None:
                self._rtc.set(epoch)
        elif kind == bus.CMD:
            level, seq = bus.decode_command(payload)
            lum.command(level, seq)
        elif kind == bus.PROGRAM:
            self._take_program(bus.decode_program(payload))
        else:
            raise InvalidMessage("topic", "a node does not read " + kind)

    def _take_program(self, program: Any) -> None:
        held = self.luminaire.program
        if held is not None and not program.same_as(held) and program.number <= held.number:
            raise InvalidMessage("program.n", "not newer than the program held")
        try:
            self.flash.save(program)
            self.flash_fault = False
        except OSError:
            self.flash_fault = True  # run on it from RAM; the gateway sees the fault
        self.luminaire.program = program

    # -- output -----------------------------------------------------------------------

    def _apply(self, elapsed_ms: int) -> None:
        rtc_now = self._rtc.now() if self._rtc is not None else None
        level, mode = self.luminaire.decide(self._ticks(), rtc_now)
        if level != self.level:
            self.lamp.set_level(level)
            self.level = level
        self.mode = mode
        self.meter.measure(self.lamp.power_w(), elapsed_ms, level)
        if not self.connected:
            return
        self._since_report_ms += elapsed_ms
        self._since_sent_ms += elapsed_ms
        state = self.state()
        key = (state.level, state.mode, state.faults, state.program, state.command)
        try:
            if key != self._reported or self._since_report_ms >= self.config.report_s * 1000:
                self.client.publish(self._state_topic, bus.encode_state(state), True)
                self._reported = key
                self._since_report_ms = 0
                self._since_sent_ms = 0
            elif self._since_sent_ms >= self.config.keepalive_s * 500:
                self.client.ping()
                self._since_sent_ms = 0
        except Exception:  # the session failed; poll() reconnects
            self._drop()
