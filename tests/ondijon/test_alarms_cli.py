"""``ondijon alarms|energy|playbook`` against a real orchestrator over mutual TLS."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain.alarms import Occurrence
from ondijon.cli import main
from ondijon.client import AdminClient
from orchestrator.alarms.service import apply
from orchestrator.energy.service import EnergyService
from orchestrator.store.database import NewEvent
from protos.ondijon.v1 import control_pb2, link_pb2
from provisioning.profile import Profile
from tests.conftest import City

pytestmark = pytest.mark.integration


async def ondijon(
    capsys: pytest.CaptureFixture[str], profile: Profile, *args: str
) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, [*args, "--profile", str(profile.directory)])
    out, err = capsys.readouterr()
    return code, out, err


async def add_gateway(city: City, gateway_id: str, commune: str) -> None:
    await AdminClient(city.admin).add_gateway(
        control_pb2.AddGatewayRequest(
            gateway_id=gateway_id,
            serial=f"SN-{gateway_id}",
            commune=commune,
            latitude=47.29,
            longitude=5.0,
            time_zone="Europe/Paris",
        ),
    )


async def test_alarms_listed_with_headers_acknowledged_and_refusals_change_nothing(
    city: City, capsys: pytest.CaptureFixture[str]
) -> None:
    await add_gateway(city, "ch-001", "Chenôve")
    runner = city.running.app.runner
    now = datetime.now(UTC)
    occurrences = [Occurrence("ch-001", "cabinet", "mains_lost", True, now, "on battery")]
    occurrences += [
        Occurrence("ch-001", f"lamp-{i:03d}", "lamp_failure", True, now, "dark") for i in range(30)
    ]
    await runner.write(lambda c: apply(c, "Chenôve", occurrences, now))

    code, out, _ = await ondijon(capsys, city.admin, "alarms", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["ID", "SEVERITY", "STATE", "COMMUNE"]
    # Flood control: one row for the cabinet, the thirty lamps under it.
    assert len(lines) == 2 and "mains_lost" in lines[1] and " 30 " in lines[1]
    root = int(lines[1].split()[0])
    code, out, _ = await ondijon(
        capsys, city.admin, "alarms", "list", "--root", str(root), "--json"
    )
    assert code == 0 and len(json.loads(out)["alarms"]) == 30

    code, _, err = await ondijon(capsys, city.admin, "alarms", "shelve", str(root), "--hours", "0")
    assert code == 2 and "until" in err and err.count("\n") == 1
    code, out, _ = await ondijon(
        capsys, city.admin, "alarms", "ack", str(root), "--comment", "Enedis called"
    )
    assert code == 0 and "acknowledged" in out
    code, _, err = await ondijon(capsys, city.admin, "alarms", "ack", str(root))
    assert code == 2 and "already acknowledged" in err
    code, out, _ = await ondijon(capsys, city.admin, "alarms", "list", "--state", "unacknowledged")
    assert code == 0 and len(out.splitlines()) == 1  # headers only: the lamps are grouped


async def test_energy_per_commune_with_the_saving(
    city: City, capsys: pytest.CaptureFixture[str]
) -> None:
    await add_gateway(city, "ch-002", "Chenôve")
    service = EnergyService(city.running.app.runner)
    start = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)  # 17:00 in Dijon, after sunset
    events = []
    for q in range(4 * 8):  # eight hours: full power two hours, then 40 %
        begin = start + timedelta(minutes=15 * q)
        wh = 60 * 0.25 * (1.0 if q < 8 else 0.4)
        attributes = {
            "interval_start": begin.isoformat(),
            "interval_end": (begin + timedelta(minutes=15)).isoformat(),
            "wh": f"{wh:.3f}",
            "on_seconds": "900",
            "covered_seconds": "900",
        }
        event = link_pb2.Event(
            sequence=q + 1,
            device_id="lamp-001",
            type="energy_interval",
            priority=link_pb2.EVENT_PRIORITY_METERING,
            attributes=attributes,
        )
        events.append(
            NewEvent(q + 1, begin, 3, "lamp-001", "energy_interval", event.SerializeToString())
        )
    await city.running.app.runner.write(lambda c: service.on_events(c, "ch-002", events, start))
    code, out, _ = await ondijon(
        capsys, city.admin, "energy", "--since", "2026-12-01", "--until", "2026-12-02"
    )
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["COMMUNE", "LAMPS", "KWH"]
    row = lines[1].split()
    # 2 h at 60 W + 6 h at 24 W = 264 Wh against 8 h at 60 W = 480 Wh: 45 % saved (the
    # night crosses midnight: two local days, one lamp).
    assert row[:3] == ["Chenôve", "1", "0.3"] and row[4] == "0.5" and row[5] == "45.0"
    code, _, err = await ondijon(capsys, city.admin, "energy", "--since", "1 Dec")
    assert code == 2 and "since" in err


async def test_a_playbook_put_started_confirmed_by_a_second_person_and_ended(
    city: City, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    await add_gateway(city, "ch-003", "Chenôve")
    await add_gateway(city, "dj-003", "Dijon")
    book = tmp_path / "snow.json"
    book.write_text(
        json.dumps(
            {
                "name": "snow",
                "title": "Snow night",
                "duration_minutes": 120,
                "actions": [
                    {"kind": "lamps", "level": 100, "target": {"communes": ["Chenôve"]}},
                    {"kind": "bollards", "position": "down", "target": {"city": True}},
                ],
            }
        )
    )
    viewer = city.operator("vic", "viewer", ["*"])
    crisis = city.operator("cris", "crisis", ["*"])
    code, _, err = await ondijon(capsys, viewer, "playbook", "put", str(book))
    assert code == 2 and "PERMISSION_DENIED" in err and err.count("\n") == 1
    plain = city.operator("opal", "operator", ["*"])
    code, _, err = await ondijon(capsys, plain, "playbook", "put", str(book))
    assert code == 2 and "may not run playbooks" in err
    code, out, _ = await ondijon(capsys, city.admin, "playbook", "put", str(book))
    assert code == 0 and "version 1" in out
    code, out, _ = await ondijon(
        capsys, city.admin, "playbook", "start", "snow", "--confirm-by-second", "--json"
    )
    run = json.loads(out)
    assert code == 0 and run["status"] == "awaiting_confirmation"
    assert {s["status"] for s in run["steps"]} == {"NOT_SENT"}
    code, _, err = await ondijon(capsys, city.admin, "playbook", "confirm", run["run_id"])
    assert code == 2 and "second person" in err
    code, out, _ = await ondijon(capsys, crisis, "playbook", "confirm", run["run_id"], "--json")
    confirmed = json.loads(out)
    assert code == 0 and confirmed["status"] == "running"
    assert sorted((s["gateway_id"], s["action"], s["status"]) for s in confirmed["steps"]) == [
        ("ch-003", "bollards down", "PENDING"),
        ("ch-003", "lamps 100%", "PENDING"),
        ("dj-003", "bollards down", "PENDING"),
    ]
    code, out, _ = await ondijon(capsys, viewer, "playbook", "runs")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["RUN", "PLAYBOOK", "STATUS"]
    assert len(lines) == 2 and lines[1].split()[:4] == [run["run_id"], "snow", "v1", "running"]
    assert "cris" in lines[1] and lines[1].split()[-1] == "0/3"
    # A run reaching Chenôve is not listed to an operator of Dijon alone.
    dijon = city.operator("dia", "viewer", ["Dijon"])
    code, out, _ = await ondijon(capsys, dijon, "playbook", "runs", "--json")
    assert code == 0 and json.loads(out) == {}
    code, out, _ = await ondijon(capsys, crisis, "playbook", "end", run["run_id"])
    assert code == 0 and "ended" in out.splitlines()[0]
    code, out, _ = await ondijon(capsys, viewer, "playbook", "runs", "--json")
    assert [(r["run_id"], r["status"]) for r in json.loads(out)["runs"]] == [
        (run["run_id"], "ended")
    ]
    code, out, _ = await ondijon(capsys, viewer, "playbook", "runs", "--ended", "0")
    assert code == 0 and out.splitlines()[1:] == []
    code, _, err = await ondijon(capsys, viewer, "playbook", "runs", "--ended", "500")
    assert code == 2 and "--ended" in err
    code, _, err = await ondijon(capsys, crisis, "playbook", "end", run["run_id"])
    assert code == 2 and "already ended" in err
    entries = await AdminClient(city.admin).list_audit(
        control_pb2.ListAuditRequest(action="playbook.")
    )
    assert [(e.action, e.result) for e in entries.entries] == [
        ("playbook.put", "refused"),
        ("playbook.put", "refused"),
        ("playbook.put", "ok"),
        ("playbook.start", "ok"),
        ("playbook.confirm", "refused"),
        ("playbook.confirm", "ok"),
        ("playbook.end", "ok"),
        ("playbook.end", "refused"),
    ]
