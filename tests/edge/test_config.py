"""The agent's TOML: what a good file gives, and a named field for everything wrong."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.config import AgentConfig
from foundation.settings import ConfigError

GOOD = """\
[gateway]
id = "dj-centre-001"
serial = "SN-4F2A-0001"
state_dir = "state"

[orchestrator]
address = "orchestrator.example.org:7443"
ca_file = "/etc/ondijon/ca.pem"

[site]
latitude = 47.3220
longitude = 5.0415
time_zone = "Europe/Paris"
commune = "Dijon"

[[lamps]]
id = "lamp-001"
backend = "simulated"
nominal_power_w = 60

[[lamps]]
id = "lamp-002"
backend = "simulated"
nominal_power_w = 60
"""


def load(tmp_path: Path, text: str) -> AgentConfig:
    path = tmp_path / "etc" / "agent.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return AgentConfig.load(path)


def test_a_good_file_with_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, GOOD)
    assert config.gateway_id == "dj-centre-001" and config.serial == "SN-4F2A-0001"
    assert config.state_dir == tmp_path / "etc" / "state"  # relative to the file
    assert config.ca_file == Path("/etc/ondijon/ca.pem")
    assert config.enroll_address == config.address == "orchestrator.example.org:7443"
    assert config.server_name == ""
    assert (config.latitude, config.longitude, config.time_zone) == (47.322, 5.0415, "Europe/Paris")
    assert config.clock.mode == "system"
    assert config.report_interval_s == 1.0 and config.outbox_max_bytes == 64 * 1024 * 1024
    assert (config.keepalive_s, config.keepalive_timeout_s) == (15.0, 5.0)
    assert config.key_file == config.state_dir / "identity" / "current" / "gateway.key"
    assert config.cert_file == config.state_dir / "identity" / "current" / "gateway.pem"
    assert config.source == tmp_path / "etc" / "agent.toml"
    assert [lamp.device_id for lamp in config.lamps] == ["lamp-001", "lamp-002"]
    assert (config.bollards, config.signals, config.cabinet) == ((), (), None)
    with pytest.raises(ConfigError) as caught:  # equipment errors name the lamp
        load(tmp_path, GOOD + "relay_pn = 4\n")
    assert caught.value.field == "lamps[1].relay_pn"


@pytest.mark.parametrize(
    "start",
    ['"2026-06-21T21:00:00+02:00"', "2026-06-21T21:00:00+02:00", '"2026-06-21T19:00:00Z"'],
)
def test_a_simulated_clock(tmp_path: Path, start: str) -> None:
    config = load(tmp_path, GOOD + f'[clock]\nmode = "simulated"\nstart = {start}\nspeed = 600\n')
    assert config.clock.mode == "simulated" and config.clock.speed == 600
    assert config.clock.start == datetime(2026, 6, 21, 19, tzinfo=UTC)
    assert config.clock.start is not None and config.clock.start.tzinfo is not None


def test_a_second_address_for_enrollment(tmp_path: Path) -> None:
    text = GOOD.replace(
        "[site]",
        'enroll_address = "enroll.example.org:7444"\nserver_name = "orchestrator"\n[site]',
    )
    config = load(tmp_path, text)
    assert config.enroll_address == "enroll.example.org:7444"
    assert config.server_name == "orchestrator"


def _set(section: str, line: str) -> str:
    return GOOD.replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (GOOD + "[links]\n", "links", "unknown setting"),
        (_set("gateway", 'name = "x"'), "gateway.name", "unknown setting"),
        (_set("orchestrator", "port = 1"), "orchestrator.port", "unknown setting"),
        (GOOD + "[clock]\nrate = 2\n", "clock.rate", "unknown setting"),
        (GOOD.replace('id = "dj-centre-001"', 'id = "-dj"'), "gateway.id", "not a valid name"),
        (GOOD.replace('serial = "SN-4F2A-0001"\n', ""), "gateway.serial", "is required"),
        (GOOD.replace("[site]", "[place]"), "place", "unknown setting"),
        (
            GOOD.replace('ca_file = "/etc/ondijon/ca.pem"\n', ""),
            "orchestrator.ca_file",
            "is required",
        ),
        (_set("orchestrator", 'enroll_address = "enroll"'), "orchestrator.enroll_address", "host"),
        (GOOD.replace("Europe/Paris", "CET+1"), "site.time_zone", "not an IANA time zone"),
        (GOOD.replace("Europe/Paris", "../../etc/passwd"), "site.time_zone", "IANA"),
        (GOOD.replace("47.3220", "91"), "site.latitude", "at most 90"),
        (GOOD.replace("5.0415", "-181"), "site.longitude", "at least -180"),
        (GOOD.replace("5.0415", '"5.0415"'), "site.longitude", "must be a number"),
        (GOOD + "[link]\nreport_interval_s = 0\n", "link.report_interval_s", "at least"),
        (GOOD + "[link]\nkeepalive_s = 0.5\n", "link.keepalive_s", "at least"),
        (GOOD + "[link]\nkeepalive_timeout_s = 0\n", "link.keepalive_timeout_s", "at least"),
        (GOOD + "[outbox]\nmax_bytes = 1000\n", "outbox.max_bytes", "at least"),
        (GOOD + '[clock]\nmode = "fast"\n', "clock.mode", "'system' or 'simulated'"),
        (GOOD + '[clock]\nmode = "simulated"\n', "clock.start", "with its UTC offset"),
        (
            GOOD + '[clock]\nmode = "simulated"\nstart = 2026-06-21T21:00:00\n',
            "clock.start",
            "with its UTC offset",
        ),
        (
            GOOD + '[clock]\nmode = "simulated"\nstart = "midsummer"\n',
            "clock.start",
            "not an ISO 8601 date-time",
        ),
        (
            GOOD + '[clock]\nmode = "simulated"\nstart = "2026-06-21T21:00:00Z"\nspeed = 0\n',
            "clock.speed",
            "at least",
        ),
    ],
)
def test_every_mistake_names_its_field(tmp_path: Path, text: str, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.field == field
    assert reason in caught.value.reason
