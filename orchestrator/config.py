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

    [console]
    listen = "0.0.0.0:7445"      # the web console, HTTPS with the server certificate; "" = off
    session_minutes = 480        # a console session ends this long after sign-in
    sign_in_per_minute = 5       # sign-in attempts per account and per address
    tiles_url = ""               # optional map tiles, e.g. "https://tiles.example.org/{z}/{x}/{y}.png"

    [identity]
    ca_dir = "/var/lib/ondijon/ca"
    state_dir = "/var/lib/ondijon/orchestrator"        # server key and certificate
    gateway_certificate_days = 7
    token_ttl_hours = 72
    crl_urls = ["http://orchestrator.example.org:7480/crl"]   # named in every certificate

    [public]                     # open data and citizens' reports (orchestrator.public)
    listen = "0.0.0.0:7446"      # HTTPS, no login; "" = off
    cert_file = ""               # a public CA's certificate for re-users; "" = the server's
    key_file = ""
    export_dir = "/var/lib/ondijon/opendata"   # the daily export (OUT/current); "" = none
    export_at = "03:30"          # local time (Europe/Paris) of the daily export
    licence = "etalab-2.0"       # or "odbl"
    [observe]
    listen = "0.0.0.0:9464"      # optional: /metrics, /livez, /readyz over plain HTTP

    [log]
    level = "info"               # debug | info | warning | error
    format = "text"              # or "json": one object per line

Any key can be set from the environment instead (containers):
``ONDIJON_ORCHESTRATOR__STORE__URL=postgresql+psycopg://…`` sets ``[store] url``
(:func:`foundation.settings.apply_environment`).

Every limit lives in :class:`Limits`, one documented dataclass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import msgspec

from foundation.logs import LogSettings
from foundation.settings import (
    ConfigError,
    Settings,
    apply_environment,
    check_address,
    convert,
    load_toml,
)
from orchestrator.store.connection import StoreSettings
from provisioning.ca import CAError, check_crl_urls


class Limits(Settings, frozen=True):
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

    max_message_bytes: Annotated[int, msgspec.Meta(ge=1)] = 4 * 1024 * 1024
    max_pending_requests: Annotated[int, msgspec.Meta(ge=1)] = 20_000
    max_pending_requests_hard: Annotated[int, msgspec.Meta(ge=1)] = 40_000
    hello_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    event_window: Annotated[int, msgspec.Meta(ge=1)] = 1000
    max_batch_devices: Annotated[int, msgspec.Meta(ge=1)] = 2000
    max_batch_events: Annotated[int, msgspec.Meta(ge=1)] = 1000
    keepalive_time_s: Annotated[int, msgspec.Meta(ge=1)] = 20
    keepalive_timeout_s: Annotated[int, msgspec.Meta(ge=1)] = 10
    min_client_ping_interval_s: Annotated[int, msgspec.Meta(ge=1)] = 5
    catch_up_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    handshake_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    max_clock_ahead_s: Annotated[float, msgspec.Meta(ge=0)] = 7 * 86400.0
    max_clock_behind_days: Annotated[float, msgspec.Meta(ge=0)] = 3653.0


Seconds = Annotated[float, msgspec.Meta(ge=0.1, le=3600)]
_STORE = StoreSettings()


class Server(Settings, frozen=True):
    listen: str = "127.0.0.1:7443"
    enroll_listen: str = "127.0.0.1:7444"
    dns_names: list[str] = msgspec.field(default_factory=lambda: ["localhost"])
    ip_addresses: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1"])
    crl_listen: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("listen", "enroll_listen"):
            check_address(name, getattr(self, name))
        if self.crl_listen:
            check_address("crl_listen", self.crl_listen)


class Store(Settings, frozen=True):
    url: str = "sqlite:///orchestrator.db"
    connect_timeout_s: Seconds = _STORE.connect_timeout_s
    statement_timeout_s: Seconds = _STORE.statement_timeout_s
    idle_in_transaction_timeout_s: Seconds = _STORE.idle_in_transaction_timeout_s
    deadline_s: Seconds = _STORE.deadline_s

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.url.startswith(("sqlite", "postgresql")):
            raise ConfigError("url", "must be a sqlite:/// or postgresql+psycopg:// URL")


class Console(Settings, frozen=True):
    """The web console (:mod:`orchestrator.console`): on by default, off with ``listen = ""``."""

    listen: str = "127.0.0.1:7445"
    session_minutes: Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 60)] = 480
    sign_in_per_minute: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    tiles_url: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        host, sep, port = self.listen.rpartition(":")
        if self.listen and (not sep or not host or not port.isdigit() or int(port) > 65535):
            # Port 0 is allowed: the system picks one, and `serve` prints it.
            raise ConfigError("listen", f"{self.listen!r} is not host:port")
        if self.tiles_url and not self.tiles_url.startswith(("https://", "http://")):
            raise ConfigError("tiles_url", "must be an http(s) URL template with {z}/{x}/{y}")


class Identity(Settings, frozen=True):
    ca_dir: str = "ca"
    state_dir: str = "orchestrator"
    gateway_certificate_days: Annotated[int, msgspec.Meta(ge=1, le=397)] = 7
    token_ttl_hours: Annotated[int, msgspec.Meta(ge=1, le=24 * 30)] = 72
    crl_urls: list[str] = []

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            check_crl_urls(self.crl_urls)
        except CAError as exc:
            raise ConfigError("crl_urls", exc.reason) from None


