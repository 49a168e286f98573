"""An in-memory release server for tests and the bench (like python-tuf's RepositorySimulator).

:class:`ReleaseSimulator` makes wheels, signs manifests with its own Ed25519 keys and serves
part bytes through :class:`MemoryFetcher`, which can cut the stream after a given number of
bytes to exercise resumption. The wiring of the gRPC ``Firmware`` service can be tested
against the same simulator. :func:`agent_wheel` makes a wheel of the agent's own packages
(what ``ondijon release build`` ships), optionally with code appended to some modules, for
releases that really run, and really fail, in a slot.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from domain.firmware.manifest import MANIFEST_FORMAT, Part, canonical_json, format_instant, key_id
from edge.firmware.download import ChunkFetcher


def make_wheel(
    version: str, files: Mapping[str, bytes] | None = None, *, dist: str = "ondijon"
) -> tuple[str, bytes]:
    """A minimal pure-Python wheel holding ``files``; returns its file name and bytes."""
    files = dict(files or {"ondijon_probe.py": f'VERSION = "{version}"\n'.encode()})
    info = f"{dist}-{version}.dist-info"
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode()
    )
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: simulator\nRoot-Is-Purelib: true\n"
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return f"{dist}-{version}-py3-none-any.whl", buffer.getvalue()


AGENT_PACKAGES = (
    "ondijon",
    "edge",
    "orchestrator",
    "protos",
    "provisioning",
    "domain",
    "foundation",
)
CHECKOUT = Path(__file__).resolve().parents[2]


def agent_wheel(
    version: str, *, append: Mapping[str, str] | None = None, root: Path = CHECKOUT
) -> tuple[str, bytes]:
    """A wheel of the agent's packages under ``root`` (sources and generated protobuf code),
    with ``append[path]`` added at the end of the module at ``path`` (e.g. a fault)."""
    files: dict[str, bytes] = {}
    for package in AGENT_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".pyi", ".typed", ".mako"):
                files[str(path.relative_to(root))] = path.read_bytes()
    for name, text in (append or {}).items():
        files[name] = files[name] + b"\n" + text.encode()
    return make_wheel(version, files)


@dataclass(frozen=True)
class SignatureEntry:
    """A signature in the shape of ``firmware_pb2.ReleaseSignature``."""

    key_id: str
    signature: bytes


@dataclass
class SimulatedRelease:
    """One release the simulator serves."""

    version: str
    manifest: bytes
    signatures: list[SignatureEntry]
    parts: dict[str, bytes]


@dataclass
class ReleaseSimulator:
    """Releases signed by a key of its own, served from memory."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    releases: dict[str, SimulatedRelease] = field(default_factory=dict)

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The key to pin on the agent."""
        return self.key.public_key()

    @property
    def pinned(self) -> dict[str, Ed25519PublicKey]:
        """``{key_id: public_key}`` as the agent pins it."""
        return {key_id(self.public_key): self.public_key}

    def publish(
        self,
        version: str,
        *,
        created: datetime,
        lifetime: timedelta = timedelta(days=30),
        files: Mapping[str, bytes] | None = None,
    ) -> SimulatedRelease:
        """Build, sign and serve a one-wheel release of ``version``."""
        name, wheel = make_wheel(version, files)
        parts = {name: wheel}
        document = {
            "format": MANIFEST_FORMAT,
            "version": version,
            "created": format_instant(created),
            "expires": format_instant(created + lifetime),
            "min_orchestrator_version": "0.1.0",
            "parts": [
                {"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                for n, d in parts.items()
            ],
            "total_size": sum(len(d) for d in parts.values()),
        }
        manifest = canonical_json(document)
        signature = SignatureEntry(key_id(self.public_key), self.key.sign(manifest))
        release = SimulatedRelease(version, manifest, [signature], parts)
        self.releases[version] = release
        return release

    def fetcher(self, version: str, **kwargs: int | None) -> MemoryFetcher:
        """A fetcher for ``version``'s parts (see :class:`MemoryFetcher` for options)."""
        return MemoryFetcher(self.releases[version].parts, **kwargs)


class MemoryFetcher(ChunkFetcher):
    """Serves parts from memory in ``chunk_size`` pieces; fails after ``cut_after`` bytes."""

    def __init__(
        self,
        parts: Mapping[str, bytes],
        *,
        chunk_size: int | None = 4096,
        cut_after: int | None = None,
    ) -> None:
        self.parts = parts
        self.chunk_size = chunk_size or 4096
        self.cut_after = cut_after
        self.requests: list[tuple[str, int, int]] = []

    async def _fetch(self, part: Part, offset: int, length: int) -> AsyncIterator[bytes]:
        self.requests.append((part.name, offset, length))
        data = self.parts[part.name][offset : offset + length]
        sent = 0
        for start in range(0, len(data), self.chunk_size):
            chunk = data[start : start + self.chunk_size]
            if self.cut_after is not None and sent + len(chunk) > self.cut_after:
                if self.cut_after > sent:
                    yield chunk[: self.cut_after - sent]
                raise ConnectionResetError("link cut by the simulator")
            sent += len(chunk)
            yield chunk
