"""The bench inventory: a wrong file is refused naming the key path and the reason.

Many random bad files are made from the example inventory (examples/bench.toml), each with
one known fault, and the error must name where it is. The pin names are checked against
gpiozero's own board information for the Raspberry Pi's header, not against our table.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.bench.inventory import Inventory, agent_equipment, load_inventory, to_toml
from edge.config import AgentConfig
from foundation.settings import ConfigError, convert

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "bench.toml"
GOOD: dict[str, Any] = tomllib.loads(EXAMPLE.read_text())
BOARD = MockFactory().board_info  # a Pi 3B's header, as gpiozero knows it


def header_positions() -> dict[int, str]:
    """Header position -> BCM name, for every position that is a GPIO (gpiozero's table)."""
    found = {}
    for position in range(1, 41):
        try:
            found[position] = BOARD.to_gpio(f"BOARD{position}")
        except Exception:
            continue
    return found


HEADER = header_positions()
BCM_TO_BOARD = {int(name[4:]): position for position, name in HEADER.items()}


def pin_paths(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Every place in an inventory table that holds a pin, as a path of keys and indexes."""
    paths: list[tuple[Any, ...]] = []
    for i, lamp in enumerate(data.get("lamps", [])):
        paths += [("lamps", i, k) for k in ("relay", "pwm", "sense") if k in lamp]
    lines = ("motor_up", "motor_down", "warning_light", "up_limit", "down_limit", "loop")
    lines += ("edge", "emergency", "loop_fault", "reset")
    for i, bollard in enumerate(data.get("bollards", [])):
        paths += [("bollards", i, k) for k in lines if k in bollard]
    for i, crossing in enumerate(data.get("crossings", [])):
        for group, head in crossing["heads"].items():
            paths += [("crossings", i, "heads", group, k) for k in head]
        if "alive" in crossing:
            paths.append(("crossings", i, "alive"))
    if "cabinet" in data:
        paths += [("cabinet", "door"), ("cabinet", "mains")]
    paths += [("loopback", i, "pin") for i in range(len(data.get("loopback", [])))]
    return paths


def dotted(path: tuple[Any, ...]) -> str:
    """``("lamps", 0, "relay")`` -> ``lamps[0].relay``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def put(data: Any, path: tuple[Any, ...], value: Any) -> None:
    get(data, path[:-1])[path[-1]] = value


def refused(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        convert(data, Inventory)
    return caught.value


def aliases(bcm: int) -> st.SearchStrategy[Any]:
    """Every way the inventory may write GPIO ``bcm``."""
    forms: list[Any] = [bcm, f"GPIO{bcm}", f"BCM{bcm}", f"gpio{bcm}", f"GPIO0{bcm}"]
    if bcm in BCM_TO_BOARD:
        forms.append(f"BOARD{BCM_TO_BOARD[bcm]}")
    return st.sampled_from(forms)


PATHS = pin_paths(GOOD)


def test_the_example_inventory_loads_and_makes_an_agent_configuration(tmp_path: Path) -> None:
    inventory = load_inventory(EXAMPLE)
    assert inventory.pin("lamps.lamp-2.sense") == "GPIO24"  # written BOARD18
    assert inventory.probe("lamps.lamp-1.relay") == "GPIO14"
    # The agent takes the tables it makes, as `ondijon edge run` reads them from a file.
    agent = {
        "gateway": {"id": "gw", "serial": "SN-1", "state_dir": str(tmp_path)},
        "orchestrator": {"address": "127.0.0.1:9", "ca_file": "root.pem"},
        "site": {"latitude": 47.3, "longitude": 5.0, "time_zone": "Europe/Paris"},
        **agent_equipment(inventory),
    }
    (tmp_path / "agent.toml").write_text(to_toml(agent))
    config = AgentConfig.load(tmp_path / "agent.toml")
    assert [lamp.sense_pin for lamp in config.lamps] == ["GPIO27", "GPIO24"]
    assert config.bollards[0].loop_fault_pin == "GPIO20"
    assert config.cabinet is not None and config.cabinet.mains_pin == "GPIO25"
    assert config.signals[0].simulated is not None
    assert config.signals[0].simulated.conflicts == (("ns", "ew"),)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_gpio_wired_twice_under_any_name_is_refused_naming_both(data: st.DataObject) -> None:
    first, second = data.draw(st.permutations(PATHS))[:2]
    bad = copy.deepcopy(GOOD)
    bcm = int(BOARD.to_gpio(get(GOOD, first))[4:])
    put(bad, second, data.draw(aliases(bcm)))
    error = refused(bad)
    named = {error.field, error.reason.removeprefix(f"pin GPIO{bcm} is already used by ")}
    assert named == {dotted(first), dotted(second)}, error


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_free_gpio_under_any_name_is_taken(data: st.DataObject) -> None:
    used = {BOARD.to_gpio(get(GOOD, p)) for p in PATHS}
    free = sorted(int(name[4:]) for name in HEADER.values() if name not in used)
    path = data.draw(st.sampled_from(PATHS))
    bcm = data.draw(st.sampled_from(free))
    good = copy.deepcopy(GOOD)
    put(good, path, data.draw(aliases(bcm)))
    inventory = convert(good, Inventory)
    wired = {pin for _, pin in inventory.lines()}
    wired |= {inventory.probe(probe.to) for probe in inventory.loopback}
    assert f"GPIO{bcm}" in wired


NOT_A_PIN = st.one_of(
    st.integers(min_value=28, max_value=10_000),
    st.integers(max_value=-1),
    st.sampled_from(["", "GPIO", "GPIO28", "BCM40", "BOARD1", "BOARD2", "BOARD6", "BOARD41"]),
    st.text(alphabet="abcxyz -_", min_size=1, max_size=6),
    st.booleans(),
    st.floats(allow_nan=True),
    st.lists(st.integers(0, 27), max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(path=st.sampled_from(PATHS), value=NOT_A_PIN)
def test_a_value_that_is_no_gpio_of_the_header_is_refused_at_its_key(
    path: tuple[Any, ...], value: Any
) -> None:
    bad = copy.deepcopy(GOOD)
    put(bad, path, value)
    error = refused(bad)
    assert error.field == dotted(path)
    assert error.reason


def tables(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Every table of the inventory (where an unknown key can be written)."""
    found: list[tuple[Any, ...]] = [(), ("bench",), ("cabinet",)]
    for kind in ("lamps", "bollards", "crossings", "loopback"):
        found += [(kind, i) for i in range(len(data[kind]))]
    found += [("crossings", 0, "safety_card"), ("lamps", 0, "sim")]
    return found


@settings(max_examples=150, deadline=None)
@given(
    where=st.sampled_from(tables(GOOD)),
    key=st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True),
    value=st.one_of(st.integers(0, 27), st.text(max_size=5), st.booleans()),
)
def test_an_unknown_key_is_refused_with_its_path(
    where: tuple[Any, ...], key: str, value: Any
) -> None:
    bad = copy.deepcopy(GOOD)
    table = get(bad, where)
    if key in table or (where == () and key in Inventory.__struct_fields__):
        return  # a known key: not this test's case
    if where == ("crossings", 0) and key == "heads":
        return
    table[key] = value
    error = refused(bad)
    assert (error.field, error.reason) == (dotted((*where, key)), "unknown setting")


REQUIRED = [
    ("bench", "name"),
    ("lamps", 0, "relay"),
    ("lamps", 1, "sense"),
    ("lamps", 0, "id"),
    ("bollards", 0, "loop"),
    ("bollards", 0, "emergency"),
    ("crossings", 0, "safety_card"),
    ("crossings", 0, "conflicts"),
    ("cabinet", "mains"),
    ("loopback", 0, "to"),
]


@pytest.mark.parametrize("path", REQUIRED, ids=dotted)
def test_a_missing_line_is_named(path: tuple[Any, ...]) -> None:
    bad = copy.deepcopy(GOOD)
    del get(bad, path[:-1])[path[-1]]
    error = refused(bad)
    assert (error.field, error.reason) == (dotted(path), "is required")


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("lamps", 1, "id"), "lamp-1", "'lamp-1' is already the id of lamps[0]"),
        (("lamps", 0, "nominal_power_w"), 0, "must be a positive number"),
        (("lamps", 0, "relay_wiring"), "welded", "must be 'normally_closed' or 'normally_open'"),
        (("bollards", 0, "warning_s"), 0.5, "must be at least 1 s"),
        (("bollards", 0, "inputs_pull_up"), "yes", "must be true or false"),
        (("crossings", 0, "conflicts"), [["ns", "north"]], "which has no head"),
        (("crossings", 0, "conflicts"), [["ns", "ns"]], "must be two different groups"),
        (("loopback", 0, "to"), "lamps.lamp-9.relay", "names no line of the inventory"),
        (
            ("crossings", 0, "safety_card", "groups"),
            ["ns", "ew", "bus"],
            "exactly the groups with heads",
        ),
    ],
)
def test_a_wrong_value_is_named_with_the_reason(
    path: tuple[Any, ...], value: Any, reason: str
) -> None:
    bad = copy.deepcopy(GOOD)
    put(bad, path, value)
    error = refused(bad)
    field = dotted(path)
    if path[-1] == "conflicts":
        field += "[0]"
    assert error.field == field
    assert reason in error.reason, error
