"""Section: typed values out of a TOML table, and errors that name the field's full path."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundation.settings import ConfigError, Section, load_toml

DATA = {
    "gateway": {"id": "dj-001", "port": 7443, "flag": True, "ratio": 0.5, "tags": ["a", "b"]},
    "lamps": [{"id": "lamp-001", "pin": 17}, {"id": "lamp-002", "pin": "eighteen"}],
}


def root(base_dir: Path = Path("/etc/ondijon")) -> Section:
    return Section(DATA, "", base_dir)


def test_values_come_back_typed() -> None:
    gateway = root().section("gateway")
    assert gateway.text("id") == "dj-001"
    assert gateway.integer("port", minimum=1, maximum=65535) == 7443
    assert gateway.number("port") == 7443.0 and isinstance(gateway.number("port"), float)
    assert gateway.number("ratio", minimum=0, maximum=1) == 0.5
    assert gateway.flag("flag") is True
    assert gateway.texts("tags") == ["a", "b"]
    assert gateway.text("missing", "fallback") == "fallback"
    assert root().section("absent").raw() == {}
    assert [lamp.integer("pin") for lamp in root().sections("lamps")[:1]] == [17]


@pytest.mark.parametrize(
    ("read", "field", "reason"),
    [
        (lambda s: s.section("gateway").text("port"), "gateway.port", "must be a string"),
        (lambda s: s.section("gateway").integer("id"), "gateway.id", "must be an integer"),
        (lambda s: s.section("gateway").integer("flag"), "gateway.flag", "must be an integer"),
        (lambda s: s.section("gateway").number("flag"), "gateway.flag", "must be a number"),
        (lambda s: s.section("gateway").flag("port"), "gateway.port", "must be true or false"),
        (
            lambda s: s.section("gateway").integer("port", maximum=1024),
            "gateway.port",
            "must be at most 1024",
        ),
        (
            lambda s: s.section("gateway").number("ratio", minimum=1),
            "gateway.ratio",
            "must be at least 1",
        ),
        (lambda s: s.section("gateway").text("serial"), "gateway.serial", "is required"),
        (lambda s: s.section("site", required=True), "site", "is required"),
        (lambda s: s.section("gateway").section("id"), "gateway.id", "must be a table"),
        (lambda s: s.sections("gateway"), "gateway", "must be an array of tables"),
        (lambda s: s.sections("lamps")[1].integer("pin"), "lamps[1].pin", "must be an integer"),
        (lambda s: s.section("gateway").texts("id"), "gateway.id", "must be a list of strings"),
        (lambda s: s.section("gateway").address("id"), "gateway.id", "is not host:port"),
        (lambda s: s.section("gateway").unknown({"id"}), "gateway.flag", "unknown setting"),
    ],
)
def test_every_getter_names_the_field_and_why(read: object, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read(root())  # type: ignore[operator]
    assert caught.value.field == field
    assert reason in caught.value.reason
    assert str(caught.value) == f"{field}: {caught.value.reason}"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("orchestrator.example.org:7443", True),
        ("127.0.0.1:1", True),
        ("[::1]:7443", True),
        ("localhost", False),
        (":7443", False),
        ("localhost:", False),
        ("localhost:0", False),
        ("localhost:65536", False),
        ("localhost:http", False),
    ],
)
def test_addresses_are_host_and_port(value: str, ok: bool) -> None:
    section = Section({"address": value}, "orchestrator")
    if ok:
        assert section.address("address") == value
    else:
        with pytest.raises(ConfigError, match=r"orchestrator\.address: .* is not host:port"):
            section.address("address")


def test_paths_are_relative_to_the_configuration_file(tmp_path: Path) -> None:
    section = Section({"state": "state", "ca": "/etc/ondijon/ca.pem"}, "", tmp_path)
    assert section.path("state") == tmp_path / "state"
    assert section.path("ca") == Path("/etc/ondijon/ca.pem")
    assert section.section("nested").path("x", "x") == tmp_path / "x"


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[gateway]\nid = "dj-001"\n')
    assert load_toml(good) == {"gateway": {"id": "dj-001"}}

    broken = tmp_path / "broken.toml"
    broken.write_text('[gateway\nid = "dj-001"\n')
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_toml(broken)
    assert caught.value.field == str(broken)
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_toml(tmp_path / "missing.toml")
