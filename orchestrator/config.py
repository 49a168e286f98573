"""The orchestrator's configuration (one TOML file) and its limits.

Example::

    [server]
    listen = "0.0.0.0:7443"          # mutual TLS: gateways and operators
    enroll_listen = "0.0.0.0:7444"   # server-authenticated TLS: enrollment with a token only
    dns_names = ["orchestrator.example.org"]
    ip_addresses = []

    [store]
    url = "sqlite:///var/lib/ondijon/orchestrator.db"   # or postgresql+psycopg://...

    [identity]
    ca_dir = "/var/lib/ondijon/ca"
    state_dir = "/var/lib/ondijon/orchestrator"        # server key and certificate
    gateway_certificate_days = 7
    token_ttl_hours = 72

Every limit lives in :class:`Limits`, one documented dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ondijon.config import ConfigError, Section, load_toml
from orchestrator.wire import TimeWindow


@dataclass(frozen=True)
class Limits:
    """Limits that protect the orchestrator (and the city) from a crowd or a bad peer.

    Attributes:
        max_message_bytes: largest message accepted on any RPC.
        max_pending_requests: gRPC's soft limit of calls waiting for a handler; beyond it
            new calls are refused at random. gRPC's default (1000 soft / 3000 hard) drops
            streams when a whole city reconnects at once.
        max_pending_requests_hard: gRPC's hard limit of waiting calls.
        hello_timeout_s: a stream that says nothing for this long after opening is closed.
        event_window: events a gateway may have in flight unacknowledged (flow control).
        max_batch_devices: device states in one StateReport.
        max_batch_events: events in one EventBatch.
        keepalive_time_s: HTTP/2 pings to spot dead cabinets behind NAT.
        handshake_timeout_s: a connection must finish its TLS handshake (and HTTP/2
            preface) within this, or it is closed; gRPC's default is two minutes, long
            enough for a crowd of unfinished handshakes to hold the ports.
        max_clock_ahead_s: an instant a gateway reports (an event's time, a device
            state's) may be at most this far ahead of the orchestrator's clock; beyond,
            the message is refused naming the field (a gateway whose clock is wrong).
        max_clock_behind_days: ... and at most this far behind (an event kept in an
            outbox for a long time offline is still taken).
    """

    max_message_bytes: int = 4 * 1024 * 1024
    max_pending_requests: int = 20_000
    max_pending_requests_hard: int = 40_000
    hello_timeout_s: float = 30.0
    event_window: int = 1000
    max_batch_devices: int = 2000
    max_batch_events: int = 1000
    keepalive_time_s: int = 60
    handshake_timeout_s: float = 10.0
    max_clock_ahead_s: float = 7 * 86400.0
    max_clock_behind_days: float = 3653.0

    def time_window(self, now: datetime) -> TimeWindow:
        """The instants a gateway may report at ``now`` (the orchestrator's clock)."""
        return TimeWindow.around(
            now,
            behind=timedelta(days=self.max_clock_behind_days),
            ahead=timedelta(seconds=self.max_clock_ahead_s),
        )


@dataclass(frozen=True)
class OrchestratorConfig:
    listen: str
    enroll_listen: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    store_url: str
    ca_dir: Path
    state_dir: Path
    gateway_certificate_days: int
    token_ttl_hours: int
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_mapping(cls, data: Section) -> OrchestratorConfig:
        data.unknown({"server", "store", "identity", "limits"})
        server = data.section("server")
        server.unknown({"listen", "enroll_listen", "dns_names", "ip_addresses"})
        store = data.section("store")
        store.unknown({"url"})
        identity = data.section("identity")
        identity.unknown({"ca_dir", "state_dir", "gateway_certificate_days", "token_ttl_hours"})
        limits_section = data.section("limits")
        defaults = Limits()
        known = set(Limits.__dataclass_fields__)
        limits_section.unknown(known)
        values: dict[str, Any] = {
            name: (
                limits_section.number(name, getattr(defaults, name), minimum=0)
                if isinstance(getattr(defaults, name), float)
                else limits_section.integer(name, getattr(defaults, name), minimum=1)
            )
            for name in known
        }
        limits = Limits(**values)
        url = store.text("url", "sqlite:///orchestrator.db")
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            # Relative SQLite paths are relative to the configuration file, like other paths.
            url = "sqlite:///" + str(data.base_dir / url.removeprefix("sqlite:///"))
        if not url.startswith(("sqlite", "postgresql")):
            raise ConfigError("store.url", "must be a sqlite:/// or postgresql+psycopg:// URL")
        return cls(
            listen=server.address("listen", "127.0.0.1:7443"),
            enroll_listen=server.address("enroll_listen", "127.0.0.1:7444"),
            dns_names=tuple(server.texts("dns_names", ["localhost"])),
            ip_addresses=tuple(server.texts("ip_addresses", ["127.0.0.1"])),
            store_url=url,
            ca_dir=identity.path("ca_dir", "ca"),
            state_dir=identity.path("state_dir", "orchestrator"),
            gateway_certificate_days=identity.integer(
                "gateway_certificate_days", 7, minimum=1, maximum=397
            ),
            token_ttl_hours=identity.integer("token_ttl_hours", 72, minimum=1, maximum=24 * 30),
            limits=limits,
        )

    @classmethod
    def load(cls, path: Path) -> OrchestratorConfig:
        return cls.from_mapping(Section(load_toml(path), "", path.resolve().parent))
