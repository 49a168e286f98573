"""Resumable, chunked download of release parts, verified before anyone uses them.

The transport is a :class:`ChunkFetcher` (the gRPC ``Firmware.Download`` stream in the
agent, an in-memory simulator in tests) with one method to implement, ``_fetch``; its public
wrapper :meth:`ChunkFetcher.fetch` turns every failure into one :class:`DownloadError`.

A part is written to ``<name>.partial``; every ``checkpoint_bytes`` the data is fsynced and
*then* the offset is written (atomically) to ``<name>.progress``, so the recorded offset never
runs ahead of durable data. After a network error the bytes received so far are checkpointed;
after a power cut the next attempt truncates the partial file to the recorded offset (the
tail may be torn), re-hashes what is kept and asks the fetcher for the rest. The finished
file must have the manifest's size and SHA-256, or it is thrown away; only then is it
renamed to ``<name>``.

Before the first byte, the release must fit the limits (:class:`DownloadLimits`: each part,
the whole release, and the free space of the state directory, keeping a reserve for the
street's own files). Between chunks a ``stop`` callback is asked whether the orchestrator
cancelled the update: the bytes so far are checkpointed and :class:`Cancelled` is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from domain.firmware.errors import Cancelled, DownloadError, FirmwareRefused
from domain.firmware.manifest import Manifest, Part, verify_part
from edge.firmware.durable import CrashPoint, fsync_dir, no_crash, write_atomic

ProgressCallback = Callable[[int], None]
"""Called with the number of bytes of the release durably downloaded so far."""
StopCheck = Callable[[], bool]
"""Asked between chunks: ``True`` when the download must stop (the update was cancelled)."""
FreeSpace = Callable[[Path], int]
"""Bytes free for this process on the file system holding a path."""
MiB = 1024 * 1024


def free_bytes(path: Path) -> int:
    """Bytes available to an unprivileged writer on ``path``'s file system."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return shutil.disk_usage(path).free


@dataclass(frozen=True)
class DownloadLimits:
    """Limits of a download (and of the install that follows it).

    Attributes:
        checkpoint_bytes: data is fsynced and the offset recorded at least this often; a
            power cut loses at most this much. Smaller costs more fsyncs on the SD card.
        max_part_size: a manifest announcing a bigger part is refused before any download.
        max_release_bytes: a manifest announcing more in all is refused before any download
            (the orchestrator stores releases of at most 128 MiB).
        reserve_bytes: free space a download or an install must leave on the state
            directory's file system, for the outbox (64 MiB at most), the state and logs.
    """

    checkpoint_bytes: int = 256 * 1024
    max_part_size: int = 256 * MiB
    max_release_bytes: int = 256 * MiB
    reserve_bytes: int = 96 * MiB


def check_fits(
    manifest: Manifest, directory: Path, limits: DownloadLimits, free: FreeSpace = free_bytes
) -> None:
    """Refuse a release that exceeds the limits or would not fit on the disk.

    Counts what is left to download (parts already complete or partly kept count for what
    they hold) plus the release once more for unpacking it, plus the reserve.

    Raises:
        FirmwareRefused: a part or the release is over its limit (``parts.<name>.size``,
            ``manifest.total_size``), or the disk lacks room (``disk``).
    """
    for part in manifest.parts:
        if part.size > limits.max_part_size:
            raise FirmwareRefused(
                f"parts.{part.name}.size", f"exceeds the limit of {limits.max_part_size} bytes"
            )
    if manifest.total_size > limits.max_release_bytes:
        raise FirmwareRefused(
            "manifest.total_size",
            f"{manifest.total_size} bytes exceeds the limit of {limits.max_release_bytes} bytes",
        )
    held = 0
    for part in manifest.parts:
        for name in (part.name, f"{part.name}.partial"):
            with contextlib.suppress(OSError):
                held += min(part.size, (directory / name).stat().st_size)
    needed = manifest.total_size - held + manifest.total_size + limits.reserve_bytes
    available = free(directory)
    if needed > available:
        raise FirmwareRefused(
            "disk",
            f"the release needs {needed} bytes free (download, unpack and a reserve of"
            f" {limits.reserve_bytes}); {available} are free",
        )


