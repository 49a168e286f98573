"""Release verification on the agent: the I/O-free gate every firmware offer goes through.

Rules, in the order they are applied (after python-tuf's trusted metadata set):

1. Signatures are checked on the exact manifest bytes *before* they are parsed. Each
   signature names a key id (hex SHA-256 of the raw public key, first 16 characters); only
   keys pinned in the agent's configuration count, each at most once. Several keys may be
   pinned at once so a release key can be rotated: releases signed by the old and the new
   key are both accepted while both are pinned. Fewer than ``threshold`` valid signatures
   refuses the release (``signatures``).
2. The manifest must be well formed canonical JSON with every field typed (``manifest.*``).
3. A manifest past its ``expires`` instant is refused, so a captured old offer cannot be
   replayed forever (TUF's freeze attack).
4. The release version must be newer than the running one (anti-rollback); the same
   version is refused; an older one only with ``allow_downgrade`` (an operator's decision
   carried in the offer).

:func:`verify_part` then checks a downloaded part's size and SHA-256 against the manifest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from domain.firmware.errors import FirmwareRefused

if TYPE_CHECKING:
    # Loaded to verify a signature: a cabinet agent between firmware offers never needs
    # cryptography (~9 MiB on a Pi-class board), its pinned keys held as raw bytes.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from domain.firmware.version import VersionError, parse_version

MANIFEST_FORMAT = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PART_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


class Signature(Protocol):
    """A signature over the manifest bytes; ``firmware_pb2.ReleaseSignature`` is one."""

    @property
    def key_id(self) -> str: ...

    @property
    def signature(self) -> bytes: ...


@dataclass(frozen=True)
class Part:
    """One file of a release, as the manifest describes it."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """A verified release manifest."""

    version: str
    created: datetime
    expires: datetime
    min_orchestrator_version: str
    parts: tuple[Part, ...]
    total_size: int

    def part(self, name: str) -> Part:
        """The part called ``name``.

        Raises:
            FirmwareRefused: no such part.
        """
        for part in self.parts:
            if part.name == name:
                return part
        raise FirmwareRefused("part", f"release {self.version} has no part {name!r}")


def key_id(public_key: Ed25519PublicKey | bytes) -> str:
    """The id of a public key: hex SHA-256 of its 32 raw bytes, first 16 characters."""
    return hashlib.sha256(_raw(public_key)).hexdigest()[:16]


def load_pinned_keys(pems: Iterable[bytes]) -> dict[str, Ed25519PublicKey]:
    """Turn PEM public keys (from the agent's configuration) into a key-id mapping.

    Raises:
        FirmwareRefused: a PEM is not an Ed25519 public key (field ``pinned_keys[i]``).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: dict[str, Ed25519PublicKey] = {}
    for index, pem in enumerate(pems):
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise FirmwareRefused(f"pinned_keys[{index}]", f"not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise FirmwareRefused(f"pinned_keys[{index}]", "not an Ed25519 public key")
        keys[key_id(key)] = key
    return keys


# An Ed25519 SubjectPublicKeyInfo is these 12 bytes, then the 32 of the key (RFC 8410, 4).
_ED25519_SPKI = bytes.fromhex("302a300506032b6570032100")
_PUBLIC_KEY_PEM = re.compile(
    rb"\A\s*-----BEGIN PUBLIC KEY-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END PUBLIC KEY-----\s*\Z"
)


def pinned_key_bytes(pems: Sequence[bytes]) -> dict[str, bytes]:
    """:func:`load_pinned_keys` as raw 32-byte keys, without loading ``cryptography`` for
    PEMs in the one form an Ed25519 public key takes; any other is judged (and refused, in
    the same words) by :func:`load_pinned_keys`.

    Raises:
        FirmwareRefused: a PEM is not an Ed25519 public key (field ``pinned_keys[i]``).
    """
    keys: dict[str, bytes] = {}
    for pem in pems:
        found = _PUBLIC_KEY_PEM.match(pem)
        try:
            der = (
                base64.b64decode(b"".join(found.group(1).split()), validate=True) if found else b""
            )
        except binascii.Error:
            der = b""
        if len(der) != len(_ED25519_SPKI) + 32 or not der.startswith(_ED25519_SPKI):
            return {kid: _raw(key) for kid, key in load_pinned_keys(pems).items()}
        raw = der[len(_ED25519_SPKI) :]
        keys[key_id(raw)] = raw
    return keys


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """The one byte form of a manifest that is signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def format_instant(when: datetime) -> str:
    """An instant as the manifest writes it: RFC 3339 in UTC with a ``Z``, whole seconds."""
    if when.tzinfo is None:
        raise ValueError("when: must be timezone-aware")
    return when.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify_signed(
    manifest_bytes: bytes,
    signatures: Sequence[Signature],
    pinned_keys: Mapping[str, Ed25519PublicKey | bytes],
    now: datetime,
    threshold: int = 1,
) -> Manifest:
    """Rules 1 to 3: the manifest is signed by pinned keys, well formed and unexpired.

    Raises:
        FirmwareRefused: with the field at fault and why.
    """
    if threshold < 1:
        raise FirmwareRefused("threshold", "must be at least 1")
    _check_signatures(manifest_bytes, signatures, pinned_keys, threshold)
    manifest = parse_manifest(manifest_bytes)
    if now >= manifest.expires:
        raise FirmwareRefused(
            "manifest.expires",
            f"release {manifest.version} expired at {format_instant(manifest.expires)}",
        )
    return manifest


def verify_manifest(
    manifest_bytes: bytes,
    signatures: Sequence[Signature],
    pinned_keys: Mapping[str, Ed25519PublicKey | bytes],
    running_version: str,
    now: datetime,
    allow_downgrade: bool = False,
    threshold: int = 1,
) -> Manifest:
    """Check an offered release and return its manifest if the agent may install it.

    Args:
        manifest_bytes: the signed canonical JSON (``ReleaseManifest.manifest``).
        signatures: ``ReleaseManifest.signatures`` (anything with ``key_id``/``signature``).
        pinned_keys: trusted release keys by key id (raw 32 bytes or loaded keys).
        running_version: the version the agent runs now.
        now: the current instant (timezone-aware).
        allow_downgrade: accept a version older than the running one.
        threshold: how many distinct pinned keys must have signed.

    Raises:
        FirmwareRefused: with the field at fault and why (see the module docstring).
    """
    manifest = verify_signed(manifest_bytes, signatures, pinned_keys, now, threshold)
    try:
        running = parse_version(running_version)
    except VersionError as exc:
        raise FirmwareRefused("running_version", str(exc)) from exc
    target = parse_version(manifest.version)
    if target == running:
        raise FirmwareRefused("manifest.version", f"{manifest.version} is already running")
    if target < running and not allow_downgrade:
        raise FirmwareRefused(
            "manifest.version",
            f"{manifest.version} is older than the running {running_version}"
            " and the offer does not allow a downgrade",
        )
    return manifest


def verify_part(path: Path, part: Part) -> None:
    """Check that the file at ``path`` is exactly ``part`` (size, then SHA-256).

    Raises:
        FirmwareRefused: missing file, wrong size or wrong hash (field ``parts.<name>``).
    """
    field = f"parts.{part.name}"
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise FirmwareRefused(field, f"{path} does not exist") from exc
    if size != part.size:
        raise FirmwareRefused(field, f"size is {size} bytes, manifest says {part.size}")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != part.sha256:
        raise FirmwareRefused(field, "SHA-256 does not match the manifest")


def parse_manifest(manifest_bytes: bytes) -> Manifest:
    """Parse manifest bytes without checking signatures (use :func:`verify_manifest`).

    Raises:
        FirmwareRefused: the manifest is malformed (field ``manifest.<path>``).
    """
    try:
        document = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FirmwareRefused("manifest", f"not UTF-8 JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise FirmwareRefused("manifest", "must be a JSON object")
    if canonical_json(document) != manifest_bytes:
        raise FirmwareRefused("manifest", "is not in canonical form")
    if document.get("format") != MANIFEST_FORMAT:
        raise FirmwareRefused("manifest.format", f"must be {MANIFEST_FORMAT}")
    version = _version_field(document, "version")
    min_orchestrator = _version_field(document, "min_orchestrator_version")
    created = _instant_field(document, "created")
    expires = _instant_field(document, "expires")
    if expires <= created:
        raise FirmwareRefused("manifest.expires", "must be after created")
    raw_parts = document.get("parts")
    if not isinstance(raw_parts, list) or not raw_parts:
        raise FirmwareRefused("manifest.parts", "must be a non-empty list")
    parts = tuple(_part(raw, index) for index, raw in enumerate(raw_parts))
    names = [p.name for p in parts]
    if len(set(names)) != len(names):
        raise FirmwareRefused("manifest.parts", "part names must be unique")
    total = document.get("total_size")
    if not _is_int(total) or total != sum(p.size for p in parts):
        raise FirmwareRefused("manifest.total_size", "must be the sum of the part sizes")
    return Manifest(version, created, expires, min_orchestrator, parts, total)


def _check_signatures(
    manifest_bytes: bytes,
    signatures: Sequence[Signature],
    pinned_keys: Mapping[str, Ed25519PublicKey | bytes],
    threshold: int,
) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: dict[str, Ed25519PublicKey] = {}
    for kid, key in pinned_keys.items():
        public = key if isinstance(key, Ed25519PublicKey) else _load_raw(kid, key)
        if key_id(public) != kid:
            raise FirmwareRefused(f"pinned_keys[{kid}]", "key id does not match the key")
        keys[kid] = public
    signed_by: set[str] = set()
    first_bad: str | None = None
    for index, sig in enumerate(signatures):
        pinned = keys.get(sig.key_id)
        if pinned is None or sig.key_id in signed_by:
            continue
        try:
            pinned.verify(bytes(sig.signature), manifest_bytes)
        except InvalidSignature:
            first_bad = first_bad or f"signatures[{index}]"
            continue
        signed_by.add(sig.key_id)
    if len(signed_by) >= threshold:
        return
    if first_bad is not None:
        raise FirmwareRefused(first_bad, "bad signature: the manifest was altered or mis-signed")
    unknown = sorted({s.key_id for s in signatures} - set(keys))
    if not signed_by and unknown:
        raise FirmwareRefused("signatures", f"signed only by unknown keys {', '.join(unknown)}")
    if not signatures:
        raise FirmwareRefused("signatures", "the release is not signed")
    raise FirmwareRefused(
        "signatures", f"{len(signed_by)} valid signature(s) by pinned keys, {threshold} required"
    )


def _raw(public_key: Ed25519PublicKey | bytes) -> bytes:
    if isinstance(public_key, bytes | bytearray | memoryview):
        return bytes(public_key)
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _load_raw(kid: str, raw: bytes) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        return Ed25519PublicKey.from_public_bytes(bytes(raw))
    except ValueError as exc:
        raise FirmwareRefused(f"pinned_keys[{kid}]", "not a 32-byte Ed25519 public key") from exc


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _version_field(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str):
        raise FirmwareRefused(f"manifest.{name}", "must be a version string")
    try:
        parse_version(value)
    except VersionError as exc:
        raise FirmwareRefused(f"manifest.{name}", str(exc)) from exc
    return value


def _instant_field(document: Mapping[str, Any], name: str) -> datetime:
    value = document.get(name)
    if not isinstance(value, str) or not value.endswith("Z"):
        raise FirmwareRefused(f"manifest.{name}", "must be an RFC 3339 UTC instant ending in Z")
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise FirmwareRefused(f"manifest.{name}", f"not an instant: {value!r}") from exc


def _part(raw: object, index: int) -> Part:
    field = f"manifest.parts[{index}]"
    if not isinstance(raw, dict) or set(raw) != {"name", "size", "sha256"}:
        raise FirmwareRefused(field, "must be an object with exactly name, size and sha256")
    name, size, sha = raw["name"], raw["size"], raw["sha256"]
    if not isinstance(name, str) or not _PART_NAME.fullmatch(name) or ".." in name:
        raise FirmwareRefused(f"{field}.name", "must be a plain file name")
    if not _is_int(size) or size <= 0:
        raise FirmwareRefused(f"{field}.size", "must be a positive integer")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise FirmwareRefused(f"{field}.sha256", "must be 64 lowercase hex digits")
    return Part(name, size, sha)
