"""The agent's configuration: one TOML file per cabinet.

Example::

    [gateway]
    id = "dijon-centre-001"
    serial = "SN-4F2A-0001"
    state_dir = "/var/lib/ondijon/agent"    # key, certificate, state, outbox

    [orchestrator]
    address = "orchestrator.example.org:7443"         # mutual TLS
    enroll_address = "orchestrator.example.org:7444"  # enrollment (token)
    ca_file = "/etc/ondijon/ca.pem"   # the OnDijon root CA, installed with the agent

    [site]
    latitude = 47.3220
    longitude = 5.0415
    time_zone = "Europe/Paris"

    [clock]                 # optional: "system" (default) or a simulated clock for demos
    mode = "simulated"
    start = "2026-06-21T21:00:00+02:00"
    speed = 600
    # With the system clock: is its time trusted from boot (a battery-backed RTC), or only
    # once synchronised ("auto": systemd-timesyncd's flag or the kernel's adjtimex state)?
    rtc = false
    sync = "auto"           # or "systemd-timesyncd", "adjtimex"

    [firmware]              # optional: without it, firmware offers are refused
    release_keys = ["/etc/ondijon/release-2026.pub"]   # pinned release keys (PEM), 1 or more
    state_dir = "/var/lib/ondijon/firmware"             # slots, pointer, downloads
    health_deadline_s = 120     # a new release whose health check fails this long rolls back
    health_interval_s = 10
    stability_s = 600           # ...and it commits only after running this long, healthy
    signature_threshold = 1     # distinct pinned keys that must have signed a release

    [observe]               # optional: /metrics, /livez, /readyz on a local port
    listen = "127.0.0.1:9465"

    [log]
    level = "info"          # debug | info | warning | error
    format = "text"         # or "json"

    [[lamps]]               # equipment tables, see edge/equipment/*.py for their fields
    id = "lamp-001"
    backend = "gpio"
    relay_pin = 17
    pwm_pin = 18

Paths are relative to the configuration file. The whole file is one schema
(:mod:`foundation.settings`): every key known, every value typed, the equipment tables
included (each kind's ``config.py``), so a mistake anywhere is refused with its field
(``signals[0].poll_intervall_s: unknown setting``) before the agent touches a pin or a file.
Any key can be set from the environment instead (balena device variables, containers):
``ONDIJON_AGENT__GATEWAY__ID=dijon-centre-001`` sets ``[gateway] id``,
``ONDIJON_AGENT__LAMPS__0__PWM_PIN=13`` the first lamp's ``pwm_pin``
(:func:`foundation.settings.apply_environment`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec.structs import replace as replace_struct

from edge.equipment.bollard.config import BollardConfig
from edge.equipment.cabinet.config import CabinetConfig
from edge.equipment.lamp.config import LampConfig
from edge.equipment.signal.config import SignalConfig
from edge.fieldbus.config import FieldbusConfig
from edge.timekeeping import SYNC_SOURCES
from foundation.logs import LogSettings
from foundation.settings import (
    ConfigError,
    Settings,
    apply_environment,
    check_address,
    convert,
    load_toml,
)
from provisioning.identity import IdentityError, check_name


@dataclass(frozen=True)
class ClockConfig:
    """``[clock]``: which clock, and where trust in the system clock comes from.

    Attributes:
        mode: ``"system"`` or ``"simulated"`` (demos and the bench).
        start: a simulated clock's first instant.
        speed: a simulated clock's speed.
        origin: the real instant at which a simulated clock read ``start`` (default: when
            the agent starts), so that several processes share one simulated time.
        rtc: the board keeps time across power cuts (battery-backed real-time clock): the
            system clock is trusted from boot. Without one the agent waits for a
            synchronisation before letting the time switch the street.
        sync: where the synchronisation state is read (see :mod:`edge.timekeeping`).
    """

    mode: str = "system"
    start: datetime | None = None
    speed: float = 1.0
    rtc: bool = False
    sync: str = "auto"
    origin: datetime | None = None


@dataclass(frozen=True)
class FirmwareConfig:
    """Where the firmware slots live and which release keys the agent trusts."""

    release_keys: tuple[Path, ...]
    state_dir: Path
    health_deadline_s: float = 120.0
    health_interval_s: float = 10.0
    signature_threshold: int = 1
    stability_s: float = 600.0


@dataclass(frozen=True)
class AgentConfig:
    gateway_id: str
    serial: str
    state_dir: Path
    address: str
    enroll_address: str
    ca_file: Path
    server_name: str
    latitude: float
    longitude: float
    time_zone: str
    clock: ClockConfig
    report_interval_s: float
    outbox_max_bytes: int
    lamps: tuple[LampConfig, ...] = ()
    bollards: tuple[BollardConfig, ...] = ()
    signals: tuple[SignalConfig, ...] = ()
    cabinet: CabinetConfig | None = None
    fieldbus: FieldbusConfig | None = None
    source: Path | None = None
    firmware: FirmwareConfig | None = None
    # HTTP/2 keepalive of the link: a ping every keepalive_s, and the link is taken for dead
    # (and reopened) when one is not answered within keepalive_timeout_s. The orchestrator
    # allows a ping every 5 s at most (docs/integrators.md).
    keepalive_s: float = 15.0
    keepalive_timeout_s: float = 5.0
    observe_listen: str = ""
    log: LogSettings = field(default_factory=LogSettings)

    @property
    def identity_dir(self) -> Path:
        """``identity/current`` points at the directory holding the live key and certificate."""
        return self.state_dir / "identity" / "current"

    @property
    def key_file(self) -> Path:
        return self.identity_dir / "gateway.key"

    @property
    def cert_file(self) -> Path:
        return self.identity_dir / "gateway.pem"

    @classmethod
    def from_mapping(cls, data: object, base_dir: Path) -> AgentConfig:
        """The configuration a parsed TOML file gives; paths relative to ``base_dir``."""
        file = convert(data, AgentFile)
        bollards = tuple(
            BollardConfig.from_mapping(entry, f"bollards[{i}]")
            for i, entry in enumerate(file.bollards)
        )
        gateway, orchestrator, site, link = file.gateway, file.orchestrator, file.site, file.link

        def path(text: str) -> Path:
            return base_dir / text  # an absolute text stays absolute

        firmware = None
        if file.firmware is not None:
            firmware = FirmwareConfig(
                release_keys=tuple(path(k) for k in file.firmware.release_keys),
                state_dir=path(file.firmware.state_dir),
                health_deadline_s=file.firmware.health_deadline_s,
                health_interval_s=file.firmware.health_interval_s,
                signature_threshold=file.firmware.signature_threshold,
                stability_s=file.firmware.stability_s,
            )
        clock = file.clock
        return cls(
            gateway_id=gateway.id,
            serial=gateway.serial,
            state_dir=path(gateway.state_dir),
            address=orchestrator.address,
            enroll_address=orchestrator.enroll_address or orchestrator.address,
            ca_file=path(orchestrator.ca_file),
            server_name=orchestrator.server_name,
            latitude=site.latitude,
            longitude=site.longitude,
            time_zone=site.time_zone,
            clock=ClockConfig(
                clock.mode, clock.start, clock.speed, clock.rtc, clock.sync, clock.origin
            ),
            report_interval_s=link.report_interval_s,
            outbox_max_bytes=file.outbox.max_bytes,
            lamps=tuple(file.lamps),
            bollards=bollards,
            signals=tuple(file.signals),
            cabinet=file.cabinet,
            fieldbus=(
                None
                if file.fieldbus is None
                else replace_struct(file.fieldbus, credentials=str(path(file.fieldbus.credentials)))
            ),
            firmware=firmware,
            keepalive_s=link.keepalive_s,
            keepalive_timeout_s=link.keepalive_timeout_s,
            observe_listen=file.observe.listen,
            log=file.log,
        )

    @classmethod
    def load(cls, path: Path, environ: Mapping[str, str] | None = None) -> AgentConfig:
        """The file at ``path``, with the keys ``environ`` (``os.environ``) sets over it."""
        data = apply_environment(
            load_toml(path), AgentFile, ENV_PREFIX, os.environ if environ is None else environ
        )
        config = cls.from_mapping(data, path.resolve().parent)
        return replace(config, source=path)


# -- the file's schema -------------------------------------------------------------------------


class Gateway(Settings, frozen=True):
    id: str
    serial: str
    state_dir: str

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            check_name("id", self.id)
        except IdentityError as exc:
            raise ConfigError("id", exc.reason) from None


class Orchestrator(Settings, frozen=True):
    address: str
    ca_file: str
    enroll_address: str | None = None
    server_name: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_address("address", self.address)
        if self.enroll_address is not None:
            check_address("enroll_address", self.enroll_address)


class Site(Settings, frozen=True):
    latitude: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    longitude: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    time_zone: str
    commune: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError("time_zone", f"{self.time_zone!r} is not an IANA time zone") from None


class Clock(Settings, frozen=True):
    mode: Literal["system", "simulated"] = "system"
    start: datetime | None = None  # a TOML date-time, or a string in ISO 8601
    speed: Annotated[float, msgspec.Meta(ge=0.001)] = 1.0
    rtc: bool = False
    sync: str = "auto"
    origin: datetime | None = None  # real instant at which a simulated clock reads `start`

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.origin is not None and self.origin.tzinfo is None:
            raise ConfigError("origin", "must be a date-time with its UTC offset")
        if self.sync not in SYNC_SOURCES:
            raise ConfigError("sync", f"must be one of {', '.join(SYNC_SOURCES)}")
        if self.mode == "simulated" and (self.start is None or self.start.tzinfo is None):
            raise ConfigError("start", "must be a date-time with its UTC offset")


class Link(Settings, frozen=True):
    report_interval_s: Annotated[float, msgspec.Meta(ge=0.05)] = 1.0
    keepalive_s: Annotated[float, msgspec.Meta(ge=1.0, le=3600.0)] = 15.0
    keepalive_timeout_s: Annotated[float, msgspec.Meta(ge=1.0, le=600.0)] = 5.0


class Outbox(Settings, frozen=True):
    max_bytes: Annotated[int, msgspec.Meta(ge=1024 * 1024)] = 64 * 1024 * 1024


class Firmware(Settings, frozen=True):
    release_keys: list[str]
    state_dir: str
    health_deadline_s: Annotated[float, msgspec.Meta(ge=1)] = 120.0
    health_interval_s: Annotated[float, msgspec.Meta(ge=0.01)] = 10.0
    signature_threshold: Annotated[int, msgspec.Meta(ge=1)] = 1
    stability_s: Annotated[float, msgspec.Meta(ge=0)] = 600.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.release_keys:
            raise ConfigError("release_keys", "pin at least one release public key")


class Observe(Settings, frozen=True):
    listen: str = ""  # host:port of the agent's /metrics, /livez, /readyz (none when empty)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.listen:
            check_address("listen", self.listen)


# Environment variables that set a key of the agent's file (see the module docstring).
ENV_PREFIX = "ONDIJON_AGENT__"


class AgentFile(Settings, frozen=True):
    """The agent's TOML file."""

    gateway: Gateway
    orchestrator: Orchestrator
    site: Site
    clock: Clock = Clock()
    link: Link = Link()
    outbox: Outbox = Outbox()
    firmware: Firmware | None = None
    lamps: list[LampConfig] = []
    bollards: list[dict[str, Any]] = []  # read by BollardConfig.from_mapping
    signals: list[SignalConfig] = []
    cabinet: CabinetConfig | None = None
    fieldbus: FieldbusConfig | None = None
    observe: Observe = Observe()
    log: LogSettings = LogSettings()
