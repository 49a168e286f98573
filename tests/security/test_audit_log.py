"""The audit log: every write through the admin API and every enrollment and renewal lands
in it (who, what, where, when, result), refusals included; it is read with ListAudit
(filtered, paged, scoped to the reader's communes) and exported as CSV or JSON lines
(orchestrator/audit/log.py, identity_admin.py, ondijon/audit.py)."""

from __future__ import annotations

import asyncio
import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.identity import enroll
from ondijon.admin import lamp_override
from ondijon.cli import main
from ondijon.client import AdminClient, AdminError
from orchestrator.audit.log import clean
from protos.ondijon.v1 import control_pb2, enrollment_pb2, enrollment_pb2_grpc, link_pb2
from provisioning.ca import make_csr, new_private_key
from tests.conftest import City
from tests.edge.test_agent import lighting
from tests.security.conftest import gateway_channel

pytestmark = pytest.mark.integration


async def audit(city: City, **filters: object) -> list[control_pb2.AuditEntry]:
    response = await AdminClient(city.admin).list_audit(control_pb2.ListAuditRequest(**filters))  # type: ignore[arg-type]
    return list(response.entries)


async def test_every_write_lands_in_the_audit_log(city: City) -> None:
    started = datetime.now(UTC) - timedelta(seconds=1)
    token = await city.register("dj-001", "Dijon")
    config = city.agent_config("dj-001")
    await enroll(config, token)
    await AdminClient(city.admin).put_desired_state(
        control_pb2.PutDesiredStateRequest(
            gateway_id="dj-001", kind=link_pb2.DOCUMENT_KIND_SCHEDULE, payload=lighting(50)
        ),
    )
    await AdminClient(city.admin).send_command(
        control_pb2.SendCommandRequest(gateway_id="dj-001", command=lamp_override(100, 5, 10, [])),
    )
    async with gateway_channel(city, config) as chan:
        await enrollment_pb2_grpc.EnrollmentStub(chan).Renew(
            enrollment_pb2.RenewRequest(csr_pem=make_csr(new_private_key(), "dj-001"))
        )
    await AdminClient(city.admin).issue_enrollment_token(
        control_pb2.IssueEnrollmentTokenRequest(gateway_id="dj-001"),
    )
    await AdminClient(city.admin).revoke_gateway(
        control_pb2.RevokeGatewayRequest(gateway_id="dj-001", reason="cessation-of-operation"),
    )
    entries = [e for e in await audit(city) if e.target.startswith("dj-001")]
    assert [(e.action, e.result) for e in entries] == [
        ("gateway.add", "ok"),
        ("gateway.enroll", "ok"),
        ("desired_state.put", "ok"),
        ("command.send", "ok"),
        ("gateway.renew", "ok"),
        ("gateway.token", "ok"),
        ("gateway.revoke", "ok"),
    ]
    admin = "spiffe://ondijon/operator/admin"
    gateway = "spiffe://ondijon/gateway/dj-001"
    assert [e.actor for e in entries] == [admin, gateway, admin, admin, gateway, admin, admin]
    assert {e.commune for e in entries} == {"Dijon"}
    now = datetime.now(UTC)
    assert all(started <= e.at.ToDatetime(tzinfo=UTC) <= now for e in entries)
    assert "cessation-of-operation" in entries[-1].detail


async def test_a_command_is_queued_with_its_audit_entry_in_one_commit(city: City) -> None:
    """The command and its entry commit together: the command leaves for the gateway one
    commit sooner (a commit waits for the disk), and is never queued without its entry."""
    await city.register("dj-001", "Dijon")
    runner = city.running.app.runner
    admin = AdminClient(city.admin)
    commits, sent = [], []
    for _ in range(3):  # other work may commit meanwhile: the fewest is the command's own
        before = runner.commits
        answer = await admin.send_command(
            control_pb2.SendCommandRequest(
                gateway_id="dj-001", command=lamp_override(90, 5, 10, [])
            )
        )
        commits.append(runner.commits - before)
        sent.append(f"dj-001/{answer.command_id}")
    assert min(commits) == 1
    entries = [e for e in await audit(city) if e.action == "command.send"]
    assert [(e.target, e.result) for e in entries] == [(target, "ok") for target in sent]


async def test_the_log_is_filtered_paged_and_scoped(city: City) -> None:
    await city.register("dj-001", "Dijon")
    await city.register("ta-001", "Talant")
    with pytest.raises(AdminError):
        await AdminClient(city.admin).revoke_gateway(
            control_pb2.RevokeGatewayRequest(gateway_id="zz")
        )
    everything = await audit(city)
    assert len(everything) >= 4  # two operators added locally, two gateways, a refusal

    assert [e.target for e in await audit(city, action="gateway.")] == ["dj-001", "ta-001", "zz"]
    assert [e.action for e in await audit(city, result="refused")] == ["gateway.revoke"]
    assert [e.target for e in await audit(city, gateway_id="ta-001")] == ["ta-001"]
    later = await audit(city, since=everything[-1].at)
    assert everything[-1].id in [e.id for e in later]
    assert await audit(city, until=everything[0].at) == []

    paged: list[int] = []
    after = 0
    while True:
        page = await AdminClient(city.admin).list_audit(
            control_pb2.ListAuditRequest(after_id=after, limit=2)
        )
        if not page.entries:
            break
        paged += [e.id for e in page.entries]
        after = page.next_after_id
    assert paged == [e.id for e in everything]

    talant_admin = city.operator("tara", "admin", ["Talant"])
    seen = await AdminClient(talant_admin).list_audit(control_pb2.ListAuditRequest())
    assert {e.commune for e in seen.entries} == {"Talant"}


async def test_export_as_csv_and_json_lines(city: City, tmp_path: Path) -> None:
    await city.register("dj-001", "Dijon")
    # Text typed by a caller is kept, defused: no formula for a spreadsheet, no fake line.
    for hostile in ("=HYPERLINK(1)", "a\nforged line"):
        with pytest.raises(AdminError):
            await AdminClient(city.admin).revoke_gateway(
                control_pb2.RevokeGatewayRequest(gateway_id=hostile)
            )
    profile = str(city.admin.directory)
    out_csv, out_jsonl = tmp_path / "audit.csv", tmp_path / "audit.jsonl"
    for fmt, out in (("csv", out_csv), ("jsonl", out_jsonl)):
        argv = ["audit", "export", "--profile", profile, "--format", fmt, "--output", str(out)]
        assert await asyncio.to_thread(main, argv) == 0

    with out_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    lines = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert [r["id"] for r in rows] == [str(line["id"]) for line in lines]
    assert [line["id"] for line in lines] == sorted(line["id"] for line in lines)
    assert rows[-2]["target"] == "'=HYPERLINK(1)"
    assert lines[-2]["target"] == "=HYPERLINK(1)"
    assert lines[-1]["target"] == "a\\nforged line"
    assert len(out_csv.read_text().splitlines()) == len(rows) + 1
    assert set(lines[0]) == {"id", "at", "actor", "action", "target", "commune", "result", "detail"}

    since = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    argv = ["audit", "export", "--profile", profile, "--since", since, "--output", str(out_jsonl)]
    assert await asyncio.to_thread(main, argv) == 0
    assert out_jsonl.read_text() == ""


def test_entries_are_cut_to_size_and_free_of_control_characters() -> None:
    assert clean("ok", 10) == "ok"
    assert clean("a\r\nb\x00c", 20) == "a\\r\\nb\\x00c"
    assert clean("x" * 300, 256) == "x" * 256
