"""The inventory: a city written as CSV or GeoJSON reads back as the same assets; a bad
cell is refused naming its line (or feature) and field; the diff against the register is
exactly the changes made, checked on random edits of a generated city."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.city.generator import generate
from domain.city.inventory import (
    Asset,
    AssetKind,
    InventoryError,
    check_inventory,
    diff,
    read_csv,
    read_geojson,
    read_inventory,
    register_digest,
    to_csv,
    to_geojson,
)

SMALL = generate(7, cabinets=60, lamps=600, crossings=10, bollard_sites=4)


def test_the_small_city_round_trips_through_csv_and_geojson() -> None:
    for text, reader in (
        (to_csv(SMALL.assets), read_csv),
        (to_geojson(SMALL.assets), read_geojson),
    ):
        assets, where = reader(text)
        assert check_inventory(assets, where, today=date(2026, 1, 1)) == list(SMALL.assets)


LAMP_LINE = "lamp,l1,cab-1,lamp-001,,47.3,5.04,1,60,3000,7800,0.5,8,2019-05-02,,,,"
HEADER = (
    "kind,id,cabinet,device,commune,latitude,longitude,channel,power_w,colour_temperature_k,"
    "luminous_flux_lm,upward_light_ratio,lantern_height_m,install_date,serial,tags,name,bollards"
)
CABINET_LINE = "cabinet,cab-1,,,Chenôve,47.29,5.0,,,,,,,,SN-1,parc;tram-t1,,"


def lines(*rows: str) -> str:
    return "\n".join([HEADER, CABINET_LINE, *rows]) + "\n"


def test_a_lamp_gets_its_cabinets_commune() -> None:
    assets, where = read_csv(lines(LAMP_LINE))
    lamp = check_inventory(assets, where)[1]
    assert (lamp.commune, lamp.power_w, lamp.channel, lamp.device_id) == (
        "Chenôve",
        60.0,
        1,
        "lamp-001",
    )
    assert check_inventory(assets, where)[0].tags == ("parc", "tram-t1")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda row: row.replace(",60,", ",-60,"), "line 3, power_w: more than 0"),
        (lambda row: row.replace(",60,", ",sixty,"), "line 3, power_w: 'sixty' is not a number"),
        (lambda row: row.replace(",3000,", ",30,"), "line 3, colour_temperature_k: between"),
        (lambda row: row.replace(",0.5,", ",150,"), "line 3, upward_light_ratio: a percentage"),
        (lambda row: row.replace(",8,2019", ",0,2019"), "line 3, lantern_height_m: more than 0"),
        (
            lambda row: row.replace("2019-05-02", "2019-13-02"),
            "line 3, install_date: '2019-13-02' is not a date",
        ),
        (
            lambda row: row.replace("2019-05-02", "2031-01-01"),
            "line 3, install_date: must be after 1900 and not in the future",
        ),
        (lambda row: row.replace("cab-1", "cab-9"), "line 3, cabinet: no cabinet 'cab-9'"),
        (lambda row: row.replace("lamp,", "lantern,"), "line 3, kind: 'lantern' is not one of"),
        (lambda row: row.replace(",1,60", ",,60"), "line 3, channel: required for a lamp"),
        (lambda row: row.replace(",,,,", ",,,x,"), "line 3, name: not a field of a lamp"),
        (
            lambda row: row.replace(",47.3,", ",97.3,"),
            "line 3, latitude: must be between -90 and 90",
        ),
        (lambda row: row + ",", "line 3: more cells than columns"),
    ],
)
def test_a_bad_cell_is_named_by_line_and_field(edit, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InventoryError) as caught:
        assets, where = read_csv(lines(edit(LAMP_LINE)))
        check_inventory(assets, where, today=date(2026, 1, 1))
    assert str(caught.value).startswith(message), str(caught.value)


def test_duplicates_are_named_with_both_places() -> None:
    with pytest.raises(InventoryError, match="line 4, id: lamp 'l1' is also at line 3"):
        check_inventory(*read_csv(lines(LAMP_LINE, LAMP_LINE)))
    other = LAMP_LINE.replace("l1,", "l2,")
    with pytest.raises(
        InventoryError, match="line 4, device: 'lamp-001' of cabinet 'cab-1' is also at line 3"
    ):
        check_inventory(*read_csv(lines(LAMP_LINE, other)))


def test_unknown_column_and_bad_geojson_are_named() -> None:
    with pytest.raises(InventoryError, match="line 1, colour: unknown column"):
        read_csv("kind,id,latitude,longitude,colour\n")
    feature = json.loads(to_geojson(SMALL.assets[:2]))
    feature["features"][1]["geometry"] = {"type": "LineString", "coordinates": []}
    with pytest.raises(InventoryError, match=r"features\[1\], geometry: must be a Point"):
        read_geojson(json.dumps(feature))
    with pytest.raises(InventoryError, match="line 1: not valid JSON"):
        read_geojson("{")
    with pytest.raises(InventoryError, match=r"file: 'city\.xlsx'"):
        read_inventory("city.xlsx", "")


def _edit(rng: random.Random, asset: Asset) -> Asset:
    if asset.kind is AssetKind.LAMP:
        return dataclasses.replace(asset, power_w=asset.power_w + rng.choice((10.0, 20.0)))
    return dataclasses.replace(asset, latitude=asset.latitude + 0.001)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32))
def test_diff_reports_exactly_the_random_edits(seed: int) -> None:
    rng = random.Random(seed)
    register = {a.key: a for a in SMALL.assets}
    incoming = list(SMALL.assets)
    removed = set(rng.sample(range(len(incoming)), rng.randint(0, 20)))
    changed = set(rng.sample(sorted(set(range(len(incoming))) - removed), rng.randint(0, 20)))
    edited = [
        (_edit(rng, a) if i in changed else a) for i, a in enumerate(incoming) if i not in removed
    ]
    new = [
        dataclasses.replace(SMALL.assets[-1], asset_id=f"new-{i}", device_id=f"bollard-n{i}")
        for i in range(rng.randint(0, 5))
    ]
    result = diff(register, edited + new)
    assert {a.key for a in result.added} == {a.key for a in new}
    assert {a.key for _, a, _ in result.changed} == {incoming[i].key for i in changed}
    assert {a.key for a in result.removed} == {incoming[i].key for i in removed}
    for old, _after, fields in result.changed:
        assert fields == (("power_w",) if old.kind is AssetKind.LAMP else ("latitude",))
    # Re-importing the same inventory changes nothing.
    applied = {a.key: a for a in edited + new}
    assert diff(applied, edited + new).empty
    assert register_digest(reversed(list(applied.values()))) == register_digest(applied.values())


def test_an_inventory_of_lamps_alone_never_removes_cabinets() -> None:
    register = {a.key: a for a in SMALL.assets}
    lamps = [a for a in SMALL.assets if a.kind is AssetKind.LAMP][:-3]
    result = diff(register, lamps)
    assert {a.kind for a in result.removed} == {AssetKind.LAMP}
    assert len(result.removed) == 3
