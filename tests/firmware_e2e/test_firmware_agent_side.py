"""edge.firmware.agent_side without a network: how the agent answers offers, retries a cut
download from where it stopped, and reports outcomes both on the link and in its outbox."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from edge.config import FirmwareConfig
from edge.equipment.base import EquipmentEvent, Priority
from edge.firmware.agent_side import AgentFirmware, RetryPolicy
from edge.firmware.download import ChunkFetcher
from edge.firmware.grpc_fetcher import ChannelSource
from edge.firmware.simulator import ReleaseSimulator
from edge.firmware.slots import SlotStore
from ondijon.clock import ManualClock
from protos.ondijon.v1 import firmware_pb2

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
Stage = firmware_pb2.FirmwareStage


class Harness:
    def __init__(self, tmp_path: Path, *, configured: bool = True) -> None:
        self.sim = ReleaseSimulator()
        ballast = {"ondijon_probe.py": b'VERSION = "0.2.0"\n', "ballast.bin": os.urandom(50_000)}
        self.sim.publish("0.2.0", created=NOW, files=ballast)
        pem = self.sim.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (tmp_path / "release.pub").write_bytes(pem)
        config = FirmwareConfig((tmp_path / "release.pub",), tmp_path / "firmware")
        self.sent: list[firmware_pb2.FirmwareProgress] = []
        self.events: list[EquipmentEvent] = []
        self.delays: list[float] = []
        self.restarts = 0
        self.cuts: list[int | None] = [None]

        async def no_sleep(seconds: float) -> None:
            self.delays.append(seconds)

        def fetcher(channel: ChannelSource, version: str) -> ChunkFetcher:
            cut = self.cuts.pop(0) if self.cuts else None
            self.last_fetcher = self.sim.fetcher(version, chunk_size=4096, cut_after=cut)
            return self.last_fetcher

        self.firmware = AgentFirmware(
            config if configured else None,
            clock=ManualClock(NOW),
            base_version="0.1.0",
            channel=lambda: None,
            send=lambda p: self.sent.append(p) is None,
            record=self.events.append,
            request_restart=self.restart,
            retry=RetryPolicy(attempts=3),
            sleep=no_sleep,
            fetcher=fetcher,
            restart_grace_s=0.0,
        )

    def restart(self) -> None:
        self.restarts += 1

    def offer(self, version: str = "0.2.0", campaign: str = "c-1") -> firmware_pb2.FirmwareOffer:
        release = self.sim.releases["0.2.0"]
        return firmware_pb2.FirmwareOffer(
            campaign_id=campaign,
            version=version,
            manifest=firmware_pb2.ReleaseManifest(
                manifest=release.manifest,
                signatures=[
                    firmware_pb2.ReleaseSignature(key_id=s.key_id, signature=s.signature)
                    for s in release.signatures
                ],
            ),
        )

    async def take(self, offer: firmware_pb2.FirmwareOffer) -> None:
        self.firmware.offer(offer)
        if self.firmware.task is not None:
            await self.firmware.task
        await asyncio.sleep(0)  # the restart is scheduled with call_later(0)

    @property
    def stages(self) -> list[int]:
        return [p.stage for p in self.sent]


async def test_an_offer_is_installed_and_the_agent_asks_for_a_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.take(h.offer())
    assert h.stages[-3:] == [
        Stage.FIRMWARE_STAGE_VERIFIED,
        Stage.FIRMWARE_STAGE_INSTALLED,
        Stage.FIRMWARE_STAGE_REBOOTING,
    ]
    assert h.restarts == 1
    assert SlotStore(tmp_path / "firmware").read().trial is not None
    assert h.events == []  # no outcome yet: the trial decides


async def test_a_cut_download_is_retried_from_where_it_stopped(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.cuts = [10_000, None]
    await h.take(h.offer())
    interrupted = [p for p in h.sent if "interrupted, will resume" in p.detail]
    assert len(interrupted) == 1 and len(h.delays) == 1
    (request,) = h.last_fetcher.requests
    assert request[1] == 10_000  # the second attempt asked for the rest only
    assert h.stages[-1] == Stage.FIRMWARE_STAGE_REBOOTING


async def test_offers_that_must_not_be_installed_are_answered(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.take(h.offer(version="0.1.0"))
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_COMMITTED
    assert h.sent[-1].detail == "0.1.0 is already running"
    assert h.events[-1].type == "firmware.committed"

    await h.take(h.offer())  # installs; a trial is now running
    sent = len(h.sent)
    await h.take(h.offer())
    assert len(h.sent) == sent  # during a trial, offers are ignored

    store = SlotStore(tmp_path / "firmware")
    store.roll_back("health check (orchestrator) did not pass within 300 s", NOW)
    await h.take(h.offer())
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_ROLLED_BACK
    assert "did not pass within 300 s" in h.sent[-1].detail
    assert h.restarts == 1  # never reinstalled


async def test_without_firmware_configuration_offers_are_refused(tmp_path: Path) -> None:
    h = Harness(tmp_path, configured=False)
    await h.take(h.offer())
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_REFUSED
    assert "[firmware]" in h.sent[-1].detail
    assert h.events[-1].type == "firmware.refused"
    assert h.events[-1].priority is Priority.ALARM
    assert h.events[-1].attributes["campaign_id"] == "c-1"


async def test_an_unreadable_release_key_refuses_offers_but_the_agent_runs(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    (tmp_path / "release.pub").write_text("not a key")
    h.firmware._load_trust(FirmwareConfig((tmp_path / "release.pub",), tmp_path / "firmware"))
    h.firmware.trust = None
    await h.take(h.offer())
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_REFUSED
    assert "firmware.release_keys" in h.sent[-1].detail


async def test_the_trials_outcome_is_recorded_once_and_sent_when_connected(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    await h.take(h.offer())

    async def healthy() -> bool:
        return True

    result = await h.firmware.start_up({"orchestrator": healthy})
    assert result is not None and result.verdict is not None
    assert h.events[-1].type == "firmware.committed"
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_COMMITTED
    assert h.firmware.running_version == "0.2.0"
    events = len(h.events)
    await h.firmware.start_up({"orchestrator": healthy})  # the next start: nothing new
    assert len(h.events) == events
