"""foundation/settings.py: a TOML table checked against a schema, and errors that name the
field's full path with the reasons installers read (the cases of the former Section)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import pytest

from foundation.settings import ConfigError, Settings, check_address, convert, load_toml

DATA: dict[str, Any] = {
    "gateway": {"id": "dj-001", "port": 7443, "flag": True, "ratio": 0.5, "tags": ["a", "b"]},
    "lamps": [{"id": "lamp-001", "pin": 17}, {"id": "lamp-002", "pin": "eighteen"}],
}


def schema(**gateway: Any) -> type[Settings]:
    """A file with a [gateway] table of the given field types, and [[lamps]]."""
    fields = {"id": str, "port": int, "flag": bool, "ratio": float, "tags": list[str]}
    fields.update(gateway)
    table = msgspec.defstruct("Gateway", list(fields.items()), bases=(Settings,), frozen=True)
    lamp = msgspec.defstruct(
        "Lamp", [("id", str), ("pin", int | str)], bases=(Settings,), frozen=True
    )
    return msgspec.defstruct(
        "File",
        [("gateway", table), ("lamps", list[lamp], msgspec.field(default_factory=list))],
        bases=(Settings,),
        frozen=True,
    )


def test_values_come_back_typed() -> None:
    file = convert(DATA, schema())
    gateway = file.gateway  # type: ignore[attr-defined]
    assert (gateway.id, gateway.port, gateway.flag, gateway.tags) == (
        "dj-001",
        7443,
        True,
        ["a", "b"],
    )
    assert gateway.ratio == 0.5
    number = convert({**DATA, "gateway": {**DATA["gateway"], "ratio": 1}}, schema())
    assert isinstance(number.gateway.ratio, float)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("data", "types", "field", "reason"),
    [
        (DATA, {"port": str}, "gateway.port", "must be a string"),
        (DATA, {"id": int}, "gateway.id", "must be an integer"),
        (DATA, {"flag": int}, "gateway.flag", "must be an integer"),
        (DATA, {"flag": float}, "gateway.flag", "must be a number"),
        (DATA, {"port": bool}, "gateway.port", "must be true or false"),
        (
            DATA,
            {"port": Annotated[int, msgspec.Meta(le=1024)]},
            "gateway.port",
            "must be at most 1024",
        ),
        (
            DATA,
            {"ratio": Annotated[float, msgspec.Meta(ge=1)]},
            "gateway.ratio",
            "must be at least 1",
        ),
        (DATA, {"serial": str}, "gateway.serial", "is required"),
        ({"lamps": []}, {}, "gateway", "is required"),
        (DATA, {"id": dict[str, int]}, "gateway.id", "must be a table"),
        ({**DATA, "lamps": {"id": "x"}}, {}, "lamps", "must be an array of tables"),
        (DATA, {"id": list[str]}, "gateway.id", "must be a list of strings"),
        (DATA, {"id": Literal["a", "b"]}, "gateway.id", "must be 'a' or 'b'"),
        (
            {**DATA, "gateway": {**DATA["gateway"], "colour": 1}},
            {},
            "gateway.colour",
            "unknown setting",
        ),
        ({**DATA, "lamps": [{"id": "x", "pin": True}]}, {}, "lamps[0].pin", "must be a pin number"),
        ({**DATA, "lamps": [{"id": "x"}]}, {}, "lamps[0].pin", "is required"),
        (
            {**DATA, "gateway": {**DATA["gateway"], "ratio": float("inf")}},
            {},
            "gateway.ratio",
            "must be a number",
        ),
    ],
)
def test_every_mistake_names_the_field_and_why(
    data: dict[str, Any], types: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        convert(data, schema(**types))
    assert caught.value.field == field
    assert reason in caught.value.reason
    assert str(caught.value) == f"{field}: {caught.value.reason}"


class Head(Settings, frozen=True):
    red: int


class Sim(Settings, frozen=True):
    heads: dict[str, Head]

    def __post_init__(self) -> None:
        super().__post_init__()
        if "tram" in self.heads:
            raise ConfigError("heads.tram", "not a group of this crossing")


def test_a_table_is_named_under_its_path_and_a_dict_entry_by_its_key() -> None:
    for data, field in (
        ({"heads": {"ns": {"red": 1}, "ew": {"red": "x"}}}, "signals[2].heads.ew.red"),
        ({"heads": {"ns": {"red": 1}, "ew": {"rouge": 1}}}, "signals[2].heads.ew.rouge"),
        ({"heads": {"tram": {"red": 1}}}, "signals[2].heads.tram"),
    ):
        with pytest.raises(ConfigError) as caught:
            convert(data, Sim, at="signals[2]")
        assert caught.value.field == field


class Cabinet(Settings, frozen=True):
    signals: list[Sim]


def test_a_dict_entry_inside_a_list_keeps_the_list_in_its_path() -> None:
    # msgspec gives `$.signals[1].heads[...].red`: the list's name must survive the index.
    data = {"signals": [{"heads": {"ns": {"red": 1}}}, {"heads": {"ew": {"red": "x"}}}]}
    with pytest.raises(ConfigError) as caught:
        convert(data, Cabinet)
    assert caught.value.field == "signals[1].heads.ew.red"


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
    if ok:
        check_address("orchestrator.address", value)
    else:
        with pytest.raises(ConfigError, match=r"orchestrator\.address: .* is not host:port"):
            check_address("orchestrator.address", value)


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
