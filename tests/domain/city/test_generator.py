"""The generated city: Dijon-sized, the same for the same seed, every asset valid and tied
to its cabinet."""

from __future__ import annotations

from collections import Counter
from datetime import date

from domain.city.generator import COMMUNES, generate
from domain.city.geometry import distance_m
from domain.city.inventory import AssetKind, check_inventory


def test_the_default_city_is_dijon_sized_valid_and_deterministic() -> None:
    city = generate()
    counts = Counter(a.kind for a in city.assets)
    assert counts == {
        AssetKind.CABINET: 1500,
        AssetKind.LAMP: 34000,
        AssetKind.CROSSING: 113,
        AssetKind.BOLLARD_SITE: 26,
    }
    assert len(COMMUNES) == 23 and "Chenôve" in {c.name for c in COMMUNES}
    assert check_inventory(city.assets, [a.asset_id for a in city.assets], today=date(2026, 1, 1))
    assert generate().assets == city.assets
    assert generate(seed=1).assets != city.assets
    per_commune = Counter(a.commune for a in city.cabinets)
    assert set(per_commune) == {c.name for c in COMMUNES}
    assert per_commune.most_common(1)[0][0] == "Dijon"
    # Each cabinet stands near its commune's centre, each lamp near its cabinet.
    centre = {c.name: (c.latitude, c.longitude) for c in COMMUNES}
    cabinets = {a.asset_id: a for a in city.cabinets}
    assert all(
        distance_m(centre[a.commune], (a.latitude, a.longitude)) < 15_000 for a in city.cabinets
    )
    for lamp in city.of_kind(AssetKind.LAMP)[::50]:
        cab = cabinets[lamp.gateway_id]
        assert distance_m((cab.latitude, cab.longitude), (lamp.latitude, lamp.longitude)) < 1_500
        assert lamp.colour_temperature_k <= 3000 and lamp.upward_light_ratio <= 1
    assert (
        len({(a.gateway_id, a.device_id) for a in city.assets if a.device_id}) == 34000 + 113 + 26
    )
