"""The bus contract: topics, payloads, and every impossible value refused by name.

Runs on CPython and MicroPython (see portable.py).
"""

import json

from edge.node import bus
from edge.node.errors import InvalidMessage
from edge.node.program import Program
from tests.edge.node.portable import raises

T0 = 1774699200  # 2026-03-28 12:00 UTC


def _state(**changes):
    obj = {"l": 50, "m": "p", "p": 31.5, "e": 120, "f": [], "u": 3600, "n": 7, "s": 3, "w": 2}
    obj.update(changes)
    return obj


def _refused_field(kind, payload):
    decode = {
        "state": bus.decode_state,
        "cmd": bus.decode_command,
        "program": bus.decode_program,
        "heartbeat": bus.decode_heartbeat,
        "presence": bus.decode_presence,
    }[kind]
    if not isinstance(payload, (bytes, bytearray)):
        payload = json.dumps(payload).encode()
    return raises(InvalidMessage, decode, payload).field


def test_topics_round_trip():
    for kind in bus.NODE_KINDS:
        topic = bus.node_topic("cab-01", "n-0042", kind)
        assert topic == "ondijon/v1/cab-01/node/n-0042/" + kind
        assert bus.parse_topic(topic) == ("cab-01", "n-0042", kind)
        assert bus.parse_topic(topic.encode()) == ("cab-01", "n-0042", kind)
    assert bus.gateway_topic("cab-01") == "ondijon/v1/cab-01/gateway"
    assert bus.parse_topic(b"ondijon/v1/cab-01/gateway") == ("cab-01", None, "gateway")


def test_bad_ids_and_topics_are_refused():
    for bad in ("", "N-1", "n/1", "n+1", "n#", "a" * 33, "n 1", "é"):
        assert raises(InvalidMessage, bus.node_topic, "cab", bad, "state").field == "node"
    for topic in (
        "ondijon/v2/cab/node/n-1/state",
        "ondijon/v1/cab/node/n-1/state/x",
        "ondijon/v1/cab/node/n-1/firmware",
        "ondijon/v1/cab/lamp/n-1/state",
        "ondijon/v1/cab",
        b"ondijon/v1/cab/node/\xff/state",
    ):
        assert raises(InvalidMessage, bus.parse_topic, topic).field.startswith("topic")


def test_state_round_trips_compactly():
    state = bus.NodeState(100, "c", 60.49, 12345, ["lamp"], 86400, 1774699200, 17, 3)
    payload = bus.encode_state(state)
    assert len(payload) < 110
    back = bus.decode_state(payload)
    assert back == bus.NodeState(100, "c", 60.5, 12345, ("lamp",), 86400, 1774699200, 17, 3)


def test_state_keys_unknown_to_this_version_are_ignored():
    assert bus.decode_state(json.dumps(_state(z=1, zz=[1])).encode()).level == 50


def test_impossible_state_values_are_refused_by_name():
    cases = [
        ("state.l", {"l": 101}),
        ("state.l", {"l": -1}),
        ("state.l", {"l": 50.5}),
        ("state.l", {"l": True}),
        ("state.l", {"l": "50"}),
        ("state.l", {"l": None}),
        ("state.m", {"m": "x"}),
        ("state.p", {"p": -0.1}),
        ("state.p", {"p": 1e9}),
        ("state.p", {"p": "1"}),
        ("state.e", {"e": -5}),
        ("state.e", {"e": 10**12}),
        ("state.f[0]", {"f": ["fire"]}),
        ("state.f[1]", {"f": ["lamp", "lamp"]}),
        ("state.f", {"f": "lamp"}),
        ("state.u", {"u": -1}),
        ("state.n", {"n": 2**31}),
        ("state.s", {"s": -3}),
        ("state.w", {"w": 1.5}),
    ]
    for field, change in cases:
        assert _refused_field("state", _state(**change)) == field, (field, change)
    for key in ("l", "m", "p", "e", "f", "u", "n", "s", "w"):
        obj = _state()
        del obj[key]
        assert _refused_field("state", obj) == "state." + key


