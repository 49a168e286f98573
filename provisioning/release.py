"""Building and signing agent releases (what ``ondijon release build`` runs).

A release directory holds the wheel (the one part), ``manifest.json`` (the canonical JSON
the agent verifies: version, created, expires, min_orchestrator_version, parts with size and
SHA-256, total size) and ``signatures.json`` (Ed25519 signatures of exactly the manifest
bytes, each with the key id the agent pins). Release keys are Ed25519 PKCS#8 PEM files,
created readable by their owner only; keep them off the orchestrator.

The manifest is written with the same :func:`domain.firmware.manifest.canonical_json` the agent
checks it with, and re-parsed by the agent's parser before anything is written, so a
release this module builds is one the agent can read.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.firmware.errors import FirmwareRefused
from domain.firmware.manifest import (
    MANIFEST_FORMAT,
    canonical_json,
    format_instant,
    key_id,
    parse_manifest,
)
from domain.firmware.version import VersionError, parse_version
from foundation.clock import SystemClock
from foundation.errors import FieldError
from foundation.files import fsync_dir, write_atomic
from protos.ondijon.v1 import firmware_pb2

MANIFEST = "manifest.json"
SIGNATURES = "signatures.json"
_WHEEL_NAME = re.compile(
    r"(?P<dist>[A-Za-z0-9_.]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl"
)


class ReleaseError(FieldError):
    """A release cannot be built, signed or read.

    Attributes:
        field: what is wrong, e.g. ``wheel``, ``expires_at``, ``parts.<name>``.
        reason: why.
    """


@dataclass(frozen=True)
class SignatureEntry:
    """One signature of a release's manifest."""

    key_id: str
    signature: bytes


@dataclass(frozen=True)
class Release:
    """A release directory as read back."""

    version: str
    manifest: bytes
    signatures: tuple[SignatureEntry, ...]
    parts: dict[str, Path]


def build_release(
    wheel: Path,
    version: str,
    min_orchestrator_version: str,
    expires_at: datetime,
    out_dir: Path,
    *,
    created_at: datetime | None = None,
) -> Path:
    """Write an unsigned release of ``wheel`` into ``out_dir/ondijon-<version>``.

    Args:
        wheel: the agent wheel (its file name must carry ``version``).
        version: the release version (PEP 440 subset, see ``domain.firmware.version``).
        min_orchestrator_version: oldest orchestrator that may serve this release.
        expires_at: after this instant agents refuse the release (timezone-aware).
        out_dir: where release directories are kept (created if needed).
        created_at: the release's creation instant (default: now, system clock).

    Returns:
        The release directory.

    Raises:
        ReleaseError: an argument is invalid or the release already exists.
    """
    created = created_at or SystemClock().now()
    if created.tzinfo is None:
        raise ReleaseError("created_at", "must be timezone-aware")
    _check_version("version", version)
    _check_version("min_orchestrator_version", min_orchestrator_version)
    if expires_at.tzinfo is None:
        raise ReleaseError("expires_at", "must be timezone-aware")
    if expires_at.replace(microsecond=0) <= created.replace(microsecond=0):
        raise ReleaseError("expires_at", f"{format_instant(expires_at)} is not after the creation")
    _check_wheel(wheel, version)
    release_dir = out_dir / f"ondijon-{version}"
    if release_dir.exists():
        raise ReleaseError("out_dir", f"{release_dir} already exists; releases are immutable")
    data = wheel.read_bytes()
    document = {
        "format": MANIFEST_FORMAT,
        "version": version,
        "created": format_instant(created),
        "expires": format_instant(expires_at),
        "min_orchestrator_version": min_orchestrator_version,
        "parts": [
            {"name": wheel.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        ],
        "total_size": len(data),
    }
    manifest = canonical_json(document)
    try:
        parse_manifest(manifest)
    except FirmwareRefused as exc:
        raise ReleaseError(exc.field, exc.reason) from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".ondijon-{version}.building"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    write_atomic(staging / wheel.name, data)
    write_atomic(staging / MANIFEST, manifest)
    write_atomic(staging / SIGNATURES, b"[]\n")
    os.rename(staging, release_dir)
    fsync_dir(out_dir)
    return release_dir


def generate_release_key(path: Path, *, passphrase: bytes | None = None) -> str:
    """Create an Ed25519 release key at ``path`` (mode 0600) and its public half at
    ``path.pub`` (the PEM agents pin).

    Returns:
        The key id agents will see in signatures.

    Raises:
        ReleaseError: ``path`` already exists (keys are never overwritten).
    """
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        # O_EXCL and the mode at creation: the key is never readable by others, not even
        # for the instant between creating and chmod-ing the file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ReleaseError("key", f"{path} already exists") from exc
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, private)
        os.fsync(fd)
    finally:
        os.close(fd)
    write_atomic(path.with_name(path.name + ".pub"), public)
    return key_id(key.public_key())