class Public(Settings, frozen=True):
    """The public side (:mod:`orchestrator.public`, docs/opendata.md): open data and
    citizens' reports over HTTPS with no login. On by default from a TOML file; off with
    ``listen = ""``."""

    listen: str = "127.0.0.1:7446"
    cert_file: str = ""
    key_file: str = ""
    # Files are rebuilt from the store this often and served from memory in between.
    refresh_s: Annotated[int, msgspec.Meta(ge=5, le=86_400)] = 300
    export_dir: str = ""
    export_at: str = "03:30"
    publisher: str = "Dijon métropole"
    contact_url: str = "https://www.metropole-dijon.fr/contact"
    contact_email: str = ""
    licence: str = "etalab-2.0"
    base_url: str = ""
    # Per client address: requests of any kind, and reports.
    requests_per_s: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 20.0
    request_burst: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 100
    reports_per_hour: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    report_burst: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    # Proof of work asked of a reporter: leading zero bits of SHA-256 (18: ~1 s on a phone).
    challenge_bits: Annotated[int, msgspec.Meta(ge=1, le=28)] = 18
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 90
    # The HMAC key signing challenges; replicas must share it. "" = state_dir/report.key.
    report_key_file: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        host, sep, port = self.listen.rpartition(":")
        if self.listen and (not sep or not host or not port.isdigit() or int(port) > 65535):
            # Port 0 is allowed: the system picks one, and `serve` prints it.
            raise ConfigError("listen", f"{self.listen!r} is not host:port")
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("cert_file", "cert_file and key_file go together")
        if self.licence not in ("etalab-2.0", "odbl"):
            raise ConfigError("licence", 'must be "etalab-2.0" (Licence Ouverte 2.0) or "odbl"')
        hour, sep, minute = self.export_at.partition(":")
        if not (
            sep and hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60
        ):
            raise ConfigError("export_at", f"{self.export_at!r} is not HH:MM")
        if self.base_url and not self.base_url.startswith(("https://", "http://")):
            raise ConfigError("base_url", "must be an http(s) URL")


class Observe(Settings, frozen=True):
    listen: str = ""  # host:port of /metrics, /livez and /readyz (none when empty)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.listen:
            check_address("listen", self.listen)


class OrchestratorFile(Settings, frozen=True):
    """The orchestrator's TOML file."""

    server: Server = Server()
    store: Store = Store()
    identity: Identity = Identity()
    limits: Limits = Limits()
    public: Public = Public()
    console: Console = Console()
    observe: Observe = Observe()
    log: LogSettings = LogSettings()


# Environment variables that set a key of the orchestrator's file: ONDIJON_ORCHESTRATOR__
# then the table and key in capitals, separated by two underscores.
ENV_PREFIX = "ONDIJON_ORCHESTRATOR__"


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
    # The public side: off when built in code (tests), on by default from a TOML file.
    public: Public = field(default_factory=lambda: Public(listen=""))
    base_dir: Path = Path(".")
    # The web console: off when built in code (tests), on by default from a TOML file.
    console: Console = field(default_factory=lambda: Console(listen=""))
    observe_listen: str = ""
    log: LogSettings = field(default_factory=LogSettings)

    @classmethod
    def from_mapping(cls, data: object, base_dir: Path) -> OrchestratorConfig:
        """The configuration a parsed TOML file gives; paths relative to ``base_dir``."""
        file = convert(data, OrchestratorFile)
        server, store, identity = file.server, file.store, file.identity
        url = store.url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            # Relative SQLite paths are relative to the configuration file, like other paths.
            url = "sqlite:///" + str(base_dir / url.removeprefix("sqlite:///"))
        return cls(
            listen=server.listen,
            enroll_listen=server.enroll_listen,
            dns_names=tuple(server.dns_names),
            ip_addresses=tuple(server.ip_addresses),
            store_url=url,
            ca_dir=base_dir / identity.ca_dir,
            state_dir=base_dir / identity.state_dir,
            gateway_certificate_days=identity.gateway_certificate_days,
            token_ttl_hours=identity.token_ttl_hours,
            limits=file.limits,
            crl_urls=tuple(identity.crl_urls),
            crl_listen=server.crl_listen,
            public=file.public,
            base_dir=base_dir,
            console=file.console,
            observe_listen=file.observe.listen,
            log=file.log,
            store=StoreSettings(
                connect_timeout_s=store.connect_timeout_s,
                statement_timeout_s=store.statement_timeout_s,
                idle_in_transaction_timeout_s=store.idle_in_transaction_timeout_s,
                deadline_s=store.deadline_s,
            ),
        )

    @classmethod
    def load(cls, path: Path, environ: Mapping[str, str] | None = None) -> OrchestratorConfig:
        """The file at ``path``, with the keys ``environ`` (``os.environ``) sets over it."""
        data = apply_environment(
            load_toml(path),
            OrchestratorFile,
            ENV_PREFIX,
            os.environ if environ is None else environ,
        )
        return cls.from_mapping(data, path.resolve().parent)
