"""A node that lies, on a real broker: what the broker lets through (its own topics)
reaches the gateway recognisably invalid, named by field, and the node's last valid
state stands; what it may not publish never arrives."""

from __future__ import annotations

import json
import time

import pytest

from edge.fieldbus.host_umqtt import HostClient
from edge.node import bus
from tests.edge.fieldbus.conftest import Cabinet

pytestmark = [pytest.mark.integration, pytest.mark.mqtt]

GOOD = {"l": 40, "m": "c", "p": 24.5, "e": 900, "f": [], "u": 7200, "n": 0, "s": 1, "w": 0}


def _lie(**changes: object) -> bytes:
    obj = dict(GOOD)
    obj.update(changes)
    return json.dumps(obj).encode()


def test_a_lying_node_is_refused_by_field_and_its_last_valid_state_stands(
    cabinet: Cabinet,
) -> None:
    gateway = cabinet.gateway()
    liar = HostClient("n-0003", "127.0.0.1", cabinet.port, "n-0003", cabinet.password["n-0003"])
    liar.connect(timeout=5)
    own = b"ondijon/v1/cab-01/node/n-0003/"
    liar.publish(own + b"state", _lie())
    lies = [
        (b"state", _lie(l=250), "state.l"),
        (b"state", _lie(p=-40.0), "state.p"),
        (b"state", _lie(f=["on-fire"]), "state.f[0]"),
        (b"state", _lie(m="z"), "state.m"),
        (b"state", _lie(e=100, u=7300), "state.e"),  # energy down while it ran on
        (b"state", b"\x00\x01garbage", "state"),
        (b"state", b'{"l": 40', "state"),
        (b"presence", b'{"up": "yes"}', "presence.up"),
    ]
    for kind, payload, _ in lies:
        liar.publish(own + kind, payload)
    liar.publish(b"ondijon/v1/cab-01/node/n-0004/state", _lie(l=0))  # as another: ACL
    deadline = time.monotonic() + 5
    while len(gateway.seen.refused) < len(lies) and time.monotonic() < deadline:
        gateway.poll()
        time.sleep(0.01)
    gateway.poll()
    assert [f for _, f, _ in gateway.seen.refused] == [f for _, _, f in lies]
    assert all(t.startswith("ondijon/v1/cab-01/node/n-0003/") for t, _, _ in gateway.seen.refused)
    assert gateway.seen.states["n-0003"] == bus.decode_state(_lie())
    assert "n-0004" not in gateway.seen.states
