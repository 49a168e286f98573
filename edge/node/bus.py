"""The field-bus contract, version 1: topics and payloads, both directions.

One implementation used by the node (on MicroPython) and by the cabinet (on CPython), so
the two sides cannot drift. docs/fieldbus.md is the contract in prose; this module is its
executable form. Everything a decoder refuses raises :class:`~edge.node.errors.
InvalidMessage` naming the field and the reason; nothing is half-applied.

Topics (``<cabinet>`` and ``<node>``: 1..32 of ``a-z 0-9 -``)::

    ondijon/v1/<cabinet>/gateway                  gateway -> nodes  heartbeat  QoS 0
    ondijon/v1/<cabinet>/node/<node>/cmd          gateway -> node   command    QoS 1 retained
    ondijon/v1/<cabinet>/node/<node>/program      gateway -> node   program    QoS 1 retained
    ondijon/v1/<cabinet>/node/<node>/state        node -> gateway   state      QoS 0 retained
    ondijon/v1/<cabinet>/node/<node>/presence     node -> gateway   birth/will QoS 0 retained

Payloads are compact JSON objects with one-letter keys: MicroPython has ``json`` built in
(in C) on every port, and neither CBOR nor protobuf; see docs/fieldbus.md for the sizes.
Decoders ignore keys they do not know (fields are only ever added) and refuse any known
key with a wrong type or an impossible value.
"""

import json

from edge.node.errors import InvalidMessage
from edge.node.program import Program

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated
    pass

VERSION = 1
PREFIX = "ondijon/v1/"
CMD = "cmd"
PROGRAM = "program"
STATE = "state"
PRESENCE = "presence"
NODE_KINDS = (CMD, PROGRAM, STATE, PRESENCE)

MAX_PAYLOAD = 1024
MAX_ID = 32
# Epoch seconds the bus accepts: 2020-01-01 to 2100-01-01 UTC. A clock outside is wrong.
MIN_EPOCH = 1577836800
MAX_EPOCH = 4102444800
MAX_PROGRAM_SPAN_S = 14 * 86400
MAX_PROGRAM_POINTS = 96
MAX_POWER_W = 2000
MAX_ENERGY_WH = 10**9
MAX_COUNT = 2**31 - 1

# What the node is doing: the gateway's command, its own program, its default level.
MODE_COMMAND = "c"
MODE_PROGRAM = "p"
MODE_DEFAULT = "d"
MODES = (MODE_COMMAND, MODE_PROGRAM, MODE_DEFAULT)

# Faults a node reports: lamp out (no current while on), driver (current beyond the
# lamp's rating), flash (its stored program was unreadable at boot).
FAULT_LAMP = "lamp"
FAULT_DRIVER = "driver"
FAULT_FLASH = "flash"
FAULTS = (FAULT_LAMP, FAULT_DRIVER, FAULT_FLASH)

_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"


def check_id(field: str, value: Any) -> str:
    """Return ``value`` if it is a valid cabinet or node id, else raise."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID:
        raise InvalidMessage(field, "must be 1.." + str(MAX_ID) + " characters")
    for ch in value:
        if ch not in _ID_CHARS:
            raise InvalidMessage(field, "only a-z, 0-9 and '-' are allowed")
    return value


def gateway_topic(cabinet: str) -> str:
    """The cabinet-wide topic the gateway's heartbeats go to."""
    return PREFIX + check_id("cabinet", cabinet) + "/gateway"


def node_topic(cabinet: str, node: str, kind: str) -> str:
    """The topic of one node's ``kind`` of message."""
    if kind not in NODE_KINDS:
        raise InvalidMessage("kind", "unknown message kind")
    return PREFIX + check_id("cabinet", cabinet) + "/node/" + check_id("node", node) + "/" + kind


def parse_topic(topic: Any) -> tuple[str, str | None, str]:
    """Split a bus topic into (cabinet, node or None for the gateway topic, kind).

    Raises:
        InvalidMessage: not a v1 topic of this contract.
    """
    if isinstance(topic, (bytes, bytearray)):
        topic = _text("topic", topic)
    if not isinstance(topic, str) or not topic.startswith(PREFIX):
        raise InvalidMessage("topic", "not under " + PREFIX)
    parts = topic[len(PREFIX) :].split("/")
    if len(parts) == 2 and parts[1] == "gateway":
        return check_id("topic.cabinet", parts[0]), None, "gateway"
    if len(parts) == 4 and parts[1] == "node" and parts[3] in NODE_KINDS:
        return check_id("topic.cabinet", parts[0]), check_id("topic.node", parts[2]), parts[3]
    raise InvalidMessage("topic", "not a v1 field-bus topic")


# -- gateway -> nodes ---------------------------------------------------------------


def encode_heartbeat(epoch_s: int) -> bytes:
    """The gateway's heartbeat: it is alive, and the time is ``epoch_s`` (UTC)."""
    return _dumps({"t": _epoch("heartbeat.t", epoch_s)})


