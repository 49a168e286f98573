"""``ondijon opendata export``: the export written from a real store, atomically (power cut
at each step leaves the last good export current), and the daily export's time across DST."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from domain.city.generator import generate
from domain.city.inventory import diff
from ondijon.cli import main
from orchestrator.public.daily import next_run
from orchestrator.public.export import Export, publish
from orchestrator.store import assets as asset_sql
from orchestrator.store.database import Store
from tests.opendata_checks import validate_export

PARIS = ZoneInfo("Europe/Paris")


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_the_command_exports_a_city(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "orchestrator.db"
    store = Store.open(f"sqlite:///{db}")
    with store.engine.begin() as conn:
        asset_sql.apply_diff(
            conn,
            diff({}, generate(3, cabinets=50, lamps=400, crossings=5, bollard_sites=4).assets),
            now=datetime.now(UTC),
        )
    store.close()
    config = tmp_path / "orchestrator.toml"
    config.write_text('[store]\nurl = "sqlite:///orchestrator.db"\n[public]\nlicence = "odbl"\n')
    assert main(["opendata", "export", "--config", str(config), "--out", str(tmp_path / "od")]) == 0
    assert "files" in capsys.readouterr().out
    files = read_tree(tmp_path / "od" / "current")
    rows = validate_export(files)
    assert len(rows["streetlights"]) == 400
    catalogue = json.loads(files["catalogue.jsonld"])
    assert catalogue["dct:rights"].startswith("Open Database License")
    # Files are for everyone to read, whatever the umask.
    assert (tmp_path / "od" / "current" / "energy.csv").stat().st_mode & 0o777 == 0o644


class Cut(Exception):
    pass


@pytest.mark.parametrize("point", ["export:written", "export:linked"])
def test_a_cut_export_never_replaces_the_last_good_one(tmp_path: Path, point: str) -> None:
    at = datetime(2026, 12, 7, 2, 30, tzinfo=UTC)
    good = Export({"energy.csv": b"old\r\n", "schemas/a.json": b"{}"}, at)
    publish(tmp_path, good)
    newer = Export({"energy.csv": b"new\r\n", "schemas/a.json": b"{}"}, at + timedelta(days=1))

    def crash(step: str) -> None:
        if step == point:
            raise Cut(step)

    with pytest.raises(Cut):
        publish(tmp_path, newer, crash=crash)
    assert (tmp_path / "current" / "energy.csv").read_bytes() == b"old\r\n"
    # The next export goes through and cleans up what the cut left.
    third = Export({"energy.csv": b"third\r\n"}, at + timedelta(days=2))
    publish(tmp_path, third)
    assert (tmp_path / "current" / "energy.csv").read_bytes() == b"third\r\n"
    assert sorted(os.listdir(tmp_path)) == ["current", "exports"]
    assert len(list((tmp_path / "exports").iterdir())) <= 2


@pytest.mark.parametrize(
    ("now", "expected_local"),
    [
        (datetime(2026, 12, 7, 1, 0, tzinfo=UTC), datetime(2026, 12, 7, 3, 30)),
        (datetime(2026, 12, 7, 3, 0, tzinfo=UTC), datetime(2026, 12, 8, 3, 30)),
        (datetime(2026, 12, 31, 23, 59, tzinfo=UTC), datetime(2027, 1, 1, 3, 30)),
        # 29 March 2026: 02:00-03:00 does not exist; 03:30 CEST is 01:30 UTC.
        (datetime(2026, 3, 29, 0, 0, tzinfo=UTC), datetime(2026, 3, 29, 3, 30)),
        # 25 October 2026: 02:00-03:00 happens twice; 03:30 CET is 02:30 UTC.
        (datetime(2026, 10, 25, 0, 0, tzinfo=UTC), datetime(2026, 10, 25, 3, 30)),
    ],
)
def test_the_daily_export_time_across_midnight_and_dst(
    now: datetime, expected_local: datetime
) -> None:
    when = next_run(now, time(3, 30), PARIS)
    assert when > now
    assert when.astimezone(PARIS).replace(tzinfo=None) == expected_local
    assert when - now <= timedelta(hours=25)
