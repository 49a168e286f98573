"""The published datasets: their dictionaries and the pure builders of their rows.

Each builder takes records the export read from the store and returns rows (plain dicts
keyed by the dataset's attribute names). Nothing here reads a clock, a file or the store.

1. ``streetlights`` — the lighting inventory, one row per luminaire: the arrêté of
   27 December 2018's fields and the smart-data-models ``Streetlight`` attributes.
2. ``cabinets`` — one row per cabinet, as ``StreetlightControlCabinet``.
3. ``programs`` — tonight's lighting program of each cabinet's lamps (a
   ``StreetlightGroup``): switch times and levels, ``switchingMode``.
4. ``energy`` — per commune and local day: energy, baseline, saving.
5. ``outages`` — per commune and local day: lamps out, repairs and time to repair.
6. ``access_sites`` — bollard sites and signalised crossings: position and status only.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from domain.opendata.tables import Attribute, Table

_ID = {"type": "string", "minLength": 1, "maxLength": 128}
_COMMUNE = Attribute("areaServed", {"type": "string", "minLength": 1}, "Commune of Dijon métropole")
_NUMBER0 = {"type": "number", "minimum": 0}
_RATIO = {"type": "number", "minimum": 0, "maximum": 1}
_DATE = {"type": "string", "format": "date"}
_DATETIME = {"type": "string", "format": "date-time"}

# -- 1. the lighting inventory -----------------------------------------------------------

STREETLIGHT_STATUS = ("brokenLantern", "columnIssue", "defectiveLamp", "ok")
POWER_STATE = ("bootingUp", "low", "off", "on")

STREETLIGHTS = Table(
    name="streetlights",
    title="Éclairage public : inventaire des luminaires / Street lighting inventory",
    description=(
        "Every luminaire of the métropole with the characteristics the arrêté of 27 December "
        "2018 (nuisances lumineuses) requires operators to hold, and its state as last "
        "reported (smart-data-models Streetlight)."
    ),
    entity_type="Streetlight",
    point=True,
    attributes=(
        Attribute("id", _ID, "Luminaire identifier in the asset register"),
        _COMMUNE,
        Attribute(
            "refStreetlightControlCabinet",
            {"type": "string", "x-entity": "StreetlightControlCabinet"},
            "The control cabinet feeding this luminaire (see dataset cabinets)",
            relationship=True,
        ),
        Attribute(
            "refStreetlightGroup",
            {"type": "string", "x-entity": "StreetlightGroup"},
            "The group of lamps switched together (see dataset programs)",
            relationship=True,
        ),
        Attribute(
            "controllingMethod",
            {"type": "string", "enum": ["group", "individual"]},
            "How the luminaire is controlled: individually by its cabinet's agent",
        ),
        Attribute(
            "status",
            {"type": "string", "enum": list(STREETLIGHT_STATUS)},
            "Overall status: defectiveLamp while a lamp, driver or relay fault is open",
            required=False,
        ),
        Attribute(
            "powerState",
            {"type": "string", "enum": list(POWER_STATE)},
            "Power state as last reported: on (full level), low (dimmed), off",
            required=False,
        ),
        Attribute(
            "illuminanceLevel",
            _RATIO,
            "Relative illuminance level setting as last reported (0 to 1)",
            required=False,
        ),
        Attribute("lanternHeight", _NUMBER0, "Height of the lantern above ground", "m"),
        Attribute("powerRating", _NUMBER0, "Rated electrical power of the luminaire", "W"),
        Attribute(
            "luminousFlux", _NUMBER0, "Luminous flux of the luminaire (arrêté 27/12/2018)", "lm"
        ),
        Attribute(
            "colorTemperature",
            {"type": "integer", "minimum": 1000, "maximum": 10000},
            "Correlated colour temperature (arrêté 27/12/2018)",
            "K",
        ),
        Attribute(
            "upwardLightRatio",
            {"type": "number", "minimum": 0, "maximum": 100},
            "Upward light ratio: share of the flux emitted above the horizontal (ULR)",
            "%",
        ),
        Attribute(
            "cieFluxCode3",
            {"type": "number", "minimum": 0, "maximum": 100},
            "CIE flux code n°3: share of the downward flux within 75.5° of the vertical; "
            "empty until the register holds the luminaire's photometry",
            "%",
            required=False,
        ),
        Attribute(
            "dateServiceStarted",
            _DATETIME,
            "Installation date (arrêté 27/12/2018), midnight UTC of the day",
        ),
    ),
)


@dataclass(frozen=True)
class Luminaire:
    """A lamp of the register with its last reported state (None: not reported)."""

    asset_id: str
    cabinet_id: str
    commune: str
    latitude: float
    longitude: float
    power_w: float
    colour_temperature_k: int
    luminous_flux_lm: float
    upward_light_ratio: float
    lantern_height_m: float
    install_date: str
    cie_flux_code_3: float | None = None
    level: int | None = None
    lit: bool | None = None
    faulty: bool | None = None


def power_state(level: int | None, lit: bool | None) -> str | None:
    if lit is None:
        return None
    if not lit or not level:
        return "off"
    return "on" if level >= 100 else "low"


def streetlight_rows(lamps: Iterable[Luminaire]) -> list[dict[str, Any]]:
    rows = []
    for lamp in sorted(lamps, key=lambda x: x.asset_id):
        rows.append(
            {
                "id": lamp.asset_id,
                "areaServed": lamp.commune,
                "refStreetlightControlCabinet": lamp.cabinet_id,
                "refStreetlightGroup": lamp.cabinet_id,
                "controllingMethod": "individual",
                "status": None
                if lamp.faulty is None
                else ("defectiveLamp" if lamp.faulty else "ok"),
                "powerState": power_state(lamp.level, lamp.lit),
                "illuminanceLevel": None
                if lamp.level is None or lamp.lit is None
                else (round(lamp.level / 100.0, 2) if lamp.lit else 0.0),
                "lanternHeight": lamp.lantern_height_m,
                "powerRating": lamp.power_w,
                "luminousFlux": lamp.luminous_flux_lm,
                "colorTemperature": lamp.colour_temperature_k,
                "upwardLightRatio": lamp.upward_light_ratio,
                "cieFluxCode3": lamp.cie_flux_code_3,
                "dateServiceStarted": f"{lamp.install_date}T00:00:00Z",
                "longitude": lamp.longitude,
                "latitude": lamp.latitude,
            }
        )
    return rows


# -- 2. cabinets -------------------------------------------------------------------------

CABINETS = Table(
    name="cabinets",
    title="Éclairage public : armoires de commande / Street lighting control cabinets",
    description=(
        "Every control cabinet (smart-data-models StreetlightControlCabinet): energy metered "
        "since metering started, power drawn now, working mode."
    ),
    entity_type="StreetlightControlCabinet",
    point=True,
    attributes=(
        Attribute("id", _ID, "Cabinet identifier (its gateway)"),
        _COMMUNE,
        Attribute(
            "refStreetlightGroup",
            {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "uniqueItems": True,
                "x-entity": "StreetlightGroup",
            },
            "Groups of lamps this cabinet controls (see dataset programs)",
            relationship=True,
        ),
        Attribute(
            "workingMode",
            {"type": "string", "enum": ["automatic", "manual", "semiautomatic"]},
            "automatic: lamps follow the program; manual: an operator's override is in force",
        ),
        Attribute(
            "features",
            {
                "type": "array",
                "items": {"type": "string", "enum": ["astronomicalClock", "individualControl"]},
                "minItems": 1,
                "uniqueItems": True,
            },
            "Controller features: an astronomical clock, each lamp controlled on its own",
        ),
        Attribute("numberOfLamps", {"type": "integer", "minimum": 0}, "Luminaires fed", ngsi=False),
        Attribute(
            "energyConsumed",
            _NUMBER0,
            "Energy consumed by the lamps since dateMeteringStarted",
            "kWh",
        ),
        Attribute(
            "dateMeteringStarted",
            _DATETIME,
            "Start of the metering summed in energyConsumed",
            required=False,
        ),
        Attribute(
            "totalActivePower",
            _NUMBER0,
            "Active power drawn by the lamps as last reported",
            "kW",
            required=False,
        ),
    ),
)


@dataclass(frozen=True)
class CabinetRecord:
    cabinet_id: str
    commune: str
    latitude: float
    longitude: float
    lamps: int
    energy_kwh: float
    metering_since: date | None
    active_power_w: float | None
    overridden: bool
    astronomical: bool


def cabinet_rows(cabinets: Iterable[CabinetRecord]) -> list[dict[str, Any]]:
    rows = []
    for c in sorted(cabinets, key=lambda x: x.cabinet_id):
        features = ["individualControl"]
        if c.astronomical:
            features.insert(0, "astronomicalClock")
        rows.append(
            {
                "id": c.cabinet_id,
                "areaServed": c.commune,
                "refStreetlightGroup": [c.cabinet_id],
                "workingMode": "manual" if c.overridden else "automatic",
                "features": features,
                "numberOfLamps": c.lamps,
                "energyConsumed": round(c.energy_kwh, 3),
                "dateMeteringStarted": None
                if c.metering_since is None
                else f"{c.metering_since.isoformat()}T00:00:00Z",
                "totalActivePower": None
                if c.active_power_w is None
                else round(c.active_power_w / 1000.0, 4),
                "longitude": c.longitude,
                "latitude": c.latitude,
            }
        )
    return rows


# -- 3. programs tonight ------------------------------------------------------------------

SWITCHING_MODES = (
    "night-ON",
    "night-OFF",
    "night-LOW",
    "always-ON",
    "day-ON",
    "day-OFF",
    "day-LOW",
)

PROGRAMS = Table(
    name="programs",
    title="Éclairage public : programmes de la nuit / Lighting programs tonight",
    description=(
        "For each group of lamps (the lamps of one cabinet, smart-data-models "
        "StreetlightGroup), tonight's program: when the lamps switch on, each change of "
        "level, when they switch off (local time, Europe/Paris)."
    ),
    entity_type="StreetlightGroup",
    point=True,
    attributes=(
        Attribute("id", _ID, "Group identifier (the cabinet's lamps)"),
        _COMMUNE,
        Attribute(
            "refStreetlightControlCabinet",
            {"type": "string", "x-entity": "StreetlightControlCabinet"},
            "The cabinet that switches the group",
            relationship=True,
        ),
        Attribute("night", _DATE, "The night described: the evening's local date"),
        Attribute(
            "activeProgramId",
            {"type": "string"},
            "Identifier of tonight's program in the cabinet's schedule",
            required=False,
        ),
        Attribute(
            "switchingMode",
            {
                "type": "array",
                "items": {"type": "string", "enum": list(SWITCHING_MODES)},
                "minItems": 1,
                "uniqueItems": True,
            },
            "How the group is switched tonight: night-ON (on at night), night-LOW (dimmed part "
            "of the night), night-OFF (off part of the night), always-ON",
            required=False,
        ),
        Attribute("switchingOnAt", _DATETIME, "When the lamps switch on tonight", required=False),
        Attribute("switchingOffAt", _DATETIME, "When the lamps switch off at dawn", required=False),
        Attribute(
            "switches",
            {
                "type": "array",
                "items": {"type": "string", "pattern": r"^\d{2}:\d{2} (100|[1-9]?\d)$"},
            },
            "Every change of level tonight: local time HH:MM and level in percent; empty when "
            "the cabinet holds no schedule (its lamps then follow their default level)",
            required=False,
        ),
    ),
)


@dataclass(frozen=True)
class GroupProgram:
    """One cabinet's lamps tonight: the switch points from evening noon to morning noon."""

    cabinet_id: str
    commune: str
    latitude: float
    longitude: float
    night: date
    program_id: str | None
    # (instant UTC, level percent), in order, from noon of ``night`` to noon the next day
    points: tuple[tuple[datetime, int], ...]
    time_zone: str = "Europe/Paris"


