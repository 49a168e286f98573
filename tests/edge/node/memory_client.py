"""An in-memory stand-in for umqtt.simple's client, for the node's logic tests on both
interpreters (the real client against a real Mosquitto is tested in tests/edge/fieldbus).

It records what the node publishes and subscribes to, delivers what a test queues as the
broker would (a retained message again on every subscription), and fails on demand:
``reachable = False`` refuses connections, ``fail_next`` breaks the session.
"""

from edge.node.config import NodeConfig
from edge.node.flash import Flash
from edge.node.link import Link
from edge.node.ticks import ManualTicks, ticks_diff


class MemoryClient:
    def __init__(self):
        self.reachable = True
        self.fail_next = False
        self.connected = False
        self.connects = 0
        self.callback = None
        self.will = None
        self.subscriptions = []
        self.published = []  # (topic, payload, retain)
        self.pings = 0
        self.retained = {}  # topic -> payload, delivered on subscription
        self.inbox = []
        self.sock = None

    # -- the broker's side, for tests ---------------------------------------------------

    def send(self, topic, payload, retain=False):
        if retain:
            self.retained[topic] = payload
        if self.connected and topic in self.subscriptions:
            self.inbox.append((topic, payload))

    def published_on(self, suffix):
        return [p for t, p, _ in self.published if t.endswith(suffix)]

    # -- umqtt.simple's methods ---------------------------------------------------------

    def set_callback(self, f):
        self.callback = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.will = (topic, msg, retain)

    def connect(self, clean_session=True, timeout=None):
        self.connects += 1
        if not self.reachable:
            raise OSError(111)
        self.connected = True
        self.subscriptions = []
        return 0

    def subscribe(self, topic, qos=0):
        self._check()
        self.subscriptions.append(topic)
        if topic in self.retained:
            self.callback(topic, self.retained[topic])

    def publish(self, topic, msg, retain=False, qos=0):
        self._check()
        self.published.append((topic, msg, retain))

    def ping(self):
        self._check()
        self.pings += 1

    def check_msg(self):
        self._check()
        if not self.inbox:
            return None
        topic, payload = self.inbox.pop(0)
        self.callback(topic, payload)
        return 0x30

    def disconnect(self):
        self.connected = False

    def _check(self):
        if self.fail_next or not self.connected:
            self.fail_next = False
            self.connected = False
            raise OSError(104)


def node_config(**changes):
    settings = {
        "cabinet": "cab-01",
        "node": "n-0001",
        "password": "secret",
        "broker": "10.0.0.1",
        "default_level": 80,
        "fallback_s": 300,
        "report_s": 300,
        "keepalive_s": 120,
        "nominal_w": 60.0,
    }
    settings.update(changes)
    return NodeConfig(**settings)


class Lamp:
    def __init__(self):
        self.level = None
        self.failed = False

    def set_level(self, level):
        self.level = level

    def power_w(self):
        return 0.0 if self.failed or not self.level else 0.5 + 0.6 * self.level


def started_node(directory, ticks=None, client=None, rtc=None, **changes):
    """A node booted on ``directory`` with an in-memory client, polled once."""
    ticks = ticks or ManualTicks()
    link = Link(
        node_config(**changes),
        client or MemoryClient(),
        Lamp(),
        Flash(directory),
        ticks.ms,
        ticks_diff,
        rtc=rtc,
        rand=lambda: 0.5,
    )
    link.poll()
    return link
