"""Agent releases on the orchestrator: checking uploads and serving them to gateways.

An operator uploads a release built and signed by ``ondijon release`` (the ``Campaigns``
admin service calls :func:`receive_upload`): the manifest must parse as the agent parses it,
be signed (the orchestrator holds no release key and does not judge signatures: agents do,
with the keys they pin), unexpired, servable by this orchestrator, and hold exactly one
wheel; every part must arrive whole with the manifest's size and SHA-256. Only then is it
stored, immutable.

Gateways fetch it on their mutual-TLS connection through the ``Firmware`` service:
``GetRelease`` gives the signed manifest, ``Download`` streams a part from any offset in
messages of at most :data:`MESSAGE_BYTES`, so an agent cut off mid-download asks for the
rest only. Chunks are cached in memory (releases never change), so a wave of a hundred
gateways reads each chunk from the store once.
"""

from __future__ import annotations

import collections
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from typing import Any

import grpc

from domain.firmware.errors import FirmwareRefused
from domain.firmware.manifest import parse_manifest
from domain.firmware.version import VersionError, parse_version
from foundation.errors import FieldError
from orchestrator.access.certificates import Certificates
from orchestrator.access.peers import AuthError, peer_of, require_role
from orchestrator.store.database import NotFound
from orchestrator.store.releases import (
    CHUNK_BYTES,
    FirmwareStore,
    PartRecord,
    ReleaseRecord,
    SignatureRecord,
)
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import firmware_pb2, firmware_pb2_grpc
from provisioning.identity import Role

log = logging.getLogger("ondijon.orchestrator.firmware")

MESSAGE_BYTES = 64 * 1024
MAX_RELEASE_BYTES = 128 * 1024 * 1024
CACHE_BYTES = 64 * 1024 * 1024
Context = grpc.aio.ServicerContext[Any, Any]


class UploadError(FieldError):
    """An uploaded release is refused; nothing was stored.

    Attributes:
        field: e.g. ``manifest.expires``, ``parts.<name>``, ``signatures[1].key_id``.
        reason: why.
    """


def orchestrator_version() -> str:
    """The version of this orchestrator (the ``ondijon`` distribution)."""
    try:
        return metadata.version("ondijon")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def release_manifest(release: ReleaseRecord) -> firmware_pb2.ReleaseManifest:
    """The wire form of a stored release's signed manifest."""
    return firmware_pb2.ReleaseManifest(
        manifest=release.manifest,
        signatures=[
            firmware_pb2.ReleaseSignature(key_id=s.key_id, signature=s.signature)
            for s in release.signatures
        ],
    )


async def receive_upload(
    requests: AsyncIterator[firmware_pb2.UploadReleaseRequest],
    *,
    now: datetime,
    uploaded_by: str,
    max_bytes: int = MAX_RELEASE_BYTES,
) -> tuple[ReleaseRecord, dict[str, list[bytes]]]:
    """Read an upload stream and check it completely (see the module docstring).

    Returns:
        The release record and each part's bytes in chunks of ``CHUNK_BYTES``.

    Raises:
        UploadError: naming the field at fault.
    """
    iterator = requests.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        raise UploadError("manifest", "the upload is empty") from None
    if first.WhichOneof("body") != "manifest":
        raise UploadError("manifest", "the first message must carry the manifest")
    release = check_manifest(first.manifest, now=now, uploaded_by=uploaded_by, max_bytes=max_bytes)
    parts = {p.name: _PartUpload(p) for p in release.parts}
    async for request in iterator:
        if request.WhichOneof("body") != "chunk":
            raise UploadError("chunk", "only part chunks may follow the manifest")
        chunk = request.chunk
        upload = parts.get(chunk.part)
        if upload is None:
            raise UploadError("chunk.part", f"{chunk.part!r} is not a part of the manifest")
        upload.add(chunk.offset, chunk.data)
    return release, {name: upload.finish() for name, upload in parts.items()}


def check_manifest(
    manifest: firmware_pb2.ReleaseManifest,
    *,
    now: datetime,
    uploaded_by: str,
    max_bytes: int = MAX_RELEASE_BYTES,
) -> ReleaseRecord:
    """Check an uploaded manifest; return the release record it describes.

    Raises:
        UploadError: naming the field at fault.
    """
    try:
        parsed = parse_manifest(manifest.manifest)
    except FirmwareRefused as exc:
        raise UploadError(exc.field, exc.reason) from None
    if not manifest.signatures:
        raise UploadError("signatures", "the release is not signed (run `ondijon release sign`)")
    for index, sig in enumerate(manifest.signatures):
        if len(sig.key_id) != 16 or any(c not in "0123456789abcdef" for c in sig.key_id):
            raise UploadError(f"signatures[{index}].key_id", "must be 16 lowercase hex digits")
        if len(sig.signature) != 64:
            raise UploadError(f"signatures[{index}].signature", "must be a 64-byte Ed25519 one")
    if now >= parsed.expires:
        raise UploadError("manifest.expires", f"release {parsed.version} has already expired")
    ours = orchestrator_version()
    try:
        too_new = parse_version(parsed.min_orchestrator_version) > parse_version(ours)
    except VersionError:
        too_new = False
    if too_new:
        raise UploadError(
            "manifest.min_orchestrator_version",
            f"release needs orchestrator {parsed.min_orchestrator_version}, this one is {ours}",
        )
    if parsed.total_size > max_bytes:
        raise UploadError("manifest.total_size", f"larger than the {max_bytes}-byte limit")
    wheels = [p for p in parsed.parts if p.name.endswith(".whl")]
    if len(wheels) != 1:
        raise UploadError("manifest.parts", "a release holds exactly one wheel")
    return ReleaseRecord(
        version=parsed.version,
        manifest=manifest.manifest,
        signatures=tuple(SignatureRecord(s.key_id, s.signature) for s in manifest.signatures),
        total_size=parsed.total_size,
        min_orchestrator_version=parsed.min_orchestrator_version,
        created_at=parsed.created,
        expires_at=parsed.expires,
        uploaded_at=now,
        uploaded_by=uploaded_by,
        parts=tuple(PartRecord(p.name, p.size, p.sha256) for p in parsed.parts),
    )


