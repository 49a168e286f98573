"""The orchestrator's configuration (one TOML file) and its limits.

Example::

    [server]
    listen = "0.0.0.0:7443"          # mutual TLS: gateways and operators
    enroll_listen = "0.0.0.0:7444"   # server-authenticated TLS: enrollment with a token only
    crl_listen = "0.0.0.0:7480"      # optional: the CRL over plain HTTP (identity/crl_point.py)
    dns_names = ["orchestrator.example.org"]
    ip_addresses = []

    [store]
    url = "sqlite:///var/lib/ondijon/orchestrator.db"   # or postgresql+psycopg://...
    deadline_s = 15              # no answer from the store in this long: it is unreachable
    connect_timeout_s = 5
    statement_timeout_s = 10
    idle_in_transaction_timeout_s = 15

    [identity]
    ca_dir = "/var/lib/ondijon/ca"
    state_dir = "/var/lib/ondijon/orchestrator"        # server key and certificate
    gateway_certificate_days = 7
    token_ttl_hours = 72
    crl_urls = ["http://orchestrator.example.org:7480/crl"]   # named in every certificate

Every limit lives in :class:`Limits`, one documented dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from foundation.settings import ConfigError, Section, load_toml
from orchestrator.ingest.checks import TimeWindow
from orchestrator.store.connection import StoreSettings
from provisioning.ca import CAError, check_crl_urls


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
        keepalive_time_s: the server pings each connection after this long without a ping
            (HTTP/2 PING), to find cabinets gone silent behind a cellular or NAT timeout.
        keepalive_timeout_s: a ping not answered within this closes the connection and its
            streams; a silent cabinet is found within ``keepalive_time_s`` plus this.
        min_client_ping_interval_s: clients may ping this often and no more (gRPC counts
            faster pings as strikes and closes the connection with ``too_many_pings``).
        catch_up_s: every this long, each replica sends its gateways what a lost
            notification may have kept from them (pending commands, newer documents).
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
    keepalive_time_s: int = 20
    keepalive_timeout_s: int = 10
    min_client_ping_interval_s: int = 5
    catch_up_s: float = 30.0
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


_STORE_BOUNDS = (
    "connect_timeout_s",
    "statement_timeout_s",
    "idle_in_transaction_timeout_s",
    "deadline_s",
)


def _crl_urls(identity: Section) -> tuple[str, ...]:
    try:
        return check_crl_urls(identity.texts("crl_urls", []))
    except CAError as exc:
        raise ConfigError("identity.crl_urls", str(exc).split(": ", 1)[1]) from None


def _bound(store: Section, name: str) -> float:
    return store.number(name, getattr(StoreSettings(), name), minimum=0.1, maximum=3600)


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
    store: StoreSettings = field(default_factory=StoreSettings)
    # Where the CRL is published (named in certificates), and where to serve it, if here.
    crl_urls: tuple[str, ...] = ()
    crl_listen: str = ""

    @classmethod
    def from_mapping(cls, data: Section) -> OrchestratorConfig:
        data.unknown({"server", "store", "identity", "limits"})
        server = data.section("server")
        server.unknown({"listen", "enroll_listen", "dns_names", "ip_addresses", "crl_listen"})
        store = data.section("store")
        store.unknown({"url", *_STORE_BOUNDS})
        identity = data.section("identity")
        identity.unknown(
            {"ca_dir", "state_dir", "gateway_certificate_days", "token_ttl_hours", "crl_urls"}
        )
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
            crl_urls=_crl_urls(identity),
            crl_listen=server.address("crl_listen") if "crl_listen" in server.data else "",
            store=StoreSettings(
                connect_timeout_s=_bound(store, "connect_timeout_s"),
                statement_timeout_s=_bound(store, "statement_timeout_s"),
                idle_in_transaction_timeout_s=_bound(store, "idle_in_transaction_timeout_s"),
                deadline_s=_bound(store, "deadline_s"),
            ),
        )

    @classmethod
    def load(cls, path: Path) -> OrchestratorConfig:
        return cls.from_mapping(Section(load_toml(path), "", path.resolve().parent))
