"""Any TOML key settable from the environment (containers, balena device variables)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import AgentConfig
from foundation.settings import ConfigError
from orchestrator.config import OrchestratorConfig

AGENT = """
[gateway]
id = "dijon-darcy-01"
serial = "SN-1"
state_dir = "state"
[orchestrator]
address = "orchestrator.example.org:7443"
ca_file = "root.pem"
[site]
latitude = 47.3
longitude = 5.0
time_zone = "Europe/Paris"
[[lamps]]
id = "lamp-1"
backend = "gpio"
relay_pin = 17
nominal_power_w = 60
pwm_pin = 18
sense_pin = 22
"""


def test_orchestrator_keys_of_every_type_come_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.toml"
    path.write_text('[store]\nurl = "sqlite:///o.db"\n')
    config = OrchestratorConfig.load(
        path,
        {
            "ONDIJON_ORCHESTRATOR__STORE__URL": "postgresql+psycopg://db/ondijon",
            "ONDIJON_ORCHESTRATOR__STORE__DEADLINE_S": "7.5",
            "ONDIJON_ORCHESTRATOR__SERVER__DNS_NAMES": '["a.example.org", "b.example.org"]',
            "ONDIJON_ORCHESTRATOR__LIMITS__EVENT_WINDOW": "50",
            "ONDIJON_ORCHESTRATOR__OBSERVE__LISTEN": "0.0.0.0:9464",
            "ONDIJON_ORCHESTRATOR__LOG__FORMAT": "json",
            "ONDIJON_PROFILE": "/not/a/key",  # other variables are not read
            "HOME": "/root",
        },
    )
    assert config.store_url == "postgresql+psycopg://db/ondijon"
    assert config.store.deadline_s == 7.5
    assert config.dns_names == ("a.example.org", "b.example.org")
    assert config.limits.event_window == 50
    assert config.observe_listen == "0.0.0.0:9464"
    assert config.log.format == "json"


def test_agent_keys_in_tables_and_arrays_of_tables(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(AGENT)
    config = AgentConfig.load(
        path,
        {
            "ONDIJON_AGENT__GATEWAY__ID": "dijon-darcy-02",
            "ONDIJON_AGENT__GATEWAY__SERIAL": "0042",  # a string stays a string
            "ONDIJON_AGENT__LAMPS__0__RELAY_PIN": "27",
            "ONDIJON_AGENT__CLOCK__RTC": "true",
        },
    )
    assert (config.gateway_id, config.serial) == ("dijon-darcy-02", "0042")
    assert config.lamps[0].relay_pin == 27
    assert config.clock.rtc is True


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ONDIJON_AGENT__GATEWAY__IDD", "x", "ONDIJON_AGENT__GATEWAY__IDD: names no setting"),
        ("ONDIJON_AGENT__LAMPS__3__RELAY_PIN", "1", "ONDIJON_AGENT__LAMPS__3__RELAY_PIN: the file"),
        ("ONDIJON_AGENT__LINK__KEEPALIVE_S", "soon", "KEEPALIVE_S: 'soon' is not a TOML value"),
        ("ONDIJON_AGENT__LINK__KEEPALIVE_S", "0.5", "link.keepalive_s: must be at least 1"),
    ],
)
def test_a_wrong_variable_is_refused_naming_it(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(AGENT)
    with pytest.raises(ConfigError, match=message):
        AgentConfig.load(path, {name: value})