def switching(
    points: Sequence[tuple[datetime, int]], level_at_noon: int
) -> tuple[list[str], datetime | None, datetime | None]:
    """(switchingMode, switching on, switching off) of a night's level changes."""
    levels = [lvl for _, lvl in points]
    on = next((at for at, lvl in points if lvl > 0), None)
    off = None
    if on is not None:
        after_on = [(at, lvl) for at, lvl in points if at > on]
        off = next((at for at, lvl in reversed(after_on) if lvl == 0), None)
        if off is not None and any(lvl > 0 for at, lvl in after_on if at > off):
            off = None
    modes: list[str] = []
    if level_at_noon > 0 and all(lvl > 0 for lvl in levels):
        modes.append("always-ON")
    elif any(lvl > 0 for lvl in levels):
        modes.append("night-ON")
        lit_levels = [lvl for lvl in levels if lvl > 0]
        if any(lvl < 100 for lvl in lit_levels):
            modes.append("night-LOW")
        if on is not None and off is not None:
            between = [lvl for at, lvl in points if on < at < off]
            if 0 in between:
                modes.append("night-OFF")
    return modes, on, off


def program_rows(groups: Iterable[GroupProgram]) -> list[dict[str, Any]]:
    rows = []
    for g in sorted(groups, key=lambda x: x.cabinet_id):
        zone = ZoneInfo(g.time_zone)
        modes, on, off = switching(g.points, 0)
        rows.append(
            {
                "id": g.cabinet_id,
                "areaServed": g.commune,
                "refStreetlightControlCabinet": g.cabinet_id,
                "night": g.night.isoformat(),
                "activeProgramId": g.program_id,
                "switchingMode": modes or None,
                "switchingOnAt": _utc(on),
                "switchingOffAt": _utc(off),
                "switches": [f"{at.astimezone(zone):%H:%M} {lvl}" for at, lvl in g.points] or None,
                "longitude": g.longitude,
                "latitude": g.latitude,
            }
        )
    return rows