class ChunkFetcher(ABC):
    """Where release bytes come from. Implement :meth:`_fetch`; callers use :meth:`fetch`."""

    @abstractmethod
    def _fetch(self, part: Part, offset: int, length: int) -> AsyncIterator[bytes]:
        """Yield the bytes of ``part`` from ``offset`` on, ``length`` of them in all.

        Implementations may yield chunks of any size and raise any exception on failure.
        """

    async def fetch(self, part: Part, offset: int, length: int) -> AsyncIterator[bytes]:
        """Yield the bytes of ``part`` from ``offset``, at most ``length`` in all.

        Raises:
            DownloadError: on any failure of the transport, or if it sends more than asked.
        """
        received = 0
        try:
            async for chunk in self._fetch(part, offset, length):
                if not isinstance(chunk, bytes | bytearray | memoryview):
                    raise DownloadError(f"parts.{part.name}", "fetcher yielded a non-bytes chunk")
                received += len(chunk)
                if received > length:
                    raise DownloadError(
                        f"parts.{part.name}",
                        f"server sent more than the {length} bytes asked from offset {offset}",
                    )
                yield bytes(chunk)
        except DownloadError:
            raise
        except Exception as exc:
            raise DownloadError(
                f"parts.{part.name}", f"fetch failed at offset {offset + received}: {exc!r}"
            ) from exc


async def download_release(
    fetcher: ChunkFetcher,
    manifest: Manifest,
    directory: Path,
    *,
    limits: DownloadLimits | None = None,
    on_progress: ProgressCallback | None = None,
    stop: StopCheck | None = None,
    free: FreeSpace = free_bytes,
    crash: CrashPoint = no_crash,
) -> dict[str, Path]:
    """Download every part of ``manifest`` into ``directory`` (created if needed).

    Returns:
        The verified file of each part, by part name.

    Raises:
        DownloadError: a part could not be fetched or did not verify; call again to resume.
        FirmwareRefused: the release does not fit the limits or the disk (:func:`check_fits`).
        Cancelled: ``stop`` said so; what was received is kept durably.
    """
    limits = limits or DownloadLimits()
    directory.mkdir(parents=True, exist_ok=True)
    check_fits(manifest, directory, limits, free)
    files: dict[str, Path] = {}
    done_before = 0
    for part in manifest.parts:
        base = done_before

        def report(done: int, base: int = base) -> None:
            if on_progress is not None:
                on_progress(base + done)

        files[part.name] = await download_part(
            fetcher, part, directory, limits=limits, on_progress=report, stop=stop, crash=crash
        )
        done_before += part.size
    return files


async def download_part(
    fetcher: ChunkFetcher,
    part: Part,
    directory: Path,
    *,
    limits: DownloadLimits | None = None,
    on_progress: ProgressCallback | None = None,
    stop: StopCheck | None = None,
    crash: CrashPoint = no_crash,
) -> Path:
    """Download one part into ``directory``, resuming from what was durably kept.

    Disk work that can stall on an SD card (fsync, re-hashing on resume) runs in a worker
    thread so the agent's event loop keeps driving the equipment meanwhile.

    Returns:
        The path of the complete, verified part.

    Raises:
        DownloadError: the transport failed (progress kept) or the result did not verify
            (partial data discarded, the next call starts over).
        Cancelled: ``stop`` said so between two chunks (progress kept).
    """
    limits = limits or DownloadLimits()
    target = _PartialFile(directory, part, crash)
    if await asyncio.to_thread(target.already_complete):
        return target.final
    offset = await asyncio.to_thread(target.open)
    try:
        unsynced = 0
        try:
            async for chunk in fetcher.fetch(part, offset, part.size - offset):
                if stop is not None and stop():
                    await asyncio.to_thread(target.checkpoint)
                    raise Cancelled(f"parts.{part.name}", f"cancelled at byte {offset}")
                target.append(chunk)
                offset += len(chunk)
                unsynced += len(chunk)
                if unsynced >= limits.checkpoint_bytes:
                    await asyncio.to_thread(target.checkpoint)
                    unsynced = 0
                    if on_progress is not None:
                        on_progress(offset)
        except DownloadError:
            await asyncio.to_thread(target.checkpoint)
            raise
        await asyncio.to_thread(target.checkpoint)
    finally:
        target.close()
    if on_progress is not None:
        on_progress(offset)
    if offset != part.size:
        raise DownloadError(
            f"parts.{part.name}", f"stream ended at {offset} of {part.size} bytes; will resume"
        )
    await asyncio.to_thread(target.finish)
    return target.final


