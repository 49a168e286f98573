"""Citizens' reports, the pure core: refusals naming the field, matching against a brute
force reference, the proof of work and its refusals, retention with an injected instant."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from domain.opendata import reports as core
from domain.opendata.reports import AssetPoint, ReportError

AREA = (4.9, 47.2, 5.2, 47.4)
NOW = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)
SECRET = b"k" * 32


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "fire", "latitude": 47.3, "longitude": 5.0}, "kind"),
        ({"kind": "lamp_out", "detail": "stuck_up", "latitude": 47.3, "longitude": 5.0}, "detail"),
        ({"kind": "lamp_out", "latitude": "47.3", "longitude": 5.0}, "latitude"),
        ({"kind": "lamp_out", "latitude": 47.3, "longitude": float("nan")}, "longitude"),
        ({"kind": "lamp_out", "latitude": 48.9, "longitude": 2.3}, "latitude"),
        ({"kind": "lamp_out", "latitude": 47.3, "longitude": 5.0, "email": "a@b.fr"}, "email"),
        ({"kind": "lamp_out", "latitude": 47.3, "longitude": 5.0, "comment": "hi"}, "comment"),
    ],
)
def test_a_bad_report_is_refused_naming_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ReportError) as caught:
        core.parse(body, AREA)
    assert caught.value.field == field


def test_a_report_keeps_ten_metres_of_precision() -> None:
    r = core.parse({"kind": "lamp_out", "latitude": 47.3226123, "longitude": 5.0339987}, AREA)
    assert (r.latitude, r.longitude) == (47.3226, 5.034)


@pytest.mark.parametrize("seed", range(40))
def test_nearest_against_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    assets = [
        AssetPoint(
            rng.choice(["lamp", "bollard_site"]),
            f"a{i:04d}",
            "g",
            f"d{i}",
            "Dijon",
            47.32 + rng.uniform(-0.002, 0.002),
            5.04 + rng.uniform(-0.003, 0.003),
        )
        for i in range(300)
    ]
    report = core.Report(
        rng.choice(list(core.KINDS)),
        "",
        47.32 + rng.uniform(-0.002, 0.002),
        5.04 + rng.uniform(-0.003, 0.003),
    )
    found = core.nearest(report, assets)
    wanted = core.ASSET_OF[report.kind]
    # Reference: equirectangular distance (good to < 0.1 % at 100 m), sorted, within range.
    import math

    def approx(a: AssetPoint) -> float:
        x = math.radians(a.longitude - report.longitude) * math.cos(math.radians(report.latitude))
        y = math.radians(a.latitude - report.latitude)
        return 6_371_008.8 * math.hypot(x, y)

    reference = sorted(
        (approx(a), a.asset_id)
        for a in assets
        if a.kind == wanted and approx(a) <= core.MAX_DISTANCE_M - 0.5
    )
    got = [m.asset.asset_id for m in found]
    assert got[: len(reference[:3])] == [i for _, i in reference[:3]][: len(got)]
    for m in found:
        assert m.distance_m == pytest.approx(approx(m.asset), rel=1e-3)


def test_proof_of_work_is_checked_in_one_hash() -> None:
    challenge = core.issue_challenge(SECRET, NOW, b"salt-salt-salt-1", 10)
    nonce = core.solve(challenge)
    assert core.leading_zero_bits(core.work(challenge, nonce)) >= 10
    spent = core.check_work(SECRET, challenge, nonce, NOW + timedelta(minutes=9), 10)
    assert len(spent) == 32
    bad = next(
        str(n) for n in range(10_000) if core.leading_zero_bits(core.work(challenge, str(n))) < 10
    )
    with pytest.raises(ReportError, match="leading zero bits") as caught:
        core.check_work(SECRET, challenge, bad, NOW, 10)
    assert caught.value.field == "nonce"
    with pytest.raises(ReportError, match="expired"):
        core.check_work(
            SECRET, challenge, nonce, NOW + core.CHALLENGE_TTL + timedelta(seconds=1), 10
        )
    with pytest.raises(ReportError, match="not issued"):
        core.check_work(b"x" * 32, challenge, nonce, NOW, 10)
    forged = challenge.replace(".10.", ".1.", 1)
    with pytest.raises(ReportError, match="not issued"):
        core.check_work(SECRET, forged, nonce, NOW, 1)
    with pytest.raises(ReportError, match="too easy"):
        core.check_work(SECRET, challenge, nonce, NOW, 12)


def test_leading_zero_bits() -> None:
    assert core.leading_zero_bits(bytes([0, 0x10, 0xFF])) == 11
    assert core.leading_zero_bits(bytes([0x80])) == 0
    assert core.leading_zero_bits(bytes(4)) == 32


def test_retention_is_counted_from_the_report() -> None:
    made = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)  # the night of the DST change
    assert not core.expired(made, made + core.RETENTION - timedelta(seconds=1))
    assert core.expired(made, made + core.RETENTION)
    assert core.reference(bytes(range(12))) != core.reference(bytes(range(1, 13)))
