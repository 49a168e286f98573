"""The node's own configuration (``node.json`` on its flash, written at commissioning).

It names the node and its cabinet, its broker credentials (its own: one account per node,
see edge/fieldbus/broker.py, which writes these files), its default level and timings.
Every field is checked; an error names it.
"""

import json

from edge.node.bus import check_id
from edge.node.errors import ConfigError, InvalidMessage

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated
    pass

FIRMWARE = "0.1.0"


class NodeConfig:
    """A node's settings.

    Attributes:
        cabinet: the cabinet's id (the topic prefix).
        node: this node's id, also its broker user name and MQTT client id.
        password: its broker password.
        broker: the broker's host name or address; ``port`` its port.
        tls: whether to connect with TLS (the board must afford ~40 KB of RAM for it).
        default_level: level when nothing better is known, 1..100 (never dark).
        fallback_s: how long the last command holds after the gateway's last heartbeat.
        report_s: seconds between periodic state reports (changes are sent at once).
        keepalive_s: MQTT keepalive; the node pings when idle for half of it.
        nominal_w: the lamp's rated power, for the fault checks.
    """

    __slots__ = (
        "broker",
        "cabinet",
        "default_level",
        "fallback_s",
        "keepalive_s",
        "node",
        "nominal_w",
        "password",
        "port",
        "report_s",
        "tls",
    )

    def __init__(
        self,
        cabinet: str,
        node: str,
        password: str,
        broker: str,
        port: int = 1883,
        tls: bool = False,
        default_level: int = 100,
        fallback_s: int = 300,
        report_s: int = 300,
        keepalive_s: int = 120,
        nominal_w: float = 60.0,
    ) -> None:
        try:
            self.cabinet = check_id("cabinet", cabinet)
            self.node = check_id("node", node)
        except InvalidMessage as exc:
            raise ConfigError(exc.field, exc.reason) from None
        self.password = _text("password", password, 1, 128)
        self.broker = _text("broker", broker, 1, 253)
        self.port = _int("port", port, 1, 65535)
        if type(tls) is not bool:
            raise ConfigError("tls", "must be true or false")
        self.tls = tls
        self.default_level = _int("default_level", default_level, 1, 100)
        self.fallback_s = _int("fallback_s", fallback_s, 10, 86400)
        self.report_s = _int("report_s", report_s, 5, 86400)
        self.keepalive_s = _int("keepalive_s", keepalive_s, 10, 65535)
        if type(nominal_w) is not int and type(nominal_w) is not float:
            raise ConfigError("nominal_w", "must be a number")
        if not 1 <= nominal_w <= 1000:
            raise ConfigError("nominal_w", "must be within 1..1000 W")
        self.nominal_w = float(nominal_w)

    def to_json(self) -> str:
        return json.dumps({k: getattr(self, k) for k in NodeConfig.__slots__})


def parse_config(text: str) -> NodeConfig:
    """A node configuration from its JSON text."""
    try:
        obj = json.loads(text)
    except ValueError:
        raise ConfigError("node.json", "not JSON") from None
    if not isinstance(obj, dict):
        raise ConfigError("node.json", "must be a JSON object")
    for key in obj:
        if key not in NodeConfig.__slots__:
            raise ConfigError(str(key), "unknown setting")
    for key in ("cabinet", "node", "password", "broker"):
        if key not in obj:
            raise ConfigError(key, "missing")
    return NodeConfig(**obj)


def _int(field: str, value: Any, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise ConfigError(field, "must be an integer within " + str(lo) + ".." + str(hi))
    return value


def _text(field: str, value: Any, lo: int, hi: int) -> str:
    if not isinstance(value, str) or not lo <= len(value) <= hi:
        raise ConfigError(field, "must be text of " + str(lo) + ".." + str(hi) + " characters")
    return value
