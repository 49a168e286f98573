"""The node's configuration: every bad field named. Runs on CPython and MicroPython."""

import json

from edge.node.config import parse_config
from edge.node.errors import ConfigError
from tests.edge.node.portable import raises

GOOD = {"cabinet": "cab-01", "node": "n-0001", "password": "p", "broker": "10.0.0.1"}


def _field(**changes):
    obj = dict(GOOD)
    obj.update(changes)
    return raises(ConfigError, parse_config, json.dumps(obj)).field


def test_a_minimal_configuration_gets_safe_defaults():
    config = parse_config(json.dumps(GOOD))
    assert (config.default_level, config.fallback_s, config.port, config.tls) == (
        100,
        300,
        1883,
        False,
    )
    assert parse_config(config.to_json()).node == "n-0001"


def test_bad_settings_are_refused_by_name():
    assert _field(default_level=0) == "default_level"
    assert _field(default_level=101) == "default_level"
    assert _field(fallback_s=1) == "fallback_s"
    assert _field(port="1883") == "port"
    assert _field(tls=1) == "tls"
    assert _field(node="N/1") == "node"
    assert _field(cabinet="") == "cabinet"
    assert _field(password="") == "password"
    assert _field(nominal_w=0) == "nominal_w"
    assert _field(colour="red") == "colour"
    assert raises(ConfigError, parse_config, "{").field == "node.json"
    assert raises(ConfigError, parse_config, json.dumps({"node": "n-1"})).field == "cabinet"