def test_malformed_payloads_are_refused():
    assert _refused_field("state", b"\xff\xfe") == "state"
    assert _refused_field("state", b'{"l": 5') == "state"
    assert _refused_field("state", b"[1, 2]") == "state"
    assert _refused_field("state", b"NaN") == "state"
    assert _refused_field("state", b" " * 1025) == "state"
    assert raises(InvalidMessage, bus.decode_state, "text").field == "state"


def test_a_state_that_would_be_refused_is_not_encoded():
    state = bus.NodeState(150, "c", 10.0, 0, [], 0, 0, 0, 0)
    assert raises(InvalidMessage, bus.encode_state, state).field == "state.l"


def test_commands_and_heartbeats():
    assert bus.decode_command(bus.encode_command(0, 9)) == (0, 9)
    assert _refused_field("cmd", {"l": 101, "s": 1}) == "cmd.l"
    assert _refused_field("cmd", {"l": 10, "s": -1}) == "cmd.s"
    assert _refused_field("cmd", {"l": 10}) == "cmd.s"
    assert bus.decode_heartbeat(bus.encode_heartbeat(T0)) == T0
    assert _refused_field("heartbeat", {"t": 946684800}) == "heartbeat.t"
    assert _refused_field("heartbeat", {"t": 1e10}) == "heartbeat.t"


def test_presence_birth_and_will():
    assert bus.decode_presence(bus.encode_presence(True, "0.1.0")) == (True, "0.1.0")
    assert bus.decode_presence(bus.encode_presence(False)) == (False, "")
    assert _refused_field("presence", {"up": 2}) == "presence.up"
    assert _refused_field("presence", {"up": 1, "fw": "\x1b[31m"}) == "presence.fw"


def test_programs_round_trip_and_bad_ones_are_refused_by_name():
    program = Program(5, T0, 3 * 86400, [0, 3600, 40000], [0, 100, 50])
    back = bus.decode_program(bus.encode_program(program))
    assert back.same_as(program)

    def prog(**changes):
        obj = {"n": 5, "t0": T0, "e": 86400, "p": [[0, 0], [3600, 100]]}
        obj.update(changes)
        return obj

    cases = [
        ("program.n", {"n": 0}),
        ("program.t0", {"t0": 1000}),
        ("program.e", {"e": 15 * 86400}),
        ("program.e", {"e": 0}),
        ("program.p", {"p": []}),
        ("program.p", {"p": [[i, 1] for i in range(97)]}),
        ("program.p[0][0]", {"p": [[10, 0]]}),
        ("program.p[1][0]", {"p": [[0, 0], [0, 100]]}),
        ("program.p[1][0]", {"p": [[0, 0], [86400, 100]]}),
        ("program.p[1][1]", {"p": [[0, 0], [60, 101]]}),
        ("program.p[1]", {"p": [[0, 0], [60]]}),
        ("program.p[0][1]", {"p": [[0, "on"]]}),
    ]
    for field, change in cases:
        assert _refused_field("program", prog(**change)) == field, (field, change)


def test_implausible_changes_between_two_reports():
    before = bus.NodeState(50, "c", 30.0, 100, [], 3600, 1, 1, 4)
    later = bus.NodeState(50, "c", 30.0, 130, [], 7200, 1, 1, 4)
    rebooted = bus.NodeState(50, "c", 30.0, 0, [], 5, 1, 1, 4)
    assert bus.implausible_change(before, later) is None
    assert bus.implausible_change(before, rebooted) is None
    energy_down = bus.NodeState(50, "c", 30.0, 90, [], 7200, 1, 1, 4)
    assert bus.implausible_change(before, energy_down)[0] == "state.e"
    writes_down = bus.NodeState(50, "c", 30.0, 130, [], 7200, 1, 1, 3)
    assert bus.implausible_change(before, writes_down)[0] == "state.w"
