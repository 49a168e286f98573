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

    [[lamps]]               # equipment tables, see edge/equipment/*.py for their fields
    id = "lamp-001"
    backend = "gpio"
    relay_pin = 17
    pwm_pin = 18

Paths are relative to the configuration file. Equipment tables are kept raw here and
parsed by each kind's own ``from_mapping`` when the agent starts, with the same
field-naming errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.timekeeping import SYNC_SOURCES
from foundation.settings import ConfigError, Section, load_toml
from provisioning.identity import IdentityError, check_name

EQUIPMENT_KINDS = ("lamps", "bollards", "signals", "cabinet")


@dataclass(frozen=True)
class ClockConfig:
    """``[clock]``: which clock, and where trust in the system clock comes from.

    Attributes:
        mode: ``"system"`` or ``"simulated"`` (demos and the bench).
        start: a simulated clock's first instant.
        speed: a simulated clock's speed.
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
    equipment: dict[str, Section] = field(default_factory=dict)
    source: Path | None = None
    firmware: FirmwareConfig | None = None
    # HTTP/2 keepalive of the link: a ping every keepalive_s, and the link is taken for dead
    # (and reopened) when one is not answered within keepalive_timeout_s. The orchestrator
    # allows a ping every 5 s at most (docs/integrators.md).
    keepalive_s: float = 15.0
    keepalive_timeout_s: float = 5.0

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
    def from_section(cls, data: Section) -> AgentConfig:
        data.unknown(
            {
                "gateway",
                "orchestrator",
                "site",
                "clock",
                "link",
                "outbox",
                "firmware",
                *EQUIPMENT_KINDS,
            }
        )
        gateway = data.section("gateway", required=True)
        gateway.unknown({"id", "serial", "state_dir"})
        orchestrator = data.section("orchestrator", required=True)
        orchestrator.unknown({"address", "enroll_address", "ca_file", "server_name"})
        site = data.section("site", required=True)
        site.unknown({"latitude", "longitude", "time_zone", "commune"})
        link = data.section("link")
        link.unknown({"report_interval_s", "keepalive_s", "keepalive_timeout_s"})
        outbox = data.section("outbox")
        outbox.unknown({"max_bytes"})
        gateway_id = gateway.text("id")
        try:
            check_name("gateway.id", gateway_id)
        except IdentityError as exc:
            raise ConfigError("gateway.id", str(exc).split(": ", 1)[1]) from None
        time_zone = site.text("time_zone")
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError("site.time_zone", f"{time_zone!r} is not an IANA time zone") from None
        equipment: dict[str, Section] = {}
        for kind in EQUIPMENT_KINDS:
            if kind in data.data:
                equipment[kind] = Section({kind: data.data[kind]}, "", data.base_dir)
        return cls(
            gateway_id=gateway_id,
            serial=gateway.text("serial"),
            state_dir=gateway.path("state_dir"),
            address=orchestrator.address("address"),
            enroll_address=orchestrator.address("enroll_address", orchestrator.text("address")),
            ca_file=orchestrator.path("ca_file"),
            server_name=orchestrator.text("server_name", ""),
            latitude=site.number("latitude", minimum=-90, maximum=90),
            longitude=site.number("longitude", minimum=-180, maximum=180),
            time_zone=time_zone,
            clock=_clock(data.section("clock")),
            report_interval_s=link.number("report_interval_s", 1.0, minimum=0.05),
            outbox_max_bytes=outbox.integer("max_bytes", 64 * 1024 * 1024, minimum=1024 * 1024),
            equipment=equipment,
            firmware=_firmware(data),
            keepalive_s=link.number("keepalive_s", 15.0, minimum=1.0, maximum=3600.0),
            keepalive_timeout_s=link.number("keepalive_timeout_s", 5.0, minimum=1.0, maximum=600.0),
        )

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        config = cls.from_section(Section(load_toml(path), "", path.resolve().parent))
        return replace(config, source=path)


def _firmware(data: Section) -> FirmwareConfig | None:
    if "firmware" not in data.data:
        return None
    section = data.section("firmware")
    section.unknown(
        {
            "release_keys",
            "state_dir",
            "health_deadline_s",
            "health_interval_s",
            "signature_threshold",
            "stability_s",
        }
    )
    keys = section.texts("release_keys")
    if not keys:
        raise ConfigError("firmware.release_keys", "pin at least one release public key")
    base = section.base_dir
    return FirmwareConfig(
        release_keys=tuple(Path(k) if Path(k).is_absolute() else base / k for k in keys),
        state_dir=section.path("state_dir"),
        health_deadline_s=section.number("health_deadline_s", 120.0, minimum=1),
        health_interval_s=section.number("health_interval_s", 10.0, minimum=0.01),
        signature_threshold=section.integer("signature_threshold", 1, minimum=1),
        stability_s=section.number("stability_s", 600.0, minimum=0),
    )


def _clock(section: Section) -> ClockConfig:
    section.unknown({"mode", "start", "speed", "rtc", "sync"})
    mode = section.text("mode", "system")
    rtc = section.data.get("rtc", False)
    if not isinstance(rtc, bool):
        raise ConfigError("clock.rtc", "must be true or false")
    sync = section.text("sync", "auto")
    if sync not in SYNC_SOURCES:
        raise ConfigError("clock.sync", f"must be one of {', '.join(SYNC_SOURCES)}")
    if mode == "system":
        return ClockConfig(rtc=rtc, sync=sync)
    if mode != "simulated":
        raise ConfigError("clock.mode", "must be 'system' or 'simulated'")
    raw: Any = section.data.get("start")
    if isinstance(raw, str):
        try:
            raw = datetime.fromisoformat(raw)
        except ValueError:
            raise ConfigError("clock.start", f"{raw!r} is not an ISO 8601 date-time") from None
    if not isinstance(raw, datetime) or raw.tzinfo is None:
        raise ConfigError("clock.start", "must be a date-time with its UTC offset")
    return ClockConfig(mode=mode, start=raw, speed=section.number("speed", 1.0, minimum=0.001))