def decode_heartbeat(payload: Any) -> int:
    """The gateway's time in a heartbeat, epoch seconds."""
    obj = _load("heartbeat", payload)
    return _epoch("heartbeat.t", _get(obj, "heartbeat", "t"))


def encode_command(level: int, seq: int) -> bytes:
    """A command: light at ``level``; ``seq`` identifies it (echoed in the state)."""
    return _dumps({"l": _level("cmd.l", level), "s": _int("cmd.s", seq, 0, MAX_COUNT)})


def decode_command(payload: Any) -> tuple[int, int]:
    """(level, seq) of a command."""
    obj = _load("cmd", payload)
    return (
        _level("cmd.l", _get(obj, "cmd", "l")),
        _int("cmd.s", _get(obj, "cmd", "s"), 0, MAX_COUNT),
    )


def encode_program(program: Program) -> bytes:
    """A program: ``{"n": number, "t0": epoch, "e": span, "p": [[offset, level], ...]}``."""
    checked = _program(
        "program",
        program.number,
        program.t0,
        program.end,
        [[o, lv] for o, lv in zip(program.offsets, program.levels)],
    )
    return _dumps(
        {
            "n": checked.number,
            "t0": checked.t0,
            "e": checked.end,
            "p": [[o, lv] for o, lv in zip(checked.offsets, checked.levels)],
        }
    )


def decode_program(payload: Any) -> Program:
    """A node's program, every point checked."""
    obj = _load("program", payload)
    return _program(
        "program",
        _get(obj, "program", "n"),
        _get(obj, "program", "t0"),
        _get(obj, "program", "e"),
        _get(obj, "program", "p"),
    )


# -- node -> gateway ----------------------------------------------------------------


class NodeState:
    """What a node reports: its output, metering, faults and what it holds.

    Attributes:
        level: the level it drives now, 0..100.
        mode: :data:`MODE_COMMAND`, :data:`MODE_PROGRAM` or :data:`MODE_DEFAULT`.
        power_w: power drawn now, watts.
        energy_wh: energy since boot, watt-hours (restarts at 0 with ``uptime_s``).
        faults: active fault codes among :data:`FAULTS`.
        uptime_s: seconds since boot.
        program: number of the program it holds, 0 for none.
        command: ``seq`` of the last command it applied, 0 for none.
        flash_writes: writes to its flash, ever.
    """

    __slots__ = (
        "command",
        "energy_wh",
        "faults",
        "flash_writes",
        "level",
        "mode",
        "power_w",
        "program",
        "uptime_s",
    )

    def __init__(
        self,
        level: int,
        mode: str,
        power_w: float,
        energy_wh: int,
        faults: Any,
        uptime_s: int,
        program: int,
        command: int,
        flash_writes: int,
    ) -> None:
        self.level = level
        self.mode = mode
        self.power_w = power_w
        self.energy_wh = energy_wh
        self.faults = tuple(faults)
        self.uptime_s = uptime_s
        self.program = program
        self.command = command
        self.flash_writes = flash_writes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeState) and all(
            getattr(self, k) == getattr(other, k) for k in NodeState.__slots__
        )

    def __repr__(self) -> str:
        return (
            "NodeState(" + ", ".join(k + "=" + repr(getattr(self, k)) for k in self.__slots__) + ")"
        )


def encode_state(state: NodeState) -> bytes:
    """A node's state report (refuses to encode what the decoder would refuse)."""
    obj = {
        "l": state.level,
        "m": state.mode,
        "p": round(state.power_w, 1),
        "e": state.energy_wh,
        "f": list(state.faults),
        "u": state.uptime_s,
        "n": state.program,
        "s": state.command,
        "w": state.flash_writes,
    }
    _state_from(obj)
    return _dumps(obj)


def decode_state(payload: Any) -> NodeState:
    """A node's state report, every field checked."""
    return _state_from(_load("state", payload))


def encode_presence(up: bool, firmware: str = "") -> bytes:
    """Birth (``up``, with the firmware version) or last will (not ``up``)."""
    if up:
        return _dumps({"up": 1, "fw": _text_field("presence.fw", firmware, 32)})
    return _dumps({"up": 0})


def decode_presence(payload: Any) -> tuple[bool, str]:
    """(up, firmware version) of a presence message."""
    obj = _load("presence", payload)
    up = _int("presence.up", _get(obj, "presence", "up"), 0, 1) == 1
    fw = obj.get("fw", "")
    return up, _text_field("presence.fw", fw, 32)


def implausible_change(previous: NodeState, current: NodeState) -> tuple[str, str] | None:
    """(field, reason) if ``current`` cannot follow ``previous`` from the same node.

    Counters only go up while the node runs; a lower uptime means it rebooted, which
    resets energy but never its flash-write count.
    """
    if current.flash_writes < previous.flash_writes:
        return "state.w", "flash writes went down"
    if current.uptime_s >= previous.uptime_s and current.energy_wh < previous.energy_wh:
        return "state.e", "energy went down while the node kept running"
    return None


