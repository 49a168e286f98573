"""The ``[fieldbus]`` table of the agent configuration, and the gateway account's password.

Apart from :mod:`edge.fieldbus.gateway` so that the configuration of every cabinet can be
read without loading the field bus itself (aiomqtt, the broker's provisioning, the node
programs): most cabinets have none.
"""

from __future__ import annotations

import json
from pathlib import Path

from edge.node import bus
from edge.node.errors import InvalidMessage
from foundation.settings import ConfigError, Settings

# Days of switch points each node carries by default (edge.fieldbus.program).
DEFAULT_DAYS = 3


class FieldbusConfig(Settings, frozen=True):
    """The ``[fieldbus]`` table of the agent configuration.

    Attributes:
        cabinet: the cabinet id on the bus (the topic prefix).
        host, port: the cabinet broker's plain listener.
        credentials: the ``credentials.json`` :func:`edge.fieldbus.broker.provision` wrote
            (the gateway's password is read from it), relative to the configuration file.
        program_days: how many days of switch points each node carries (1..14).
    """

    cabinet: str
    credentials: str
    host: str = "127.0.0.1"
    port: int = 1883
    program_days: int = DEFAULT_DAYS

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            bus.check_id("cabinet", self.cabinet)
        except InvalidMessage as exc:
            raise ConfigError("cabinet", exc.reason) from None
        if not 0 < self.port < 65536:
            raise ConfigError("port", "must be 1..65535")
        if not 1 <= self.program_days <= 14:
            raise ConfigError("program_days", "must be 1..14")


def gateway_password(credentials: Path) -> str:
    """The gateway account's password from a provisioned ``credentials.json``."""
    try:
        data = json.loads(credentials.read_text())
        password = data["gateway"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError("fieldbus.credentials", f"unreadable: {exc}") from None
    if not isinstance(password, str) or not password:
        raise ConfigError("fieldbus.credentials", "no gateway password in it")
    return password
