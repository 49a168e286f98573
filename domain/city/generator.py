"""A Dijon-sized city to test with: the 23 communes of Dijon métropole, ~1,500 cabinets,
~34,000 lamps, 113 signalised crossings and 26 bollard sites, the same for the same seed.

Communes carry their real names and a plausible centre and population; cabinets are spread
around each centre in proportion to its population, lamps around their cabinet, crossings
and bollard sites mostly in Dijon (its centre holds the pedestrian zones the bollards guard).
Lamps carry the fields the décret of 27 December 2018 asks for, with values such a fleet of
LED lanterns has (20-150 W, 2200-3000 K, about 130 lm/W, an upward light ratio under 1 %).

Gateway ids are ``<commune code>-c<NNNN>``, device ids ``lamp-NNN`` / ``signal-1`` /
``bollard-1``: the ids the cabinets' agents report. Nothing here reads a clock, a file or
the global random state: ``generate(seed)`` is a pure function.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta

from domain.city.geometry import Point, offset
from domain.city.inventory import Asset, AssetKind


@dataclass(frozen=True)
class Commune:
    name: str
    latitude: float
    longitude: float
    population: int

    @property
    def code(self) -> str:
        """A short ASCII code for ids: ``Chenôve`` -> ``chenove``."""
        ascii_name = unicodedata.normalize("NFKD", self.name).encode("ascii", "ignore").decode()
        return "".join(c for c in ascii_name.lower() if c.isalnum())[:12]


# Dijon métropole's 23 communes (Neuilly-Crimolois since 2019): centre and population.
COMMUNES = (
    Commune("Dijon", 47.3220, 5.0415, 159_000),
    Commune("Chenôve", 47.2920, 5.0050, 14_000),
    Commune("Talant", 47.3370, 5.0050, 11_500),
    Commune("Chevigny-Saint-Sauveur", 47.2990, 5.1350, 11_000),
    Commune("Quetigny", 47.3130, 5.1060, 9_500),
    Commune("Longvic", 47.2870, 5.0640, 9_000),
    Commune("Fontaine-lès-Dijon", 47.3430, 5.0200, 9_000),
    Commune("Saint-Apollinaire", 47.3330, 5.0850, 7_500),
    Commune("Marsannay-la-Côte", 47.2710, 4.9890, 5_300),
    Commune("Neuilly-Crimolois", 47.2750, 5.1150, 3_000),
    Commune("Plombières-lès-Dijon", 47.3370, 4.9650, 2_700),
    Commune("Sennecey-lès-Dijon", 47.2900, 5.1030, 2_200),
    Commune("Perrigny-lès-Dijon", 47.2660, 5.0060, 1_800),
    Commune("Daix", 47.3520, 5.0010, 1_500),
    Commune("Ouges", 47.2620, 5.0750, 1_500),
    Commune("Fénay", 47.2360, 5.0600, 1_500),
    Commune("Ahuy", 47.3700, 5.0200, 1_300),
    Commune("Hauteville-lès-Dijon", 47.3660, 4.9950, 1_200),
    Commune("Bressey-sur-Tille", 47.3120, 5.1850, 1_000),
    Commune("Magny-sur-Tille", 47.2820, 5.1700, 900),
    Commune("Bretenière", 47.2380, 5.1090, 900),
    Commune("Corcelles-les-Monts", 47.3000, 4.9400, 650),
    Commune("Flavignerot", 47.2930, 4.9540, 180),
)

CABINETS = 1_500
LAMPS = 34_000
CROSSINGS = 113
BOLLARD_SITES = 26
TAGS = ("centre-ville", "tram-t1", "tram-t2", "zone-activite", "residentiel", "parc")
_POWERS = ((20, 8), (30, 14), (40, 20), (60, 25), (80, 15), (100, 10), (150, 8))
_COLOURS = ((2200, 20), (2700, 30), (3000, 50))


@dataclass(frozen=True)
class GeneratedCity:
    communes: tuple[Commune, ...]
    assets: tuple[Asset, ...]

    def of_kind(self, kind: AssetKind) -> list[Asset]:
        return [a for a in self.assets if a.kind is kind]

    @property
    def cabinets(self) -> list[Asset]:
        return self.of_kind(AssetKind.CABINET)


def _weighted(rng: random.Random, table: tuple[tuple[int, int], ...]) -> int:
    values = [v for v, _ in table]
    choice: int = rng.choices(values, [w for _, w in table])[0]
    return choice


def _split(rng: random.Random, total: int, weights: list[float], minimum: int) -> list[int]:
    """``total`` split in proportion to ``weights``, each part at least ``minimum``, summing
    exactly to ``total`` (largest remainders)."""
    spare = total - minimum * len(weights)
    scale = spare / sum(weights)
    shares = [w * scale for w in weights]
    parts = [minimum + int(s) for s in shares]
    by_remainder = sorted(
        range(len(weights)), key=lambda i: (shares[i] - int(shares[i]), rng.random()), reverse=True
    )
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


def generate(
    seed: int = 21000,
    *,
    cabinets: int = CABINETS,
    lamps: int = LAMPS,
    crossings: int = CROSSINGS,
    bollard_sites: int = BOLLARD_SITES,
) -> GeneratedCity:
    """The city for ``seed``; smaller cities for quick tests keep every commune."""
    if cabinets < 2 * len(COMMUNES) or lamps < cabinets:
        raise ValueError("at least 2 cabinets a commune and a lamp a cabinet")
    rng = random.Random(seed)
    per_commune = _split(rng, cabinets, [c.population**0.75 for c in COMMUNES], 2)
    assets: list[Asset] = []
    cabinet_assets: list[Asset] = []
    for commune, count in zip(COMMUNES, per_commune, strict=True):
        # Spread grows with the town: ~2.2 km for Dijon, a few hundred metres for a village.
        spread = 250 + 6 * commune.population**0.5
        for n in range(1, count + 1):
            lat, lon = offset(
                (commune.latitude, commune.longitude), rng.gauss(0, spread), rng.gauss(0, spread)
            )
            tags = [rng.choice(TAGS[3:])]
            if commune.name == "Dijon" and rng.random() < 0.2:
                tags.append("centre-ville")
            if rng.random() < 0.08:
                tags.append(rng.choice(("tram-t1", "tram-t2")))
            cabinet = Asset(
                kind=AssetKind.CABINET,
                asset_id=f"{commune.code}-c{n:04d}",
                gateway_id=f"{commune.code}-c{n:04d}",
                device_id="",
                commune=commune.name,
                latitude=round(lat, 6),
                longitude=round(lon, 6),
                serial=f"SN-{commune.code.upper()}-{n:04d}",
                tags=tuple(sorted(set(tags))),
            )
            cabinet_assets.append(cabinet)
    assets += cabinet_assets
    per_cabinet = _split(rng, lamps, [rng.uniform(0.5, 1.5) for _ in cabinet_assets], 1)
    first_install = date(2012, 1, 1)
    for cabinet, count in zip(cabinet_assets, per_cabinet, strict=True):
        channels = max(1, min(8, count // 6))
        for n in range(1, count + 1):
            power = _weighted(rng, _POWERS)
            lat, lon = offset(
                (cabinet.latitude, cabinet.longitude), rng.gauss(0, 120), rng.gauss(0, 120)
            )
            assets.append(
                Asset(
                    kind=AssetKind.LAMP,
                    asset_id=f"{cabinet.asset_id}-l{n:03d}",
                    gateway_id=cabinet.asset_id,
                    device_id=f"lamp-{n:03d}",
                    commune=cabinet.commune,
                    latitude=round(lat, 6),
                    longitude=round(lon, 6),
                    channel=1 + (n - 1) % channels,
                    power_w=float(power),
                    colour_temperature_k=_weighted(rng, _COLOURS),
                    luminous_flux_lm=float(round(power * rng.uniform(115, 150))),
                    upward_light_ratio=round(rng.choice((0.0, 0.0, 0.0, 0.5, 1.0)), 1),
                    lantern_height_m=float(rng.choice((4, 5, 6, 8, 10, 12))),
                    install_date=(
                        first_install + timedelta(days=rng.randrange(13 * 365))
                    ).isoformat(),
                )
            )
    assets += _equipment(rng, cabinet_assets, crossings, AssetKind.CROSSING, "signal-1")
    assets += _equipment(rng, cabinet_assets, bollard_sites, AssetKind.BOLLARD_SITE, "bollard-1")
    return GeneratedCity(COMMUNES, tuple(assets))


def _equipment(
    rng: random.Random, cabinets: list[Asset], count: int, kind: AssetKind, device_id: str
) -> list[Asset]:
    """Crossings or bollard sites, each on its own cabinet: three in four in Dijon (all
    bollard sites in its centre where there are enough), the rest in the larger towns."""
    dijon = [c for c in cabinets if c.commune == "Dijon"]
    if kind is AssetKind.BOLLARD_SITE:
        centre = [c for c in dijon if "centre-ville" in c.tags]
        pool = centre if len(centre) >= count else dijon
        chosen = rng.sample(pool, count)
    else:
        in_dijon = min(len(dijon), count * 3 // 4)
        towns = [c for c in cabinets if c.commune in {m.name for m in COMMUNES[1:8]}]
        chosen = rng.sample(dijon, in_dijon) + rng.sample(towns, count - in_dijon)
    result = []
    prefix = "x" if kind is AssetKind.CROSSING else "b"
    for n, cabinet in enumerate(sorted(chosen, key=lambda a: a.asset_id), start=1):
        position: Point = offset((cabinet.latitude, cabinet.longitude), rng.gauss(0, 30), 0)
        result.append(
            Asset(
                kind=kind,
                asset_id=f"{prefix}{n:03d}",
                gateway_id=cabinet.asset_id,
                device_id=device_id,
                commune=cabinet.commune,
                latitude=round(position[0], 6),
                longitude=round(position[1], 6),
                name=f"{cabinet.commune} {kind.value.replace('_', ' ')} {n}",
                bollards=rng.randint(1, 4) if kind is AssetKind.BOLLARD_SITE else 0,
            )
        )
    return result
