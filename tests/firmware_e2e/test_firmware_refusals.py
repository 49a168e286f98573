"""Each refusal, end to end over mutual TLS: the release goes through the orchestrator, the
campaign offers it, the agent refuses it, keeps running its version and says why; the
campaign halts on it."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from ondijon.client import AdminClient
from orchestrator.store.schema import release_chunks
from protos.ondijon.v1 import control_pb2, firmware_pb2
from tests.conftest import City
from tests.firmware_e2e.conftest import BASE, CabinetFactory, Releases
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def _corrupt_signature(release: Path) -> None:
    path = release / "signatures.json"
    entries = json.loads(path.read_text())
    raw = bytearray(base64.b64decode(entries[0]["signature"]))
    raw[0] ^= 0xFF
    entries[0]["signature"] = base64.b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(entries))


def _corrupt_stored_part(city: City, version: str) -> None:
    # What a tampered (or rotten) store serves: the manifest is intact, the bytes are not.
    engine = city.running.app.runner.store.engine
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(release_chunks).where(release_chunks.c.version == version).limit(1)
        ).one()
        data = bytearray(row.data)
        data[len(data) // 2] ^= 0x01
        conn.execute(
            release_chunks.update()
            .where(release_chunks.c.version == row.version)
            .where(release_chunks.c.part == row.part)
            .where(release_chunks.c.chunk == row.chunk)
            .values(data=bytes(data))
        )


CASES = {
    "bad signature": ("0.2.0", "signatures[0]: bad signature"),
    "unknown key": ("0.2.0", "signed only by unknown keys"),
    "wrong hash": ("0.2.0", "SHA-256 does not match the manifest"),
    "older version": ("0.0.9", "0.0.9 is older than the running 0.1.0"),
    "expired manifest": ("0.2.0", "manifest.expires: release 0.2.0 expired"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_refused_release_keeps_the_running_version(
    case: str, city: City, releases: Releases, cabinets: CabinetFactory
) -> None:
    version, reason = CASES[case]
    now = datetime.now(UTC)
    release = releases.build(
        version,
        key=releases.stranger if case == "unknown key" else None,
        expires=now + timedelta(hours=1) if case == "expired manifest" else None,
    )
    if case == "bad signature":
        _corrupt_signature(release)
    await releases.upload(release)
    if case == "wrong hash":
        _corrupt_stored_part(city, version)
    cabinet = await cabinets(city, "dj-ref-1")
    if case == "expired manifest":
        # A captured offer replayed after its expiry: the agent's own clock judges it.
        cabinet.clock.set(now + timedelta(hours=2))

    campaign_id = await releases.campaign(version, ["dj-ref-1"])
    outcome = await releases.reaches(campaign_id, "dj-ref-1", firmware_pb2.FIRMWARE_STAGE_REFUSED)

    assert reason in outcome.detail
    assert outcome.running_version == BASE

    async def halted() -> bool:
        campaign = await releases.show(campaign_id)
        return campaign.status == firmware_pb2.CAMPAIGN_STATUS_HALTED

    await eventually(halted)
    assert cabinet.agent is not None and cabinet.agent.firmware_version == BASE
    # Nothing installed, no trial: the next boot is the base install as before.
    assert cabinet.slot_state().get("trial") is None
    assert not (cabinet.state_dir / "slots" / "a").exists()
    assert cabinet.boot_step() == "base"
    assert not cabinet.restart_requested.is_set()

    # The refusal is an alarm in the control centre's event log too.
    async def alarmed() -> bool:
        response = await AdminClient(city.admin).list_events(
            control_pb2.ListEventsRequest(gateway_id="dj-ref-1")
        )
        return any(e.event.type == "firmware.refused" for e in response.events)

    await eventually(alarmed)
