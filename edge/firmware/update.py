"""Taking a firmware offer from verification to the restart into the new slot.

The link layer calls :func:`apply_offer` with a ``FirmwareOffer`` and a fetcher on the
``Firmware.Download`` stream, and forwards every ``FirmwareProgress`` it reports. The
stages follow the wire contract: DOWNLOADING (with bytes done), VERIFIED, INSTALLED,
REBOOTING; REFUSED when the offer is not acceptable, FAILED when the install fails. A
network failure is not a FAILED outcome: :class:`DownloadError` is raised for the caller
to retry later, and the next call resumes where the data was durable.

After the restart, :func:`confirm_trial` (``edge.firmware.boot``) commits or rolls back and
:func:`pending_report` gives the COMMITTED/ROLLED_BACK progress to send once connected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.firmware.download import ChunkFetcher, DownloadLimits, download_release, prune_downloads
from edge.firmware.durable import CrashPoint, no_crash
from edge.firmware.errors import FirmwareRefused, SlotError
from edge.firmware.slots import SlotStore
from edge.firmware.verify import verify_manifest
from ondijon.clock import Clock
from protos.ondijon.v1 import firmware_pb2

ProgressSink = Callable[[firmware_pb2.FirmwareProgress], None]


@dataclass(frozen=True)
class TrustPolicy:
    """What the agent trusts: its pinned release keys and how many must sign."""

    pinned_keys: Mapping[str, Ed25519PublicKey | bytes]
    threshold: int = 1


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
    crash: CrashPoint = no_crash,
) -> int:
    """Verify, download, install and switch to an offered release, then request a restart.

    Returns:
        The last stage reported (a ``FirmwareStage`` value): REBOOTING on success,
        REFUSED or FAILED otherwise.

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

    try:
        files = await download_release(
            fetcher,
            manifest,
            downloads / manifest.version,
            limits=limits,
            on_progress=downloading,
            crash=crash,
        )
    except FirmwareRefused as refused:
        return progress(firmware_pb2.FIRMWARE_STAGE_REFUSED, str(refused))
    progress(firmware_pb2.FIRMWARE_STAGE_VERIFIED, "", manifest.total_size)
    wheels = [path for name, path in files.items() if name.endswith(".whl")]
    if len(wheels) != 1:
        return progress(firmware_pb2.FIRMWARE_STAGE_FAILED, "release must hold exactly one wheel")
    try:
        slot = await asyncio.to_thread(store.install, wheels[0], manifest.version)
        progress(firmware_pb2.FIRMWARE_STAGE_INSTALLED, f"slot {slot}")
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
