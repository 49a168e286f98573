"""Citizens' reports of a broken lamp or a damaged bollard: the pure core.

- :func:`parse` reads a report: what (``kind``, and an optional ``detail`` from a fixed
  list) and where (``latitude``, ``longitude``). No free text, no name, no contact: a report
  holds nothing personal, so nothing personal is kept.
- :func:`nearest` matches the position to the nearest assets of the kind concerned (lamps
  for a lamp, bollard sites for a bollard), within ``MAX_DISTANCE_M``.
- A proof of work stands between anyone and the endpoint, with no third party: the server
  hands out a challenge it signed (HMAC, with its expiry and difficulty inside); the client
  finds a nonce such that SHA-256(challenge ":" nonce) starts with ``difficulty`` zero
  bits (about a second of a phone's time at 18 bits), and the server checks it in one
  hash. A challenge is good once (the store keeps its digest with the report).
- References are opaque random strings (no sequence to walk through).
- Retention: a report is deleted ``RETENTION`` after it was made (:func:`expired`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from foundation.errors import FieldError

KINDS: Mapping[str, tuple[str, ...]] = {
    # what is reported -> details a reporter may pick
    "lamp_out": ("off_at_night", "flickering", "on_by_day", "dim"),
    "lamp_damaged": ("knocked_down", "lantern_hanging", "open_hatch", "cable_exposed"),
    "bollard_damaged": ("stuck_up", "stuck_down", "damaged", "lights_out"),
}
# What asset kind each report is about.
ASSET_OF = {"lamp_out": "lamp", "lamp_damaged": "lamp", "bollard_damaged": "bollard_site"}
MAX_DISTANCE_M = 60.0
NEAREST = 3
RETENTION = timedelta(days=90)
CHALLENGE_TTL = timedelta(minutes=10)
REFERENCE_BYTES = 12
EARTH_RADIUS_M = 6_371_008.8


class ReportError(FieldError):
    """A report is refused: the field named, nothing kept."""


@dataclass(frozen=True)
class Report:
    kind: str
    detail: str
    latitude: float
    longitude: float


@dataclass(frozen=True)
class AssetPoint:
    """An asset a report can be matched to."""

    kind: str  # lamp | bollard_site
    asset_id: str
    gateway_id: str
    device_id: str
    commune: str
    latitude: float
    longitude: float


@dataclass(frozen=True)
class Match:
    asset: AssetPoint
    distance_m: float


def parse(body: Mapping[str, Any], area: tuple[float, float, float, float]) -> Report:
    """A report from its JSON body; ``area`` (west, south, east, north) is where the city
    is: a position outside is refused."""
    unknown = sorted(set(body) - {"kind", "detail", "latitude", "longitude", "challenge", "nonce"})
    if unknown:
        raise ReportError(unknown[0], "unknown field (a report holds no free text)")
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ReportError("kind", f"must be one of {', '.join(KINDS)}")
    detail = body.get("detail", "") or ""
    if detail and (not isinstance(detail, str) or detail not in KINDS[kind]):
        raise ReportError("detail", f"for {kind}, one of {', '.join(KINDS[kind])}")
    lat = _number(body, "latitude", -90.0, 90.0)
    lon = _number(body, "longitude", -180.0, 180.0)
    west, south, east, north = area
    if not (south <= lat <= north and west <= lon <= east):
        raise ReportError("latitude", "the position is outside the area served")
    # Four decimals (about 10 m) is all a crew needs: keep no finer trace of the reporter.
    return Report(kind, detail, round(lat, 4), round(lon, 4))


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReportError(name, "must be a number (decimal degrees, WGS 84)")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ReportError(name, f"must be within {low:g}..{high:g}")
    return number


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine) in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def nearest(
    report: Report,
    assets: Iterable[AssetPoint],
    *,
    limit: int = NEAREST,
    max_distance_m: float = MAX_DISTANCE_M,
) -> list[Match]:
    """The ``limit`` nearest assets of the report's kind within ``max_distance_m``, nearest
    first (ties by id)."""
    wanted = ASSET_OF[report.kind]
    # A cheap box first: a degree of latitude is ~111 km; of longitude, less.
    dlat = max_distance_m / 111_000.0
    dlon = dlat / max(0.01, math.cos(math.radians(report.latitude)))
    found = []
    for a in assets:
        if a.kind != wanted:
            continue
        if abs(a.latitude - report.latitude) > dlat or abs(a.longitude - report.longitude) > dlon:
            continue
        d = distance_m(report.latitude, report.longitude, a.latitude, a.longitude)
        if d <= max_distance_m:
            found.append(Match(a, d))
    found.sort(key=lambda m: (m.distance_m, m.asset.asset_id))
    return found[:limit]


# -- proof of work ------------------------------------------------------------------------


def issue_challenge(secret: bytes, now: datetime, salt: bytes, difficulty: int) -> str:
    """A signed challenge: ``<expiry epoch>.<difficulty>.<salt>.<tag>``."""
    expires = int((now + CHALLENGE_TTL).timestamp())
    body = f"{expires}.{difficulty}.{_b64(salt)}"
    return f"{body}.{_tag(secret, body)}"


def leading_zero_bits(digest: bytes) -> int:
    bits = 0
    for byte in digest:
        if byte == 0:
            bits += 8
            continue
        return bits + 8 - byte.bit_length()
    return bits


def work(challenge: str, nonce: str) -> bytes:
    return hashlib.sha256(f"{challenge}:{nonce}".encode()).digest()


def check_work(
    secret: bytes, challenge: str, nonce: str, now: datetime, min_difficulty: int
) -> bytes:
    """The challenge's digest (the key that makes it single-use) when the work is done;
    ReportError naming ``challenge`` or ``nonce`` otherwise."""
    if not isinstance(challenge, str) or challenge.count(".") != 3 or len(challenge) > 200:
        raise ReportError("challenge", "missing or malformed: ask GET /api/reports/challenge")
    if not isinstance(nonce, str) or not 0 < len(nonce) <= 64:
        raise ReportError("nonce", "missing or longer than 64 characters")
    body, _, tag = challenge.rpartition(".")
    if not hmac.compare_digest(tag, _tag(secret, body)):
        raise ReportError("challenge", "not issued by this service")
    expires, difficulty, _salt = body.split(".")
    if int(expires) < now.timestamp():
        raise ReportError("challenge", "expired: ask for a new one")
    if int(difficulty) < min_difficulty:
        raise ReportError("challenge", "too easy: ask for a new one")
    if leading_zero_bits(work(challenge, nonce)) < int(difficulty):
        raise ReportError("nonce", f"SHA-256(challenge:nonce) needs {difficulty} leading zero bits")
    return hashlib.sha256(challenge.encode()).digest()


def solve(challenge: str, limit: int = 1 << 28) -> str:
    """A nonce for ``challenge`` (what the page's script does; tests and the bench use it)."""
    difficulty = int(challenge.split(".")[1])
    for n in range(limit):
        if leading_zero_bits(work(challenge, str(n))) >= difficulty:
            return str(n)
    raise ReportError("challenge", "no nonce found within the limit")


def reference(random_bytes: bytes) -> str:
    """An opaque reference to follow a report."""
    return _b64(random_bytes[:REFERENCE_BYTES])


def expired(reported_at: datetime, now: datetime, retention: timedelta = RETENTION) -> bool:
    return now - reported_at >= retention


def _tag(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest()[:16])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def summary(matches: Sequence[Match]) -> str:
    """What the alarm's message says of a report (no reporter, nothing personal)."""
    if not matches:
        return "citizen report: no asset within reach"
    first = matches[0]
    return f"citizen report near {first.asset.asset_id} ({first.distance_m:.0f} m)"