def prune_downloads(root: Path, keep: str | None = None) -> None:
    """Remove download directories under ``root`` except the one named ``keep``."""
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.name != keep and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


class _PartialFile:
    """The ``.partial``/``.progress`` pair of one part; blocking methods, called off-loop."""

    def __init__(self, directory: Path, part: Part, crash: CrashPoint) -> None:
        self.part = part
        self.final = directory / part.name
        self.partial = directory / f"{part.name}.partial"
        self.progress = directory / f"{part.name}.progress"
        self._crash = crash
        self._digest = hashlib.sha256()
        self._handle: BinaryIO | None = None
        self._offset = 0

    def already_complete(self) -> bool:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        if not self.final.exists():
            return False
        try:
            verify_part(self.final, self.part)
        except FirmwareRefused:
            self.final.unlink()
            return False
        return True

    def open(self) -> int:
        """Open the partial file at the last durable offset, re-hashing what is kept."""
        self._offset = self._durable_offset()
        handle = self.partial.open("r+b" if self.partial.exists() else "w+b")
        # Bytes past the recorded offset may be torn by a power cut: drop them.
        handle.truncate(self._offset)
        remaining = self._offset
        while remaining:
            block = handle.read(min(remaining, 1 << 20))
            if not block:
                break
            self._digest.update(block)
            remaining -= len(block)
        handle.seek(self._offset)
        self._handle = handle
        return self._offset

    def append(self, chunk: bytes) -> None:
        if self._offset + len(chunk) > self.part.size:
            raise DownloadError(f"parts.{self.part.name}", "server sent more than the part size")
        assert self._handle is not None
        # A plain write lands in the page cache and does not stall; fsync waits for checkpoint.
        self._handle.write(chunk)
        self._digest.update(chunk)
        self._offset += len(chunk)
        self._crash("download:written")

    def checkpoint(self) -> None:
        """Make the data durable, then record its length (never the other way round)."""
        assert self._handle is not None
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._crash("download:synced")
        record = {"offset": self._offset, "sha256": self.part.sha256, "size": self.part.size}
        write_atomic(self.progress, json.dumps(record).encode(), crash=self._crash)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def finish(self) -> None:
        """Verify the hash and give the part its final name, or discard it."""
        if self._digest.hexdigest() != self.part.sha256:
            self.partial.unlink(missing_ok=True)
            self.progress.unlink(missing_ok=True)
            raise DownloadError(
                f"parts.{self.part.name}", "SHA-256 does not match the manifest; download discarded"
            )
        os.replace(self.partial, self.final)
        self._crash("download:placed")
        fsync_dir(self.final.parent)
        self.progress.unlink(missing_ok=True)

    def _durable_offset(self) -> int:
        try:
            recorded = json.loads(self.progress.read_text("utf-8"))
            size = self.partial.stat().st_size
        except (OSError, ValueError):
            return 0
        if (
            not isinstance(recorded, dict)
            or recorded.get("sha256") != self.part.sha256
            or recorded.get("size") != self.part.size
            or not isinstance(recorded.get("offset"), int)
        ):
            return 0
        # The partial file may be shorter if the progress record survived a cut the data did not.
        return max(0, min(int(recorded["offset"]), size, self.part.size))