@dataclass
class _PartUpload:
    part: PartRecord
    received: int = 0
    chunks: list[bytes] = field(default_factory=list)
    pending: bytearray = field(default_factory=bytearray)
    digest: Any = field(default_factory=hashlib.sha256)

    def add(self, offset: int, data: bytes) -> None:
        where = f"parts.{self.part.name}"
        if offset != self.received:
            raise UploadError(where, f"chunk at offset {offset}, expected {self.received}")
        if self.received + len(data) > self.part.size:
            raise UploadError(where, f"more than the manifest's {self.part.size} bytes")
        self.received += len(data)
        self.digest.update(data)
        self.pending += data
        while len(self.pending) >= CHUNK_BYTES:
            self.chunks.append(bytes(self.pending[:CHUNK_BYTES]))
            del self.pending[:CHUNK_BYTES]

    def finish(self) -> list[bytes]:
        where = f"parts.{self.part.name}"
        if self.received != self.part.size:
            raise UploadError(where, f"{self.received} of {self.part.size} bytes uploaded")
        if self.digest.hexdigest() != self.part.sha256:
            raise UploadError(where, "SHA-256 does not match the manifest")
        if self.pending:
            self.chunks.append(bytes(self.pending))
        return self.chunks


class _ChunkCache:
    """Least-recently-used chunks of releases, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: collections.OrderedDict[tuple[str, str, int], bytes] = (
            collections.OrderedDict()
        )
        self._bytes = 0

    def get(self, key: tuple[str, str, int]) -> bytes | None:
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
        return data

    def put(self, key: tuple[str, str, int], data: bytes) -> None:
        if key in self._items or len(data) > self.max_bytes:
            return
        self._items[key] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= len(dropped)


@dataclass(frozen=True)
class DownloadRecord:
    """One Download call, for operators' diagnostics and the tests."""

    gateway_id: str
    version: str
    part: str
    offset: int
    length: int


class FirmwareService(firmware_pb2_grpc.FirmwareServicer):
    """Serves stored releases to gateways."""

    def __init__(
        self, runner: StoreRunner, certificates: Certificates, *, cache_bytes: int = CACHE_BYTES
    ) -> None:
        self.runner = runner
        self.certificates = certificates
        self.store = FirmwareStore()
        self._cache = _ChunkCache(cache_bytes)
        self.bytes_served = 0
        self.downloads: collections.deque[DownloadRecord] = collections.deque(maxlen=256)

    async def _gateway(self, context: Context) -> str:
        try:
            peer = peer_of(context)
            require_role(peer, Role.GATEWAY)
            await self.certificates.check(peer)
        except AuthError as exc:
            await context.abort(exc.code, str(exc))
        return peer.identity.name

    async def _release(self, context: Context, version: str) -> ReleaseRecord:
        try:
            return await self.runner.read(self.store.get_release, version)
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise AssertionError("unreachable") from None

    async def GetRelease(
        self, request: firmware_pb2.GetReleaseRequest, context: Context
    ) -> firmware_pb2.GetReleaseResponse:
        await self._gateway(context)
        release = await self._release(context, request.version)
        return firmware_pb2.GetReleaseResponse(manifest=release_manifest(release))

    async def Download(
        self, request: firmware_pb2.DownloadRequest, context: Context
    ) -> AsyncIterator[firmware_pb2.DownloadResponse]:
        gateway_id = await self._gateway(context)
        release = await self._release(context, request.version)
        part = next((p for p in release.parts if p.name == request.part), None)
        if part is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"part: release {release.version} has no {request.part!r}",
            )
            raise AssertionError("unreachable")
        if request.offset > part.size:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE, f"offset: {request.offset} is past {part.size} bytes"
            )
        end = part.size if request.length == 0 else min(part.size, request.offset + request.length)
        self.downloads.append(
            DownloadRecord(
                gateway_id, release.version, part.name, request.offset, end - request.offset
            )
        )
        if end <= request.offset:
            return
        for index in range(request.offset // CHUNK_BYTES, (end - 1) // CHUNK_BYTES + 1):
            data = await self._chunk(release.version, part.name, index)
            base = index * CHUNK_BYTES
            start = max(request.offset, base) - base
            stop = min(end, base + len(data)) - base
            for at in range(start, stop, MESSAGE_BYTES):
                piece = data[at : min(stop, at + MESSAGE_BYTES)]
                self.bytes_served += len(piece)
                yield firmware_pb2.DownloadResponse(offset=base + at, data=piece)

    async def _chunk(self, version: str, part: str, index: int) -> bytes:
        key = (version, part, index)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        rows = await self.runner.read(self.store.read_chunks, version, part, index, index)
        if not rows:
            raise NotFound(f"parts.{part}", f"chunk {index} of {version} is missing from the store")
        data = rows[0][1]
        self._cache.put(key, data)
        return data
