"""The orchestrator's side of releases and campaign rows, without a network: what an upload
must be to be stored, and how gateway reports merge into a campaign."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain.firmware.manifest import MANIFEST_FORMAT, canonical_json, format_instant
from edge.firmware.simulator import ReleaseSimulator, SignatureEntry
from orchestrator.firmware.releases import UploadError, receive_upload
from orchestrator.store.database import Store
from orchestrator.store.releases import (
    CHUNK_BYTES,
    CampaignGatewayRecord,
    CampaignRecord,
    FirmwareStore,
    Report,
)
from protos.ondijon.v1 import firmware_pb2

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
Stage = firmware_pb2.FirmwareStage


def _release(size: int = 300_000) -> tuple[firmware_pb2.ReleaseManifest, str, bytes]:
    sim = ReleaseSimulator()
    release = sim.publish(
        "0.2.0", created=NOW, files={"big.bin": bytes(range(256)) * (size // 256)}
    )
    ((name, data),) = release.parts.items()
    manifest = firmware_pb2.ReleaseManifest(
        manifest=release.manifest,
        signatures=[
            firmware_pb2.ReleaseSignature(key_id=s.key_id, signature=s.signature)
            for s in release.signatures
        ],
    )
    return manifest, name, data


async def _stream(
    manifest: firmware_pb2.ReleaseManifest | None, chunks: list[tuple[str, int, bytes]]
) -> AsyncIterator[firmware_pb2.UploadReleaseRequest]:
    if manifest is not None:
        yield firmware_pb2.UploadReleaseRequest(manifest=manifest)
    for part, offset, data in chunks:
        yield firmware_pb2.UploadReleaseRequest(
            chunk=firmware_pb2.ReleaseChunk(part=part, offset=offset, data=data)
        )


def _in_pieces(name: str, data: bytes, size: int = 100_000) -> list[tuple[str, int, bytes]]:
    return [(name, o, data[o : o + size]) for o in range(0, len(data), size)]


async def test_a_complete_signed_upload_is_stored_in_chunks() -> None:
    manifest, name, data = _release()
    release, parts = await receive_upload(
        _stream(manifest, _in_pieces(name, data)), now=NOW, uploaded_by="admin"
    )
    assert release.version == "0.2.0" and release.total_size == len(data)
    assert [len(c) for c in parts[name][:-1]] == [CHUNK_BYTES] * (len(data) // CHUNK_BYTES)
    assert b"".join(parts[name]) == data


async def test_uploads_are_refused_naming_the_field() -> None:
    manifest, name, data = _release()
    cases: list[tuple[str, AsyncIterator[firmware_pb2.UploadReleaseRequest], datetime]] = [
        ("manifest", _stream(None, _in_pieces(name, data)), NOW),
        ("manifest.expires", _stream(manifest, _in_pieces(name, data)), NOW + timedelta(days=31)),
        (f"parts.{name}", _stream(manifest, _in_pieces(name, data)[1:]), NOW),
        (f"parts.{name}", _stream(manifest, _in_pieces(name, data)[:-1]), NOW),
        (f"parts.{name}", _stream(manifest, _in_pieces(name, data[:-1] + b"x")), NOW),
        ("chunk.part", _stream(manifest, [("other.whl", 0, b"x")]), NOW),
    ]
    unsigned = firmware_pb2.ReleaseManifest(manifest=manifest.manifest)
    cases.append(("signatures", _stream(unsigned, _in_pieces(name, data)), NOW))
    for field, stream, now in cases:
        with pytest.raises(UploadError) as excinfo:
            await receive_upload(stream, now=now, uploaded_by="admin")
        assert excinfo.value.field == field, excinfo.value


async def test_a_release_for_a_newer_orchestrator_is_refused() -> None:
    part = {
        "name": "ondijon-0.3.0-py3-none-any.whl",
        "size": 3,
        "sha256": hashlib.sha256(b"abc").hexdigest(),
    }
    document = {
        "format": MANIFEST_FORMAT,
        "version": "0.3.0",
        "created": format_instant(NOW),
        "expires": format_instant(NOW + timedelta(days=1)),
        "min_orchestrator_version": "9.0.0",
        "parts": [part],
        "total_size": 3,
    }
    signature = SignatureEntry("0" * 16, b"\0" * 64)
    manifest = firmware_pb2.ReleaseManifest(
        manifest=canonical_json(document),
        signatures=[
            firmware_pb2.ReleaseSignature(key_id=signature.key_id, signature=signature.signature)
        ],
    )
    with pytest.raises(UploadError, match=r"needs orchestrator 9\.0\.0") as excinfo:
        await receive_upload(_stream(manifest, []), now=NOW, uploaded_by="admin")
    assert excinfo.value.field == "manifest.min_orchestrator_version"


def test_reports_merge_newest_first_and_outcomes_stay(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'o.db'}")
    firmware = FirmwareStore()
    record = CampaignRecord(
        "c-1", "0.2.0", "native", "running", 0, {}, {}, (), (), (), 0, NOW, "me", NOW
    )
    row = CampaignGatewayRecord("c-1", "gw-1", 0, 0, "Dijon", NOW, 0, "", 0, "", None)
    with store.engine.begin() as conn:
        firmware.add_campaign(conn, record, [row])

    def report(stage: int, minutes: int, done: int = 0, gateway: str = "gw-1") -> bool:
        with store.engine.begin() as conn:
            at = NOW + timedelta(minutes=minutes)
            return firmware.record_report(conn, "c-1", gateway, Report(stage, "", at, done))

    assert report(Stage.FIRMWARE_STAGE_DOWNLOADING, 1, 100)
    assert report(Stage.FIRMWARE_STAGE_DOWNLOADING, 1, 200)  # same instant, further along
    assert not report(Stage.FIRMWARE_STAGE_DOWNLOADING, 1, 200)  # replayed: no change
    assert not report(Stage.FIRMWARE_STAGE_VERIFIED, 0)  # older
    assert report(Stage.FIRMWARE_STAGE_COMMITTED, 2)
    assert not report(Stage.FIRMWARE_STAGE_DOWNLOADING, 3)  # progress never undoes an outcome
    assert not report(Stage.FIRMWARE_STAGE_COMMITTED, 3, gateway="gw-9")  # not a target
    with store.engine.begin() as conn:
        (held,) = firmware.campaign_gateways(conn, "c-1")
        assert held.stage == Stage.FIRMWARE_STAGE_COMMITTED
        # A second replica that read revision 0 cannot overwrite a save made since.
        assert firmware.save_campaign(conn, record, expected_revision=0, offered={})
        assert not firmware.save_campaign(conn, record, expected_revision=0, offered={})
    store.close()
