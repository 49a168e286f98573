"""A release built and signed here is one the agent accepts; mistakes are named."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain.firmware.errors import FirmwareRefused
from domain.firmware.manifest import load_pinned_keys, verify_manifest, verify_part
from edge.firmware.simulator import make_wheel
from provisioning.release import (
    ReleaseError,
    build_release,
    generate_release_key,
    load_release,
    release_manifest_proto,
    sign_release,
)

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(days=90)


def _wheel(tmp_path: Path, version: str = "1.5.0") -> Path:
    name, data = make_wheel(version)
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _build(tmp_path: Path, **kwargs: object) -> Path:
    args: dict[str, object] = {
        "wheel": _wheel(tmp_path),
        "version": "1.5.0",
        "min_orchestrator_version": "1.2.0",
        "expires_at": EXPIRES,
        "out_dir": tmp_path / "releases",
        "created_at": NOW,
    }
    args.update(kwargs)
    return build_release(**args)  # type: ignore[arg-type]


def test_a_built_and_signed_release_is_accepted_by_the_agent(tmp_path: Path) -> None:
    release_dir = _build(tmp_path)
    key_path = tmp_path / "release.key"
    kid = generate_release_key(key_path)
    assert sign_release(release_dir, key_path) == kid
    release = load_release(release_dir)
    pinned = load_pinned_keys([(tmp_path / "release.key.pub").read_bytes()])
    assert list(pinned) == [kid]
    proto = release_manifest_proto(release)
    manifest = verify_manifest(proto.manifest, list(proto.signatures), pinned, "1.4.0", NOW)
    assert (manifest.version, manifest.min_orchestrator_version) == ("1.5.0", "1.2.0")
    assert manifest.expires == EXPIRES
    for part in manifest.parts:
        verify_part(release.parts[part.name], part)
    document = json.loads(release.manifest)
    assert set(document) == {
        "format",
        "version",
        "created",
        "expires",
        "min_orchestrator_version",
        "parts",
        "total_size",
    }


def test_rotation_keeps_one_signature_per_key(tmp_path: Path) -> None:
    release_dir = _build(tmp_path)
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    old_id, new_id = generate_release_key(old), generate_release_key(new)
    sign_release(release_dir, old)
    sign_release(release_dir, new)
    sign_release(release_dir, new)
    assert [s.key_id for s in load_release(release_dir).signatures] == [old_id, new_id]


def test_the_private_key_is_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    key_path = tmp_path / "release.key"
    generate_release_key(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    before = key_path.read_bytes()
    with pytest.raises(ReleaseError) as excinfo:
        generate_release_key(key_path)
    assert excinfo.value.field == "key"
    assert key_path.read_bytes() == before


def test_an_encrypted_key_needs_its_passphrase(tmp_path: Path) -> None:
    release_dir = _build(tmp_path)
    key_path = tmp_path / "release.key"
    kid = generate_release_key(key_path, passphrase=b"correct horse")
    with pytest.raises(ReleaseError, match="not a usable PEM private key"):
        sign_release(release_dir, key_path)
    assert sign_release(release_dir, key_path, passphrase=b"correct horse") == kid


def test_a_release_altered_on_disk_is_not_signed(tmp_path: Path) -> None:
    release_dir = _build(tmp_path)
    key_path = tmp_path / "release.key"
    generate_release_key(key_path)
    (wheel,) = release_dir.glob("*.whl")
    wheel.write_bytes(wheel.read_bytes() + b"x")
    with pytest.raises(ReleaseError) as excinfo:
        sign_release(release_dir, key_path)
    assert excinfo.value.field == f"parts.{wheel.name}"
    assert json.loads((release_dir / "signatures.json").read_text()) == []


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"version": "1.5"}, "version"),
        ({"version": "v1.5.0"}, "version"),
        ({"version": "1.6.0"}, "version"),
        ({"min_orchestrator_version": "latest"}, "min_orchestrator_version"),
        ({"expires_at": NOW - timedelta(days=1)}, "expires_at"),
        ({"expires_at": datetime(2027, 1, 1)}, "expires_at"),
        ({"created_at": datetime(2026, 1, 1)}, "created_at"),
    ],
)
def test_bad_arguments_name_their_field(
    tmp_path: Path, changes: dict[str, object], field: str
) -> None:
    if changes.get("version") == "1.5":
        # 1.5 and 1.5.0 are the same version: accepted.
        assert _build(tmp_path, **changes).name == "ondijon-1.5"
        return
    with pytest.raises(ReleaseError) as excinfo:
        _build(tmp_path, **changes)
    assert excinfo.value.field == field
    assert not (tmp_path / "releases").exists()


def test_the_wheel_must_be_a_wheel(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="is not a file"):
        _build(tmp_path, wheel=tmp_path / "missing.whl")
    (tmp_path / "fake").mkdir()
    fake = tmp_path / "fake" / "ondijon-1.5.0-py3-none-any.whl"
    fake.write_bytes(b"not a zip")
    with pytest.raises(ReleaseError, match="not a zip"):
        _build(tmp_path, wheel=fake)
    odd = tmp_path / "agent.zip"
    odd.write_bytes(b"")
    with pytest.raises(ReleaseError, match="not a wheel file name"):
        _build(tmp_path, wheel=odd)


def test_releases_are_immutable(tmp_path: Path) -> None:
    _build(tmp_path)
    with pytest.raises(ReleaseError) as excinfo:
        _build(tmp_path)
    assert excinfo.value.field == "out_dir"


def test_a_tampered_manifest_is_refused_by_the_agent(tmp_path: Path) -> None:
    release_dir = _build(tmp_path)
    key_path = tmp_path / "release.key"
    generate_release_key(key_path)
    sign_release(release_dir, key_path)
    release = load_release(release_dir)
    pinned = load_pinned_keys([(tmp_path / "release.key.pub").read_bytes()])
    tampered = release.manifest.replace(b"2026-08-02", b"2036-08-02")
    assert tampered != release.manifest
    with pytest.raises(FirmwareRefused, match="bad signature"):
        verify_manifest(tampered, release.signatures, pinned, "1.4.0", NOW)


def test_load_release_reports_missing_pieces(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError) as excinfo:
        load_release(tmp_path)
    assert excinfo.value.field == "release_dir"
    release_dir = _build(tmp_path)
    (release_dir / "signatures.json").write_text("{not json")
    with pytest.raises(ReleaseError, match="unreadable"):
        load_release(release_dir)
    (release_dir / "signatures.json").write_text("[]")
    for wheel in release_dir.glob("*.whl"):
        wheel.unlink()
    with pytest.raises(ReleaseError, match="missing"):
        load_release(release_dir)
