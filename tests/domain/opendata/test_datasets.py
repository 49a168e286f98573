"""The datasets of a generated city: every file valid against its schema (JSON Schema,
RFC 7946, Table Schema), values traced back to the inputs, derived figures against
independent references on random cases, and the privacy gate."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.city.generator import generate
from domain.city.inventory import AssetKind
from domain.opendata import datasets as ds
from domain.opendata.catalogue import Publisher, export_files
from domain.opendata.privacy import PrivacyError, check, scan
from tests.opendata_checks import validate_export

PARIS = ZoneInfo("Europe/Paris")
AT = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)


def city_inputs(seed: int = 7) -> ds.Inputs:
    city = generate(seed, cabinets=60, lamps=900, crossings=6, bollard_sites=4)
    rng = random.Random(seed)
    lamps = [
        ds.Luminaire(
            a.asset_id,
            a.gateway_id,
            a.commune,
            a.latitude,
            a.longitude,
            a.power_w,
            a.colour_temperature_k,
            a.luminous_flux_lm,
            a.upward_light_ratio,
            a.lantern_height_m,
            a.install_date,
            level=rng.choice([None, 0, 30, 50, 100]),
            lit=rng.choice([None, True, False]),
            faulty=rng.choice([None, True, False]),
        )
        for a in city.of_kind(AssetKind.LAMP)
    ]
    cabinets = [
        ds.CabinetRecord(
            a.asset_id,
            a.commune,
            a.latitude,
            a.longitude,
            10,
            rng.uniform(0, 500),
            rng.choice([None, date(2026, 11, 6)]),
            rng.choice([None, 1234.5]),
            rng.random() < 0.1,
            rng.random() < 0.5,
        )
        for a in city.cabinets
    ]
    night = date(2026, 12, 7)
    dusk = datetime(2026, 12, 7, 16, 10, tzinfo=UTC)
    programs = [
        ds.GroupProgram(
            a.asset_id,
            a.commune,
            a.latitude,
            a.longitude,
            night,
            "winter",
            ((dusk, 100), (dusk + timedelta(hours=6), 50), (dusk + timedelta(hours=15), 0)),
        )
        for a in city.cabinets
    ]
    sites = [
        ds.AccessSite(
            a.asset_id,
            a.commune,
            a.latitude,
            a.longitude,
            "bollardSite" if a.kind == AssetKind.BOLLARD_SITE else "signalisedCrossing",
            a.name,
            rng.choice(["ok", "fault", "unknown"]),
            "up",
            "flashing",
            AT,
        )
        for a in city.assets
        if a.kind in (AssetKind.BOLLARD_SITE, AssetKind.CROSSING)
    ]
    energy = [
        ds.EnergyDay("Dijon", night - timedelta(days=i), 300, 400.0, 1100.0, 3000.0)
        for i in range(5)
    ]
    faults = [ds.Fault("Talant", f"g/l{i}", AT - timedelta(hours=30 + i), None) for i in range(3)]
    return ds.Inputs(
        lamps,
        cabinets,
        programs,
        energy,
        faults,
        sites,
        outage_since=night - timedelta(days=3),
        outage_until=night,
    )


def test_every_file_of_a_generated_city_is_valid_against_its_schema() -> None:
    inputs = city_inputs()
    files = export_files(inputs, Publisher(contact_email="opendata@metropole-dijon.fr"), AT)
    rows = validate_export(files)
    assert len(rows["streetlights"]) == 900 and len(rows["cabinets"]) == 60
    assert len(rows["access_sites"]) == 10
    # The inventory says what the register holds, longitude first in GeoJSON.
    by_id = {lamp.asset_id: lamp for lamp in inputs.lamps}
    features = json.loads(files["streetlights.geojson"])["features"]
    for f in features[:50]:
        lamp = by_id[f["id"]]
        assert f["geometry"]["coordinates"] == [round(lamp.longitude, 7), round(lamp.latitude, 7)]
        assert f["properties"]["powerRating"] == lamp.power_w
        assert f["properties"]["colorTemperature"] == lamp.colour_temperature_k
        assert f["properties"]["upwardLightRatio"] == lamp.upward_light_ratio
        assert f["properties"]["dateServiceStarted"].startswith(lamp.install_date)
    catalogue = json.loads(files["catalogue.jsonld"])
    assert catalogue["dct:license"]["@id"].endswith("ETALAB-Licence-Ouverte-v2.0.pdf")
    dataset = catalogue["dcat:dataset"][0]
    assert dataset["dct:accrualPeriodicity"]["@id"].endswith("/DAILY")
    assert "POLYGON" in dataset["dct:spatial"]["dcat:bbox"]["@value"]


def test_a_wrong_value_fails_the_checks() -> None:
    """The checks can fail: a lamp's powerState outside smart-data-models' enumeration and
    a latitude put first are both caught."""
    files = export_files(city_inputs(), Publisher(), AT)
    bad = dict(files)
    bad["streetlights.csv"] = files["streetlights.csv"].replace(b",low,", b",dimmed,", 1)
    with pytest.raises(AssertionError, match="powerState"):
        validate_export(bad)
    collection = json.loads(files["access_sites.geojson"])
    f = collection["features"][0]
    f["geometry"]["coordinates"].reverse()
    bad = dict(files) | {"access_sites.geojson": json.dumps(collection).encode()}
    with pytest.raises(AssertionError):
        validate_export(bad)


@pytest.mark.parametrize("seed", range(30))
def test_outages_against_a_reference(seed: int) -> None:
    rng = random.Random(seed)
    since, until = date(2026, 3, 25), date(2026, 4, 3)  # across the spring DST change
    start = datetime(2026, 3, 20, tzinfo=UTC)
    faults = []
    for _ in range(rng.randint(1, 25)):
        first = start + timedelta(minutes=rng.randint(0, 60 * 24 * 16))
        closed = (
            first + timedelta(minutes=rng.randint(1, 60 * 24 * 4)) if rng.random() < 0.7 else None
        )
        faults.append(
            ds.Fault(rng.choice(["Dijon", "Daix"]), f"lamp{rng.randint(0, 8)}", first, closed)
        )
    rows = {(r["areaServed"], r["date"]): r for r in ds.outage_rows(faults, since, until, PARIS)}
    for commune in {f.commune for f in faults}:
        day = since
        while day <= until:
            lo = datetime.combine(day, datetime.min.time(), PARIS)
            hi = datetime.combine(day + timedelta(days=1), datetime.min.time(), PARIS)
            out = {
                f.lamp
                for f in faults
                if f.commune == commune
                and f.first_at < hi
                and (f.closed_at is None or f.closed_at >= lo)
            }
            fixed = [
                (f.closed_at - f.first_at).total_seconds() / 3600
                for f in faults
                if f.commune == commune and f.closed_at is not None and lo <= f.closed_at < hi
            ]
            row = rows[(commune, day.isoformat())]
            assert row["lampsOut"] == len(out), (commune, day)
            assert row["repairs"] == len(fixed)
            if fixed:
                assert row["meanTimeToRepair"] == pytest.approx(sum(fixed) / len(fixed), abs=0.01)
            day += timedelta(days=1)


def test_switching_modes_and_times() -> None:
    t = datetime(2026, 12, 7, 16, 0, tzinfo=UTC)
    h = timedelta(hours=1)
    assert ds.switching([(t, 100), (t + 6 * h, 50), (t + 15 * h, 0)], 0) == (
        ["night-ON", "night-LOW"],
        t,
        t + 15 * h,
    )
    assert ds.switching([(t, 100), (t + 8 * h, 0), (t + 13 * h, 100), (t + 15 * h, 0)], 0) == (
        ["night-ON", "night-OFF"],
        t,
        t + 15 * h,
    )
    assert ds.switching([(t, 100)], 100) == (["always-ON"], t, None)
    assert ds.switching([], 0) == ([], None, None)
    assert [
        ds.power_state(lvl, lit)
        for lvl, lit in [(100, True), (40, True), (100, False), (0, True), (50, None)]
    ] == ["on", "low", "off", "off", None]


def test_energy_saving_is_against_the_baseline() -> None:
    (row,) = ds.energy_rows([ds.EnergyDay("Dijon", date(2026, 12, 1), 3, 35.0, 100.0, 30.0)])
    assert row["saving"] == 0.65 and row["energyConsumed"] == 35.0


PLANTED = {
    "jeanne.martin@example.org": "e-mail address",
    "06 12 34 56 78": "phone number",
    "AB-123-CD": "number plate",
    "1234 AB 21": "old number plate",
    "192.168.4.20": "IP address",
    "04A3F29B7C": "badge code",
}


@pytest.mark.parametrize("value", sorted(PLANTED))
def test_the_privacy_gate_finds_personal_values_in_every_format(value: str) -> None:
    inputs = city_inputs()
    lamp = inputs.lamps[0]
    site = inputs.sites[0]
    from dataclasses import replace

    leaked = replace(
        inputs,
        sites=[replace(site, name=f"Entrée {value}"), *inputs.sites[1:]],
        lamps=[replace(lamp, install_date=lamp.install_date), *inputs.lamps[1:]],
    )
    with pytest.raises(PrivacyError) as caught:
        export_files(leaked, Publisher(), AT)
    assert PLANTED[value] in caught.value.reason


def test_the_privacy_gate_refuses_personal_fields_and_passes_a_clean_export() -> None:
    files = export_files(city_inputs(), Publisher(), AT)
    for name, data in files.items():
        assert scan(name, data) == [], name
    with pytest.raises(PrivacyError, match="operator"):
        check({"x.json": b'[{"id": "a", "operator": "x"}]'})
    with pytest.raises(PrivacyError, match="created_by"):
        check({"x.csv": b"id,created_by\r\na,b\r\n"})