# -- helpers ------------------------------------------------------------------------


def _state_from(obj: Any) -> NodeState:
    faults = _get(obj, "state", "f")
    if not isinstance(faults, list) or len(faults) > len(FAULTS):
        raise InvalidMessage("state.f", "must be a list of fault codes")
    for i, code in enumerate(faults):
        if code not in FAULTS or faults.index(code) != i:
            raise InvalidMessage("state.f[" + str(i) + "]", "unknown or repeated fault code")
    mode = _get(obj, "state", "m")
    if mode not in MODES:
        raise InvalidMessage("state.m", "must be one of " + ", ".join(MODES))
    return NodeState(
        level=_level("state.l", _get(obj, "state", "l")),
        mode=mode,
        power_w=_number("state.p", _get(obj, "state", "p"), 0, MAX_POWER_W),
        energy_wh=_int("state.e", _get(obj, "state", "e"), 0, MAX_ENERGY_WH),
        faults=faults,
        uptime_s=_int("state.u", _get(obj, "state", "u"), 0, MAX_COUNT),
        program=_int("state.n", _get(obj, "state", "n"), 0, MAX_COUNT),
        command=_int("state.s", _get(obj, "state", "s"), 0, MAX_COUNT),
        flash_writes=_int("state.w", _get(obj, "state", "w"), 0, MAX_COUNT),
    )


def _program(field: str, number: Any, t0: Any, end: Any, points: Any) -> Program:
    number = _int(field + ".n", number, 1, MAX_COUNT)
    t0 = _epoch(field + ".t0", t0)
    end = _int(field + ".e", end, 1, MAX_PROGRAM_SPAN_S)
    if t0 + end > MAX_EPOCH:
        raise InvalidMessage(field + ".e", "ends after " + str(MAX_EPOCH))
    if not isinstance(points, list) or not 1 <= len(points) <= MAX_PROGRAM_POINTS:
        raise InvalidMessage(
            field + ".p", "must be a list of 1.." + str(MAX_PROGRAM_POINTS) + " points"
        )
    offsets: list[int] = []
    levels: list[int] = []
    for i, point in enumerate(points):
        where = field + ".p[" + str(i) + "]"
        if not isinstance(point, list) or len(point) != 2:
            raise InvalidMessage(where, "must be [offset, level]")
        offset = _int(where + "[0]", point[0], 0, end - 1)
        if i == 0 and offset != 0:
            raise InvalidMessage(where + "[0]", "the first point must be at offset 0")
        if offsets and offset <= offsets[-1]:
            raise InvalidMessage(where + "[0]", "offsets must increase")
        offsets.append(offset)
        levels.append(_level(where + "[1]", point[1]))
    return Program(number, t0, end, offsets, levels)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _text(field: str, data: Any) -> str:
    try:
        return bytes(data).decode()
    except UnicodeError:
        raise InvalidMessage(field, "not UTF-8") from None


def _load(field: str, payload: Any) -> Any:
    if not isinstance(payload, (bytes, bytearray)):
        raise InvalidMessage(field, "payload must be bytes")
    if len(payload) > MAX_PAYLOAD:
        raise InvalidMessage(field, "payload over " + str(MAX_PAYLOAD) + " bytes")
    try:
        obj = json.loads(_text(field, payload))
    except ValueError:
        raise InvalidMessage(field, "not JSON") from None
    if not isinstance(obj, dict):
        raise InvalidMessage(field, "must be a JSON object")
    return obj


def _get(obj: Any, field: str, key: str) -> Any:
    if key not in obj:
        raise InvalidMessage(field + "." + key, "missing")
    return obj[key]


def _int(field: str, value: Any, lo: int, hi: int) -> int:
    # type() and not isinstance(): on CPython a bool is an int, and true is no level.
    if type(value) is not int:
        raise InvalidMessage(field, "must be an integer")
    if not lo <= value <= hi:
        raise InvalidMessage(field, "must be within " + str(lo) + ".." + str(hi))
    return value


def _number(field: str, value: Any, lo: int, hi: int) -> float:
    if type(value) is not int and type(value) is not float:
        raise InvalidMessage(field, "must be a number")
    # NaN fails both comparisons; infinities fail one.
    if not (lo <= value <= hi):
        raise InvalidMessage(field, "must be within " + str(lo) + ".." + str(hi))
    return float(value)


def _level(field: str, value: Any) -> int:
    return _int(field, value, 0, 100)


def _epoch(field: str, value: Any) -> int:
    return _int(field, value, MIN_EPOCH, MAX_EPOCH)


def _text_field(field: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidMessage(field, "must be text of at most " + str(limit) + " characters")
    for ch in value:
        if not " " <= ch <= "~":
            raise InvalidMessage(field, "printable ASCII only")
    return value
