"""The city's operations as an operator runs them: ``ondijon assets import`` shows a diff,
applies it, and a second import changes nothing; a bad line is named and nothing changes;
``ondijon group put`` reaches real agents over mutual TLS with the documented precedence
(Chenôve's program beats the city's), ``group effective`` says where it comes from,
convergence counts who holds it, and ``group override --commune`` lights Chenôve's lamps;
an operator of one commune cannot put a document on the city."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from domain import documents
from domain.city.generator import generate
from domain.city.inventory import AssetKind, to_csv
from edge.identity import enroll
from ondijon.cli import main
from ondijon.client import AdminClient, AdminError
from protos.ondijon.v1 import control_pb2, link_pb2
from tests.conftest import City
from tests.edge.test_agent import running
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def schedule_json(level: int) -> str:
    return json.dumps(
        {
            "programs": [
                {"id": "all-day", "points": [{"local_time": "00:00", "lamp_level": level}]}
            ],
            "rules": [{"program_id": "all-day", "priority": 1}],
        }
    )


async def ondijon(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_the_city_from_inventory_to_lamps(
    city: City, tmp_path: Path, capsys: pytest.CaptureFixture[str], lamp_table: Callable[[int], str]
) -> None:
    profile = ["--profile", str(city.admin.directory)]
    generated = generate(5, cabinets=50, lamps=200, crossings=4, bollard_sites=2)
    # The serial the test agents report (tests.conftest.City.agent_config).
    generated = dataclasses.replace(
        generated,
        assets=tuple(
            dataclasses.replace(a, serial=f"SN-{a.asset_id}") if a.kind is AssetKind.CABINET else a
            for a in generated.assets
        ),
    )
    inventory = tmp_path / "city.csv"
    inventory.write_text(to_csv(generated.assets))

    code, out, _ = await ondijon(capsys, "assets", "import", str(inventory), "--dry-run", *profile)
    assert code == 0 and "256 to add, 0 to change, 0 to remove" in out and "dry run" in out
    code, out, _ = await ondijon(capsys, "assets", "import", str(inventory), "--yes", *profile)
    assert code == 0 and "applied: 256 added" in out
    code, out, _ = await ondijon(capsys, "assets", "import", str(inventory), "--yes", *profile)
    assert code == 0 and "nothing to change" in out

    # A bad line: named, exit 2, nothing changed.
    lines = inventory.read_text().splitlines()
    lamp_line = next(i for i, row in enumerate(lines) if row.startswith("lamp,"))
    lines[lamp_line] = (
        lines[lamp_line]
        .replace(",3000,", ",30,")
        .replace(",2700,", ",30,")
        .replace(",2200,", ",30,")
    )
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join(lines) + "\n")
    code, _, err = await ondijon(capsys, "assets", "import", str(broken), "--yes", *profile)
    assert code == 2 and f"line {lamp_line + 1}, colour_temperature_k: between" in err
    code, out, _ = await ondijon(capsys, "assets", "import", str(inventory), "--dry-run", *profile)
    assert "nothing to change" in out

    # Two real agents: one cabinet of Chenôve, one of Dijon.
    chenove = next(a for a in generated.cabinets if a.commune == "Chenôve").asset_id
    dijon = next(a for a in generated.cabinets if a.commune == "Dijon").asset_id
    configs = []
    for gateway_id in (chenove, dijon):
        token = await AdminClient(city.admin).issue_enrollment_token(
            control_pb2.IssueEnrollmentTokenRequest(gateway_id=gateway_id)
        )
        config = city.agent_config(gateway_id, lamps=lamp_table(2))
        await enroll(config, token.enrollment_token)
        configs.append(config)

    city_file, chenove_file = tmp_path / "city.json", tmp_path / "chenove.json"
    city_file.write_text(schedule_json(40))
    chenove_file.write_text(schedule_json(70))
    async with running(configs[0]) as agent_c, running(configs[1]) as agent_d:
        for agent in (agent_c, agent_d):
            await asyncio.wait_for(agent.link.status.connected.wait(), 15)
        code, out, _ = await ondijon(
            capsys, "group", "put", "schedule", str(city_file), "--city", *profile
        )
        assert code == 0 and "50 gateway(s) covered, 50 given a new version" in out
        code, out, _ = await ondijon(
            capsys, "group", "put", "schedule", str(chenove_file), "--commune", "Chenôve", *profile
        )
        chenove_count = sum(1 for a in generated.cabinets if a.commune == "Chenôve")
        assert code == 0 and f"{chenove_count} gateway(s) covered" in out
        await eventually(lambda: all(lamp.controller.level == 70 for lamp in agent_c.lamps))
        await eventually(lambda: all(lamp.controller.level == 40 for lamp in agent_d.lamps))

        code, out, _ = await ondijon(capsys, "group", "effective", chenove, "schedule", *profile)
        assert code == 0 and "from commune Chenôve" in out and "shadows the city" in out

        async def converged() -> control_pb2.GetConvergenceResponse:
            return await AdminClient(city.admin).get_convergence(
                control_pb2.GetConvergenceRequest(kind=link_pb2.DOCUMENT_KIND_SCHEDULE)
            )

        for _ in range(200):
            result = await converged()
            if result.converged == 2:
                break
            await asyncio.sleep(0.05)
        assert (result.gateways, result.converged, result.offline) == (50, 2, 48)
        assert {g.reason for g in result.lagging} == {"never-connected"}

        # All lamps of Chenôve to 100 % for 2 h.
        code, out, _ = await ondijon(
            capsys,
            "group",
            "override",
            "--commune",
            "Chenôve",
            "--level",
            "100",
            "--hours",
            "2",
            *profile,
        )
        assert code == 0 and f"lamps of {chenove_count} gateway(s) to 100 %" in out
        # The agents run on a manual clock (June 2026) while the override starts now: the
        # agent's answer is what shows the order arrived and was accepted.
        batch = out.split("batch ")[1].split()[0]

        async def progress() -> str:
            return (await ondijon(capsys, "group", "command", batch, *profile))[1]

        for _ in range(200):
            if "1 done" in await progress():
                break
            await asyncio.sleep(0.05)
        assert (
            f"{chenove_count} gateway(s): 1 done, {chenove_count - 1} pending" in await progress()
        )

        code, out, _ = await ondijon(capsys, "fleet", "--commune", "Chenôve", *profile)
        assert code == 0 and out.splitlines()[0].split()[:3] == ["GATEWAY", "COMMUNE", "LINK"]
        rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines()[1:]}
        assert rows[chenove] == ["Chenôve", "online"] and len(rows) == chenove_count

    # An operator of Chenôve cannot put a document on the whole city.
    local = city.operator("chenove-ops", "operator", ["Chenôve"])
    code, _, err = await ondijon(
        capsys,
        "group",
        "put",
        "schedule",
        str(city_file),
        "--city",
        "--profile",
        str(local.directory),
    )
    assert code == 2 and "PERMISSION_DENIED: target.city" in err
    # The same refusal through the typed client keeps the status and names the field.
    schedule = documents.kind_named("schedule")
    with pytest.raises(AdminError) as refused:
        await AdminClient(local).put_group_document(
            control_pb2.PutGroupDocumentRequest(
                target=control_pb2.Target(city=True),
                kind=schedule.number,
                payload=documents.payload_from_json(schedule, schedule_json(70), source="test"),
            )
        )
    assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.field == "target.city"