def sign_release(
    release_dir: Path, private_key_path: Path, *, passphrase: bytes | None = None
) -> str:
    """Add (or replace) the signature of ``release_dir``'s manifest by a release key.

    The parts are re-hashed first: a release altered on disk is not signed.

    Returns:
        The key id of the signature.

    Raises:
        ReleaseError: the release or the key cannot be read, or a part does not match.
    """
    release = load_release(release_dir)
    manifest = parse_manifest(release.manifest)
    for part in manifest.parts:
        data = release.parts[part.name].read_bytes()
        if len(data) != part.size or hashlib.sha256(data).hexdigest() != part.sha256:
            raise ReleaseError(f"parts.{part.name}", "does not match the manifest")
    key = _load_private_key(private_key_path, passphrase)
    kid = key_id(key.public_key())
    entries = [s for s in release.signatures if s.key_id != kid]
    entries.append(SignatureEntry(kid, key.sign(release.manifest)))
    document = [
        {"key_id": s.key_id, "signature": base64.b64encode(s.signature).decode()} for s in entries
    ]
    write_atomic(release_dir / SIGNATURES, json.dumps(document, indent=1).encode())
    return kid


def load_release(release_dir: Path) -> Release:
    """Read a release directory back (manifest bytes, signatures, part files).

    Raises:
        ReleaseError: a file is missing or malformed.
    """
    try:
        manifest_bytes = (release_dir / MANIFEST).read_bytes()
    except OSError as exc:
        raise ReleaseError("release_dir", f"no readable {MANIFEST} in {release_dir}") from exc
    try:
        manifest = parse_manifest(manifest_bytes)
    except FirmwareRefused as exc:
        raise ReleaseError(exc.field, exc.reason) from exc
    try:
        raw = json.loads((release_dir / SIGNATURES).read_bytes())
        signatures = tuple(
            SignatureEntry(str(s["key_id"]), base64.b64decode(s["signature"], validate=True))
            for s in raw
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReleaseError(SIGNATURES, f"unreadable: {exc}") from exc
    parts = {}
    for part in manifest.parts:
        path = release_dir / part.name
        if not path.is_file():
            raise ReleaseError(f"parts.{part.name}", f"missing from {release_dir}")
        parts[part.name] = path
    return Release(manifest.version, manifest_bytes, signatures, parts)


def release_manifest_proto(release: Release) -> firmware_pb2.ReleaseManifest:
    """The wire form of a release's manifest and signatures."""
    return firmware_pb2.ReleaseManifest(
        manifest=release.manifest,
        signatures=[
            firmware_pb2.ReleaseSignature(key_id=s.key_id, signature=s.signature)
            for s in release.signatures
        ],
    )


def _check_version(field: str, value: str) -> None:
    try:
        parse_version(value)
    except VersionError as exc:
        raise ReleaseError(field, str(exc)) from exc


def _check_wheel(wheel: Path, version: str) -> None:
    if not wheel.is_file():
        raise ReleaseError("wheel", f"{wheel} is not a file")
    match = _WHEEL_NAME.fullmatch(wheel.name)
    if match is None:
        raise ReleaseError("wheel", f"{wheel.name} is not a wheel file name")
    try:
        same = parse_version(match["version"]) == parse_version(version)
    except VersionError:
        same = False
    if not same:
        raise ReleaseError(
            "version", f"{version} does not match the wheel's version {match['version']}"
        )
    try:
        with zipfile.ZipFile(wheel) as archive:
            if not any(n.split("/")[0].endswith(".dist-info") for n in archive.namelist()):
                raise ReleaseError("wheel", f"{wheel.name} has no .dist-info")
    except zipfile.BadZipFile as exc:
        raise ReleaseError("wheel", f"{wheel.name} is not a zip archive") from exc


def _load_private_key(path: Path, passphrase: bytes | None) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReleaseError("key", f"cannot read {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError) as exc:
        raise ReleaseError("key", f"{path} is not a usable PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError("key", f"{path} is not an Ed25519 key")
    return key
