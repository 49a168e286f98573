"""Taking a firmware offer from verification to the restart into the new slot.

The link layer calls :func:`apply_offer` with a ``FirmwareOffer`` and a fetcher on the
``Firmware.Download`` stream, and forwards every ``FirmwareProgress`` it reports. The
stages follow the wire contract: DOWNLOADING (with bytes done), VERIFIED, INSTALLED,
REBOOTING; REFUSED when the offer is not acceptable, FAILED when the install fails. A
network failure is not a FAILED outcome: :class:`DownloadError` is raised for the caller
to retry later, and the next call resumes where the data was durable.

The switch of the pointer to the new slot is the **point of no return**: until then a
:class:`Gate` can be cancelled (the orchestrator aborted the campaign) and the update stops
with CANCELLED, the running version untouched; once the gate is passed, the update runs to
its own outcome (the trial commits or rolls back).

After the restart, :func:`confirm_trial` (``edge.firmware.boot``) commits or rolls back and
:func:`pending_report` gives the COMMITTED/ROLLED_BACK progress to send once connected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from domain.firmware.errors import Cancelled, FirmwareRefused, SlotError
from domain.firmware.manifest import verify_manifest
from edge.firmware.download import (
    ChunkFetcher,
    DownloadLimits,
    FreeSpace,
    download_release,
    free_bytes,
    prune_downloads,
)
from edge.firmware.durable import CrashPoint, no_crash
from edge.firmware.slots import SlotStore, unpacked_size
from foundation.clock import Clock
from protos.ondijon.v1 import firmware_pb2

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ProgressSink = Callable[[firmware_pb2.FirmwareProgress], None]


@dataclass(frozen=True)
class TrustPolicy:
    """What the agent trusts: its pinned release keys and how many must sign."""

    pinned_keys: Mapping[str, Ed25519PublicKey | bytes]
    threshold: int = 1


class Gate:
    """The point of no return of one update: cancelled before it, or passed (not both)."""

    def __init__(self) -> None:
        self.cancelled = False
        self.passed = False
        self.reason = ""

    def cancel(self, reason: str = "") -> bool:
        """Cancel the update unless it passed the point of no return; ``True`` if it did."""
        if self.passed:
            return False
        self.cancelled = True
        self.reason = reason
        return True

    def pass_point(self) -> bool:
        """Pass the point of no return unless cancelled first; ``True`` if passed."""
        if not self.cancelled:
            self.passed = True
        return self.passed


async def apply_offer(
    offer: firmware_pb2.FirmwareOffer,
    *,
    fetcher: ChunkFetcher,
    store: SlotStore,
    trust: TrustPolicy,
    running_version: str,
    clock: Clock,
    report: ProgressSink,
    request_restart: Callable[[], None],
    limits: DownloadLimits | None = None,
    gate: Gate | None = None,
    free: FreeSpace = free_bytes,
    crash: CrashPoint = no_crash,
) -> int:
    """Verify, download, install and switch to an offered release, then request a restart.

    Returns:
        The last stage reported (a ``FirmwareStage`` value): REBOOTING on success,
        CANCELLED when ``gate`` was cancelled before the switch, REFUSED or FAILED otherwise.

    Raises:
        DownloadError: the download was cut; call again later to resume.
    """

    def progress(stage: int, detail: str = "", done: int = 0) -> int:
        report(
            firmware_pb2.FirmwareProgress(
                campaign_id=offer.campaign_id,
                version=offer.version,
                stage=stage,  # type: ignore[arg-type]
                bytes_done=done,
                detail=detail,
                running_version=running_version,
            )
        )
        return stage

    try:
        manifest = verify_manifest(
            offer.manifest.manifest,
            list(offer.manifest.signatures),
            trust.pinned_keys,
            running_version,
            clock.now(),
            allow_downgrade=offer.allow_downgrade,
            threshold=trust.threshold,
        )
        if manifest.version != offer.version:
            raise FirmwareRefused("offer.version", f"manifest is for {manifest.version}")
    except FirmwareRefused as refused:
        return progress(firmware_pb2.FIRMWARE_STAGE_REFUSED, str(refused))

    downloads = store.state_dir / "downloads"
    await asyncio.to_thread(prune_downloads, downloads, manifest.version)
    progress(firmware_pb2.FIRMWARE_STAGE_DOWNLOADING)

    def downloading(done: int) -> None:
        progress(firmware_pb2.FIRMWARE_STAGE_DOWNLOADING, "", done)

    gate = gate or Gate()
    limits = limits or DownloadLimits()

    async def cancelled() -> int:
        await asyncio.to_thread(prune_downloads, downloads)
        reason = f": {gate.reason}" if gate.reason else ""
        return progress(
            firmware_pb2.FIRMWARE_STAGE_CANCELLED,
            f"cancelled before the point of no return{reason}; still running {running_version}",
        )

    try:
        files = await download_release(
            fetcher,
            manifest,
            downloads / manifest.version,
            limits=limits,
            on_progress=downloading,
            stop=lambda: gate.cancelled,
            free=free,
            crash=crash,
        )
    except FirmwareRefused as refused:
        return progress(firmware_pb2.FIRMWARE_STAGE_REFUSED, str(refused))
    except Cancelled:
        return await cancelled()
    progress(firmware_pb2.FIRMWARE_STAGE_VERIFIED, "", manifest.total_size)
    wheels = [path for name, path in files.items() if name.endswith(".whl")]
    if len(wheels) != 1:
        return progress(firmware_pb2.FIRMWARE_STAGE_FAILED, "release must hold exactly one wheel")
    try:
        unpacked = await asyncio.to_thread(unpacked_size, wheels[0])
        available = free(store.state_dir)
        if unpacked + limits.reserve_bytes > available:
            return progress(
                firmware_pb2.FIRMWARE_STAGE_FAILED,
                f"disk: unpacking needs {unpacked} bytes and a reserve of"
                f" {limits.reserve_bytes}; {available} are free",
            )
        if gate.cancelled:
            return await cancelled()
        slot = await asyncio.to_thread(store.install, wheels[0], manifest.version)
        progress(firmware_pb2.FIRMWARE_STAGE_INSTALLED, f"slot {slot}")
        if not gate.pass_point():
            return await cancelled()
        await asyncio.to_thread(store.switch_to_trial, slot, manifest.version, offer.campaign_id)
    except (SlotError, OSError) as exc:
        return progress(firmware_pb2.FIRMWARE_STAGE_FAILED, str(exc))
    await asyncio.to_thread(prune_downloads, downloads)
    stage = progress(firmware_pb2.FIRMWARE_STAGE_REBOOTING, f"slot {slot}")
    request_restart()
    return stage


def pending_report(store: SlotStore, running_version: str) -> firmware_pb2.FirmwareProgress | None:
    """The outcome of the last trial if not yet reported (call ``store.mark_reported()``
    once the orchestrator has it)."""
    outcome = store.read().last_outcome
    if outcome is None or outcome.reported:
        return None
    stage = (
        firmware_pb2.FIRMWARE_STAGE_COMMITTED
        if outcome.result == "committed"
        else firmware_pb2.FIRMWARE_STAGE_ROLLED_BACK
    )
    return firmware_pb2.FirmwareProgress(
        campaign_id=outcome.campaign_id,
        version=outcome.version,
        stage=stage,
        detail=outcome.reason,
        running_version=running_version,
    )
