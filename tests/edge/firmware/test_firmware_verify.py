"""The agent refuses every release it must not install, and says why."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.firmware.errors import FirmwareRefused
from domain.firmware.manifest import (
    Part,
    canonical_json,
    key_id,
    load_pinned_keys,
    parse_manifest,
    pinned_key_bytes,
    verify_manifest,
    verify_part,
)
from edge.firmware.simulator import ReleaseSimulator, SignatureEntry
from protos.ondijon.v1 import firmware_pb2

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


@pytest.fixture
def sim() -> ReleaseSimulator:
    return ReleaseSimulator()


def _refusal(excinfo: pytest.ExceptionInfo[FirmwareRefused]) -> tuple[str, str]:
    return excinfo.value.field, excinfo.value.reason


def test_a_good_release_is_accepted_and_parsed(sim: ReleaseSimulator) -> None:
    release = sim.publish("1.5.0", created=NOW - timedelta(hours=1))
    manifest = verify_manifest(release.manifest, release.signatures, sim.pinned, "1.4.2", NOW)
    assert manifest.version == "1.5.0"
    (part,) = manifest.parts
    data = release.parts[part.name]
    assert (part.size, part.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert manifest.total_size == len(data)


def test_protobuf_signatures_are_accepted(sim: ReleaseSimulator) -> None:
    release = sim.publish("1.5.0", created=NOW)
    proto = firmware_pb2.ReleaseManifest(
        manifest=release.manifest,
        signatures=[
            firmware_pb2.ReleaseSignature(key_id=s.key_id, signature=s.signature)
            for s in release.signatures
        ],
    )
    manifest = verify_manifest(proto.manifest, list(proto.signatures), sim.pinned, "1.4.0", NOW)
    assert manifest.version == "1.5.0"


def test_an_altered_manifest_is_refused_as_bad_signature(sim: ReleaseSimulator) -> None:
    release = sim.publish("1.5.0", created=NOW)
    altered = release.manifest.replace(b'"1.5.0"', b'"1.6.0"')
    with pytest.raises(FirmwareRefused) as excinfo:
        verify_manifest(altered, release.signatures, sim.pinned, "1.4.0", NOW)
    assert excinfo.value.field == "signatures[0]"
    assert "bad signature" in excinfo.value.reason


def test_a_release_signed_by_an_unknown_key_is_refused(sim: ReleaseSimulator) -> None:
    release = sim.publish("1.5.0", created=NOW)
    other = ReleaseSimulator()
    with pytest.raises(FirmwareRefused) as excinfo:
        verify_manifest(release.manifest, release.signatures, other.pinned, "1.4.0", NOW)
    assert excinfo.value.field == "signatures"
    assert "unknown keys" in excinfo.value.reason
    assert release.signatures[0].key_id in excinfo.value.reason


def test_an_unsigned_release_is_refused(sim: ReleaseSimulator) -> None:
    release = sim.publish("1.5.0", created=NOW)
    with pytest.raises(FirmwareRefused, match="not signed"):
        verify_manifest(release.manifest, [], sim.pinned, "1.4.0", NOW)


def test_key_rotation_accepts_releases_signed_by_either_pinned_key(sim: ReleaseSimulator) -> None:
    new = ReleaseSimulator()
    old_release = sim.publish("1.5.0", created=NOW)
    new_release = new.publish("1.6.0", created=NOW)
    both = {**sim.pinned, **new.pinned}
    assert verify_manifest(old_release.manifest, old_release.signatures, both, "1.4.0", NOW)
    assert verify_manifest(new_release.manifest, new_release.signatures, both, "1.4.0", NOW)


def test_threshold_counts_distinct_pinned_keys_only(sim: ReleaseSimulator) -> None:
    second = Ed25519PrivateKey.generate()
    release = sim.publish("1.5.0", created=NOW)
    pinned = {**sim.pinned, key_id(second.public_key()): second.public_key()}
    duplicated = release.signatures * 2
    with pytest.raises(FirmwareRefused) as excinfo:
        verify_manifest(release.manifest, duplicated, pinned, "1.4.0", NOW, threshold=2)
    assert _refusal(excinfo) == ("signatures", "1 valid signature(s) by pinned keys, 2 required")
    cosigned = [
        *release.signatures,
        SignatureEntry(key_id(second.public_key()), second.sign(release.manifest)),
    ]
    assert verify_manifest(release.manifest, cosigned, pinned, "1.4.0", NOW, threshold=2)


def test_a_valid_signature_outweighs_a_bad_one_from_another_key(sim: ReleaseSimulator) -> None:
    second = Ed25519PrivateKey.generate()
    release = sim.publish("1.5.0", created=NOW)
    pinned = {**sim.pinned, key_id(second.public_key()): second.public_key()}
    forged = SignatureEntry(key_id(second.public_key()), b"\0" * 64)
    manifest = verify_manifest(
        release.manifest, [forged, *release.signatures], pinned, "1.4.0", NOW
    )
    assert manifest.version == "1.5.0"


def test_raw_pinned_keys_must_match_their_id(sim: ReleaseSimulator) -> None:
    release = sim.publish("1.5.0", created=NOW)
    raw = sim.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert verify_manifest(release.manifest, release.signatures, {key_id(raw): raw}, "1.4.0", NOW)
    with pytest.raises(FirmwareRefused, match="key id does not match"):
        verify_manifest(release.manifest, release.signatures, {"0" * 16: raw}, "1.4.0", NOW)


def test_an_expired_release_is_refused(sim: ReleaseSimulator) -> None:
    release = sim.publish("1.5.0", created=NOW - timedelta(days=40), lifetime=timedelta(days=30))
    with pytest.raises(FirmwareRefused) as excinfo:
        verify_manifest(release.manifest, release.signatures, sim.pinned, "1.4.0", NOW)
    assert excinfo.value.field == "manifest.expires"
    assert "expired at 2026-04-24T10:00:00Z" in excinfo.value.reason


def test_an_older_version_is_refused_unless_downgrade_is_allowed(sim: ReleaseSimulator) -> None:
    release = sim.publish("1.3.9", created=NOW)
    with pytest.raises(FirmwareRefused) as excinfo:
        verify_manifest(release.manifest, release.signatures, sim.pinned, "1.4.0", NOW)
    assert excinfo.value.field == "manifest.version"
    assert "older than the running 1.4.0" in excinfo.value.reason
    manifest = verify_manifest(
        release.manifest, release.signatures, sim.pinned, "1.4.0", NOW, allow_downgrade=True
    )
    assert manifest.version == "1.3.9"


def test_the_running_version_is_refused_even_with_downgrade_allowed(sim: ReleaseSimulator) -> None:
    release = sim.publish("1.4.0", created=NOW)
    with pytest.raises(FirmwareRefused, match="already running"):
        verify_manifest(
            release.manifest, release.signatures, sim.pinned, "1.4", NOW, allow_downgrade=True
        )


def test_an_unparseable_running_version_is_named(sim: ReleaseSimulator) -> None:
    release = sim.publish("1.5.0", created=NOW)
    with pytest.raises(FirmwareRefused) as excinfo:
        verify_manifest(release.manifest, release.signatures, sim.pinned, "dev", NOW)
    assert excinfo.value.field == "running_version"


def _document(**changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "format": 1,
        "version": "1.5.0",
        "created": "2026-05-01T00:00:00Z",
        "expires": "2026-06-01T00:00:00Z",
        "min_orchestrator_version": "1.0.0",
        "parts": [{"name": "a.whl", "size": 3, "sha256": "ab" * 32}],
        "total_size": 3,
    }
    document.update(changes)
    return document


@pytest.mark.parametrize(
    "document, field",
    [
        (_document(format=2), "manifest.format"),
        (_document(version="v1.5"), "manifest.version"),
        (_document(version=15), "manifest.version"),
        (_document(min_orchestrator_version=None), "manifest.min_orchestrator_version"),
        (_document(created="2026-05-01 00:00:00"), "manifest.created"),
        (_document(expires="2026-04-01T00:00:00Z"), "manifest.expires"),
        (_document(parts=[]), "manifest.parts"),
        (
            _document(parts=[{"name": "../x", "size": 3, "sha256": "ab" * 32}]),
            "manifest.parts[0].name",
        ),
        (
            _document(parts=[{"name": "a", "size": True, "sha256": "ab" * 32}]),
            "manifest.parts[0].size",
        ),
        (
            _document(parts=[{"name": "a", "size": 3, "sha256": "AB" * 32}]),
            "manifest.parts[0].sha256",
        ),
        (_document(parts=[{"name": "a", "size": 3}]), "manifest.parts[0]"),
        (_document(total_size=4), "manifest.total_size"),
        (
            _document(parts=[{"name": "a", "size": 1, "sha256": "ab" * 32}] * 2, total_size=2),
            "manifest.parts",
        ),
    ],
)
def test_a_malformed_manifest_names_the_field(document: dict[str, object], field: str) -> None:
    key = Ed25519PrivateKey.generate()
    data = canonical_json(document)
    signature = SignatureEntry(key_id(key.public_key()), key.sign(data))
    pinned = {key_id(key.public_key()): key.public_key()}
    with pytest.raises(FirmwareRefused) as excinfo:
        verify_manifest(data, [signature], pinned, "1.0.0", NOW)
    assert excinfo.value.field == field


def test_non_canonical_or_non_json_bytes_are_refused() -> None:
    with pytest.raises(FirmwareRefused, match="canonical"):
        parse_manifest(json.dumps(_document(), indent=2).encode())
    with pytest.raises(FirmwareRefused, match="JSON"):
        parse_manifest(b"\xff\xfe")
    with pytest.raises(FirmwareRefused, match="object"):
        parse_manifest(b"[]")


def test_verify_part_checks_size_then_hash(tmp_path: Path) -> None:
    path = tmp_path / "a.whl"
    path.write_bytes(b"abc")
    good = Part("a.whl", 3, hashlib.sha256(b"abc").hexdigest())
    verify_part(path, good)
    with pytest.raises(FirmwareRefused, match="size is 3 bytes, manifest says 4"):
        verify_part(path, Part("a.whl", 4, good.sha256))
    with pytest.raises(FirmwareRefused, match="SHA-256"):
        verify_part(path, Part("a.whl", 3, "0" * 64))
    with pytest.raises(FirmwareRefused, match="does not exist"):
        verify_part(tmp_path / "missing", good)


def test_pinned_keys_load_from_pem(sim: ReleaseSimulator) -> None:
    pem = sim.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert load_pinned_keys([pem]).keys() == sim.pinned.keys()
    with pytest.raises(FirmwareRefused) as excinfo:
        load_pinned_keys([pem, b"not a key"])
    assert excinfo.value.field == "pinned_keys[1]"


def test_the_agent_holds_its_pinned_keys_as_raw_bytes_with_the_same_ids_and_refusals(
    sim: ReleaseSimulator,
) -> None:
    # The agent reads them at start without loading cryptography (edge/firmware/agent_side.py).
    pem = sim.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw = sim.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    other = Ed25519PrivateKey.generate().public_key()
    other_pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    both = pinned_key_bytes([pem.replace(b"\n", b"\r\n"), b"\n" + other_pem])
    assert both == {
        kid: key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        for kid, key in load_pinned_keys([pem, other_pem]).items()
    }
    assert both[key_id(raw)] == raw
    release = sim.publish("1.5.0", created=NOW)
    manifest = verify_manifest(release.manifest, release.signatures, both, "1.4.0", NOW)
    assert manifest.version == "1.5.0"
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for bad in (b"not a key", ec_pem, pem.replace(b"PUBLIC KEY", b"CERTIFICATE")):
        with pytest.raises(FirmwareRefused) as raw_refusal:
            pinned_key_bytes([pem, bad])
        with pytest.raises(FirmwareRefused) as full_refusal:
            load_pinned_keys([pem, bad])
        assert str(raw_refusal.value) == str(full_refusal.value)
        assert raw_refusal.value.field == "pinned_keys[1]"


@dataclass
class _Sig:
    key_id: str
    signature: bytes


def test_manifest_part_lookup(sim: ReleaseSimulator) -> None:
    release = sim.publish("1.5.0", created=NOW)
    manifest = verify_manifest(
        release.manifest,
        [_Sig(s.key_id, s.signature) for s in release.signatures],
        sim.pinned,
        "1.0.0",
        NOW,
    )
    assert manifest.part(manifest.parts[0].name) == manifest.parts[0]
    with pytest.raises(FirmwareRefused, match="no part"):
        manifest.part("other")
