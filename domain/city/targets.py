"""Which gateways a target names, and which group document each gateway gets.

A desired-state document can be assigned to a *target*: the whole ``city``, a ``commune``,
a ``tag``, an explicit ``list`` of gateways, or an ``area`` (a polygon on the map: the
gateways whose cabinet stands inside). A document put on one gateway (``ondijon desired
put``) is the narrowest assignment of all. When several assignments of the same kind cover a
gateway, the precedence decides, most specific first::

    gateway > list > area > tag > commune > city

(an area is a list drawn on the map, so it ranks next to the list; an explicit list names
the gateways one by one, so it beats the drawing). Between two assignments of the same
level (two tags of one gateway), the one put last wins. Commands take the same targets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from domain.city.geometry import MAX_VERTICES, Point, bounding_box, inside
from foundation.errors import FieldError

MAX_LIST = 10_000


class TargetError(FieldError):
    """A target is refused (the field names which part)."""


class Level(IntEnum):
    """Precedence: a higher value wins."""

    CITY = 1
    COMMUNE = 2
    TAG = 3
    AREA = 4
    LIST = 5
    GATEWAY = 6

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Target:
    """What an assignment or a command covers. ``name`` is the commune, the tag, or the
    operator's name for a list or an area (``""`` for the city)."""

    level: Level
    name: str = ""
    gateway_ids: tuple[str, ...] = ()
    polygon: tuple[Point, ...] = ()

    @property
    def key(self) -> str:
        """One assignment per (kind, key): putting to the same target replaces it."""
        return f"{self.level.label}:{self.name}"

    def describe(self) -> str:
        if self.level is Level.CITY:
            return "city"
        return f"{self.level.label} {self.name}"


@dataclass(frozen=True)
class Site:
    """What a target is matched against: a gateway's place in the city."""

    gateway_id: str
    commune: str
    tags: frozenset[str]
    latitude: float
    longitude: float


@dataclass(frozen=True)
class Assignment:
    """A group document: ``sequence`` orders assignments put at the same level."""

    assignment_id: int
    target: Target
    sequence: int


@dataclass
class _AreaTest:
    polygon: tuple[Point, ...]
    box: tuple[float, float, float, float] = field(init=False)

    def __post_init__(self) -> None:
        self.box = bounding_box(self.polygon)

    def __call__(self, site: Site) -> bool:
        lat0, lon0, lat1, lon1 = self.box
        if not (lat0 <= site.latitude <= lat1 and lon0 <= site.longitude <= lon1):
            return False
        return inside((site.latitude, site.longitude), self.polygon)


def check_target(target: Target) -> Target:
    """Return ``target`` if well formed, else raise :class:`TargetError`."""
    if target.level is Level.CITY:
        if target.name or target.gateway_ids or target.polygon:
            raise TargetError("target.city", "the city takes no name, list or polygon")
        return target
    if not target.name or len(target.name) > 128 or not target.name.isprintable():
        raise TargetError(f"target.{target.level.label}", "1 to 128 printable characters")
    if target.level is Level.COMMUNE and target.name == "*":
        raise TargetError("target.commune", "'*' is not a commune (use the city)")
    if target.level is Level.LIST:
        if not target.gateway_ids:
            raise TargetError("target.list.gateway_ids", "name at least one gateway")
        if len(target.gateway_ids) > MAX_LIST:
            raise TargetError("target.list.gateway_ids", f"at most {MAX_LIST} gateways")
    elif target.gateway_ids:
        raise TargetError(
            "target.gateway_ids", f"only a list names gateways, not a {target.level.label}"
        )
    if target.level is Level.AREA:
        if not 3 <= len(target.polygon) <= MAX_VERTICES:
            raise TargetError("target.area.polygon", f"3 to {MAX_VERTICES} vertices")
        for i, (lat, lon) in enumerate(target.polygon):
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise TargetError(
                    f"target.area.polygon[{i}]", "latitude -90..90, longitude -180..180"
                )
    elif target.polygon:
        raise TargetError(
            "target.polygon", f"only an area has a polygon, not a {target.level.label}"
        )
    if target.level is Level.GATEWAY:
        raise TargetError("target", "a single gateway's document is put with PutDesiredState")
    return target


def matcher(target: Target) -> _Matcher:
    """A test ``site -> bool`` for ``target``."""
    return _Matcher(target)


class _Matcher:
    def __init__(self, target: Target) -> None:
        self.target = target
        self._ids = frozenset(target.gateway_ids)
        self._area = _AreaTest(target.polygon) if target.level is Level.AREA else None

    def __call__(self, site: Site) -> bool:
        level = self.target.level
        if level is Level.CITY:
            return True
        if level is Level.COMMUNE:
            return site.commune == self.target.name
        if level is Level.TAG:
            return self.target.name in site.tags
        if level is Level.LIST:
            return site.gateway_id in self._ids
        if self._area is not None:
            return self._area(site)
        return False


def covered(target: Target, sites: Iterable[Site]) -> list[str]:
    """Ids of the gateways ``target`` covers, in the order of ``sites``."""
    return [s.gateway_id for s in covered_sites(target, sites)]


def covered_sites(target: Target, sites: Iterable[Site]) -> list[Site]:
    """The sites ``target`` covers, in the order of ``sites``: one pass, whatever the
    size of the city."""
    test = matcher(target)
    return [s for s in sites if test(s)]


def resolve(
    sites: Sequence[Site],
    assignments: Sequence[Assignment],
    pinned: Iterable[str] = (),
) -> dict[str, Assignment]:
    """The winning assignment of each gateway (one document kind): gateways with none, and
    ``pinned`` ones (a document put on the gateway itself), are absent."""
    ranked = sorted(assignments, key=lambda a: (a.target.level, a.sequence), reverse=True)
    pinned_ids = frozenset(pinned)
    tests = [(a, matcher(a.target)) for a in ranked]
    result: dict[str, Assignment] = {}
    for site in sites:
        if site.gateway_id in pinned_ids:
            continue
        for assignment, test in tests:
            if test(site):
                result[site.gateway_id] = assignment
                break
    return result


def candidates(site: Site, assignments: Sequence[Assignment]) -> list[Assignment]:
    """Every assignment covering ``site``, the winner first: "where does it come from, and
    what does it shadow"."""
    ranked = sorted(assignments, key=lambda a: (a.target.level, a.sequence), reverse=True)
    return [a for a in ranked if matcher(a.target)(site)]


def sites_by_id(sites: Iterable[Site]) -> Mapping[str, Site]:
    return {s.gateway_id: s for s in sites}