def _utc(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- 4. energy ----------------------------------------------------------------------------

ENERGY = Table(
    name="energy",
    title="Éclairage public : énergie par commune et par jour / Lighting energy per day",
    description=(
        "Energy metered by the lamps of each commune per local day, against the baseline "
        "(the same lamps at full power from sunset to sunrise over the night metered), and "
        "the saving."
    ),
    key=("areaServed", "date"),
    attributes=(
        _COMMUNE,
        Attribute("date", _DATE, "Local date (Europe/Paris)"),
        Attribute("numberOfLamps", {"type": "integer", "minimum": 0}, "Lamps metered"),
        Attribute("energyConsumed", _NUMBER0, "Energy consumed", "kWh"),
        Attribute(
            "baselineEnergy",
            _NUMBER0,
            "Energy the same lamps would have used at full power all night",
            "kWh",
        ),
        Attribute(
            "saving",
            {"type": "number", "maximum": 1},
            "1 - energyConsumed / baselineEnergy (0.65 is a 65 % saving)",
        ),
        Attribute("burningHours", _NUMBER0, "Hours lit, summed over the lamps", "h"),
    ),
)


@dataclass(frozen=True)
class EnergyDay:
    commune: str
    day: date
    lamps: int
    kwh: float
    baseline_kwh: float
    burning_hours: float


def energy_rows(days: Iterable[EnergyDay]) -> list[dict[str, Any]]:
    return [
        {
            "areaServed": d.commune,
            "date": d.day.isoformat(),
            "numberOfLamps": d.lamps,
            "energyConsumed": round(d.kwh, 3),
            "baselineEnergy": round(d.baseline_kwh, 3),
            "saving": round(1.0 - d.kwh / d.baseline_kwh, 4) if d.baseline_kwh > 0 else 0.0,
            "burningHours": round(d.burning_hours, 2),
        }
        for d in sorted(days, key=lambda x: (x.commune, x.day))
    ]


# -- 5. outages ---------------------------------------------------------------------------

OUTAGES = Table(
    name="outages",
    title="Éclairage public : pannes par commune et par jour / Lamp outages per day",
    description=(
        "Per commune and local day: lamps out (a lamp fault open at any time of the day, "
        "detected by the system or reported by citizens), lamps repaired that day and the "
        "time to repair (from the first report of the fault to its repair)."
    ),
    key=("areaServed", "date"),
    attributes=(
        _COMMUNE,
        Attribute("date", _DATE, "Local date (Europe/Paris)"),
        Attribute("lampsOut", {"type": "integer", "minimum": 0}, "Lamps with a fault open"),
        Attribute("repairs", {"type": "integer", "minimum": 0}, "Faults closed that day"),
        Attribute(
            "meanTimeToRepair", _NUMBER0, "Mean time to repair of those faults", "h", required=False
        ),
        Attribute(
            "medianTimeToRepair",
            _NUMBER0,
            "Median time to repair of those faults",
            "h",
            required=False,
        ),
    ),
)

# Alarm types that mean a lamp gives no (or wrong) light.
LAMP_FAULTS = frozenset(
    {
        "lamp_failure",
        "relay_failure",
        "driver_failure",
        "dimming_failure",
        "equipment.failed",
        "reported",
    }
)


@dataclass(frozen=True)
class Fault:
    """One lamp fault (an alarm): when it started and when it was closed (None: open)."""

    commune: str
    lamp: str
    first_at: datetime
    closed_at: datetime | None


def outage_rows(
    faults: Iterable[Fault], since: date, until: date, zone: ZoneInfo
) -> list[dict[str, Any]]:
    """Rows for each commune with a fault, each local day from ``since`` to ``until``."""
    out: dict[tuple[str, date], set[str]] = defaultdict(set)
    repairs: dict[tuple[str, date], list[float]] = defaultdict(list)
    communes: set[str] = set()
    end_of_range = datetime.combine(until + timedelta(days=1), datetime.min.time(), zone)
    for f in faults:
        communes.add(f.commune)
        first = max(f.first_at.astimezone(zone).date(), since)
        last_at = f.closed_at or end_of_range
        last = min(last_at.astimezone(zone).date(), until)
        day = first
        while day <= last:
            out[(f.commune, day)].add(f.lamp)
            day += timedelta(days=1)
        if f.closed_at is not None:
            closed = f.closed_at.astimezone(zone).date()
            if since <= closed <= until:
                repairs[(f.commune, closed)].append(
                    (f.closed_at - f.first_at).total_seconds() / 3600.0
                )
    rows = []
    for commune in sorted(communes):
        day = since
        while day <= until:
            hours = repairs.get((commune, day), [])
            rows.append(
                {
                    "areaServed": commune,
                    "date": day.isoformat(),
                    "lampsOut": len(out.get((commune, day), ())),
                    "repairs": len(hours),
                    "meanTimeToRepair": round(statistics.fmean(hours), 2) if hours else None,
                    "medianTimeToRepair": round(statistics.median(hours), 2) if hours else None,
                }
            )
            day += timedelta(days=1)
    return rows


# -- 6. bollard sites and crossings -------------------------------------------------------

SITE_STATUS = ("ok", "fault", "unknown")

ACCESS_SITES = Table(
    name="access_sites",
    title="Bornes escamotables et carrefours à feux / Bollard sites and signalised crossings",
    description=(
        "Position and status of every retractable-bollard site and signalised crossing. No "
        "access list, no passage: whether a bollard is up or down is the only state given."
    ),
    point=True,
    attributes=(
        Attribute("id", _ID, "Site identifier in the asset register"),
        _COMMUNE,
        Attribute(
            "category",
            {"type": "string", "enum": ["bollardSite", "signalisedCrossing"]},
            "What stands there",
        ),
        Attribute("name", {"type": "string"}, "Name of the site", required=False),
        Attribute(
            "status",
            {"type": "string", "enum": list(SITE_STATUS)},
            "ok, fault (out of order, a crew is called) or unknown (not reported)",
        ),
        Attribute(
            "bollardPosition",
            {"type": "string", "enum": ["up", "down", "moving"]},
            "Bollards: up (access closed), down (open), moving; empty for a crossing or unknown",
            required=False,
        ),
        Attribute(
            "signalMode",
            {"type": "string", "enum": ["normal", "flashing", "dark"]},
            "Crossings: normal (signal plan), flashing amber, dark; empty for bollards",
            required=False,
        ),
        Attribute("dateObserved", _DATETIME, "When the state was last reported", required=False),
    ),
)


@dataclass(frozen=True)
class AccessSite:
    site_id: str
    commune: str
    latitude: float
    longitude: float
    category: str  # bollardSite | signalisedCrossing
    name: str = ""
    status: str = "unknown"
    bollard_position: str | None = None
    signal_mode: str | None = None
    observed_at: datetime | None = None


def access_rows(sites: Iterable[AccessSite]) -> list[dict[str, Any]]:
    return [
        {
            "id": s.site_id,
            "areaServed": s.commune,
            "category": s.category,
            "name": s.name or None,
            "status": s.status,
            "bollardPosition": s.bollard_position if s.category == "bollardSite" else None,
            "signalMode": s.signal_mode if s.category == "signalisedCrossing" else None,
            "dateObserved": _utc(s.observed_at),
            "longitude": s.longitude,
            "latitude": s.latitude,
        }
        for s in sorted(sites, key=lambda x: x.site_id)
    ]


TABLES: Mapping[str, Table] = {
    t.name: t for t in (STREETLIGHTS, CABINETS, PROGRAMS, ENERGY, OUTAGES, ACCESS_SITES)
}


@dataclass(frozen=True)
class Inputs:
    """Everything an export is built from (read from the store by the shell)."""

    lamps: Sequence[Luminaire] = ()
    cabinets: Sequence[CabinetRecord] = ()
    programs: Sequence[GroupProgram] = ()
    energy: Sequence[EnergyDay] = ()
    faults: Sequence[Fault] = ()
    sites: Sequence[AccessSite] = ()
    outage_since: date | None = None
    outage_until: date | None = None
    zone: str = "Europe/Paris"
    extra: Mapping[str, Any] = field(default_factory=dict)


def rows_of(inputs: Inputs) -> dict[str, list[dict[str, Any]]]:
    """The rows of every dataset."""
    since = inputs.outage_since or date(1970, 1, 1)
    until = inputs.outage_until or since
    return {
        "streetlights": streetlight_rows(inputs.lamps),
        "cabinets": cabinet_rows(inputs.cabinets),
        "programs": program_rows(inputs.programs),
        "energy": energy_rows(inputs.energy),
        "outages": outage_rows(inputs.faults, since, until, ZoneInfo(inputs.zone)),
        "access_sites": access_rows(inputs.sites),
    }
