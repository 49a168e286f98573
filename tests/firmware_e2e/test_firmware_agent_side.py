"""edge.firmware.agent_side without a network: how the agent answers offers, retries a cut
download from where it stopped, and reports outcomes both on the link and in its outbox."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from domain.firmware.manifest import MANIFEST_FORMAT, Part, canonical_json, format_instant, key_id
from edge.config import FirmwareConfig
from edge.events import EquipmentEvent, Priority
from edge.firmware.agent_side import AgentFirmware, RetryPolicy
from edge.firmware.download import ChunkFetcher
from edge.firmware.grpc_fetcher import ChannelSource
from edge.firmware.launch import RELEASE_ENV, exec_plan
from edge.firmware.simulator import MemoryFetcher, ReleaseSimulator
from edge.firmware.slots import SlotStore
from foundation.clock import ManualClock
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
        self.config = FirmwareConfig(
            (tmp_path / "release.pub",), tmp_path / "firmware", stability_s=0
        )
        self.configured = configured
        self.clock = ManualClock(NOW)
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

        self.no_sleep = no_sleep
        self.fetcher = fetcher
        self.firmware = self.boot("0.1.0")

    def boot(self, running_version: str) -> AgentFirmware:
        """A new process's firmware glue, running ``running_version``."""
        self.firmware = AgentFirmware(
            self.config if self.configured else None,
            clock=self.clock,
            running_version=running_version,
            channel=lambda: None,
            send=lambda p: self.sent.append(p) is None,
            record=self.events.append,
            # The test owns the task and awaits it (``take``); the agent's supervisor does
            # in the agent (tests/edge/test_agent_safety.py).
            spawn=lambda child: asyncio.create_task(child.run()),
            request_restart=self.restart,
            retry=RetryPolicy(attempts=3),
            sleep=self.no_sleep,
            fetcher=self.fetcher,
            restart_grace_s=0.0,
        )
        return self.firmware

    def reboot(self) -> AgentFirmware:
        """What systemd and the launcher do: a new process, running what the launcher booted."""
        _, env = exec_plan(self.config.state_dir, ["-c", "pass"], {}, now=self.clock.now())
        return self.boot(env[RELEASE_ENV])

    def restart(self) -> None:
        self.restarts += 1

    def offer(
        self,
        version: str = "0.2.0",
        campaign: str = "c-1",
        *,
        manifest_of: str | None = None,
        sim: ReleaseSimulator | None = None,
    ) -> firmware_pb2.FirmwareOffer:
        """An offer of ``version`` whose signed manifest is ``manifest_of``'s (default: the
        same version), from ``sim`` (default: the simulator whose key the agent pins)."""
        sim = sim or self.sim
        signed = manifest_of or version
        if signed not in sim.releases:
            sim.publish(signed, created=NOW)
        release = sim.releases[signed]
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


async def test_the_running_version_is_answered_committed_only_on_a_verified_manifest(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    # The version running, signed by a key this gateway does not pin: proves nothing.
    await h.take(h.offer("0.1.0", sim=ReleaseSimulator()))
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_REFUSED
    assert "signed only by unknown keys" in h.sent[-1].detail
    assert h.events[-1].type == "firmware.refused"
    # An offer whose version string is not the one its signed manifest names.
    await h.take(h.offer("0.1.0", manifest_of="0.2.0"))
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_REFUSED
    assert h.sent[-1].detail == "offer.version: manifest is for 0.2.0"
    assert not any(p.stage == Stage.FIRMWARE_STAGE_COMMITTED for p in h.sent)
    assert SlotStore(tmp_path / "firmware").read().trial is None


async def _fail_trial(h: Harness) -> None:
    """Run the trial's start-up with the orchestrator unreachable until it rolls back."""

    async def cut_off() -> bool:
        return False

    task = asyncio.ensure_future(h.firmware.start_up({"orchestrator": cut_off}))
    while not task.done():
        await asyncio.sleep(0)
        h.clock.advance(5)
    await task
    await asyncio.sleep(0.01)  # the restart is scheduled with call_later(0)


async def test_a_rolled_back_process_says_nothing_and_the_next_start_reports_truly(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    await h.take(h.offer())
    trial = h.reboot()
    assert trial.running_version == "0.2.0"
    await _fail_trial(h)
    assert h.restarts == 2  # the rollback asked for a restart
    sent, events = len(h.sent), len(h.events)

    # The link comes back before the restart and the orchestrator offers 0.2.0 again: this
    # process still runs 0.2.0, but it is no committed 0.2.0 and must not say so.
    await h.take(h.offer())
    assert (len(h.sent), len(h.events)) == (sent, events)

    # The next start runs what the rollback chose and reports the outcome with it.
    after = h.reboot()
    assert after.running_version == "0.1.0"
    await after.start_up({})
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_ROLLED_BACK
    assert h.sent[-1].running_version == "0.1.0"
    assert h.events[-1].type == "firmware.rolled_back"
    assert h.events[-1].attributes["running_version"] == "0.1.0"
    assert h.events[-1].attributes["version"] == "0.2.0"
    await h.take(h.offer())
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_ROLLED_BACK
    assert not any(p.stage == Stage.FIRMWARE_STAGE_COMMITTED for p in h.sent)


def _cancel(campaign: str = "c-1") -> firmware_pb2.FirmwareCancel:
    return firmware_pb2.FirmwareCancel(campaign_id=campaign, version="0.2.0", reason="abort")


async def test_a_cancel_mid_download_stops_before_the_point_of_no_return(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    downloaded: list[int] = []
    inner = h.fetcher

    def slow(channel: ChannelSource, version: str) -> ChunkFetcher:
        fetcher = inner(channel, version)
        original = fetcher._fetch

        async def paced(part: Part, offset: int, length: int) -> AsyncIterator[bytes]:
            async for chunk in original(part, offset, length):
                downloaded.append(len(chunk))
                if sum(downloaded) >= 20_000 and not h.firmware.gate.cancelled:
                    h.firmware.cancel(_cancel())  # the abort arrives mid-download
                yield chunk

        fetcher._fetch = paced  # type: ignore[method-assign]
        return fetcher

    h.firmware.fetcher = slow
    await h.take(h.offer())
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_CANCELLED
    assert "cancelled before the point of no return: abort" in h.sent[-1].detail
    assert h.sent[-1].running_version == "0.1.0"
    assert h.events[-1].type == "firmware.cancelled"
    assert sum(downloaded) < 40_000  # stopped at the next chunk, not at the end
    state = SlotStore(tmp_path / "firmware").read()
    assert (state.trial, state.active) == (None, None)
    assert h.restarts == 0
    assert not any((tmp_path / "firmware" / "downloads").iterdir())


async def test_a_cancel_past_the_switch_lets_the_update_run_to_its_outcome(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    await h.take(h.offer())  # switched: a trial of 0.2.0 is next
    h.firmware.cancel(_cancel())
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_REBOOTING
    assert "past the point of no return" in h.sent[-1].detail
    assert SlotStore(tmp_path / "firmware").read().trial is not None
    # A campaign this gateway never heard of: nothing to stop.
    h.firmware.cancel(_cancel("c-other"))
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_CANCELLED
    assert "nothing in progress" in h.sent[-1].detail


async def test_a_cancel_while_a_cut_download_waits_to_resume(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.cuts = [10_000, None]
    waiting = asyncio.Event()

    async def long_sleep(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()  # a minute of backoff, as long as the test likes

    h.firmware.sleep = long_sleep
    h.firmware.offer(h.offer())
    await asyncio.wait_for(waiting.wait(), 5)
    h.firmware.cancel(_cancel())
    assert h.firmware.task is not None
    await asyncio.wait_for(h.firmware.task, 5)
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_CANCELLED
    assert h.events[-1].type == "firmware.cancelled"


def _oversized(sim: ReleaseSimulator, version: str, sizes: list[int]) -> firmware_pb2.FirmwareOffer:
    document = {
        "format": MANIFEST_FORMAT,
        "version": version,
        "created": format_instant(NOW),
        "expires": format_instant(NOW + timedelta(days=30)),
        "min_orchestrator_version": "0.1.0",
        "parts": [
            {"name": f"part-{i}.whl" if i == 0 else f"part-{i}.bin", "size": n, "sha256": "0" * 64}
            for i, n in enumerate(sizes)
        ],
        "total_size": sum(sizes),
    }
    manifest = canonical_json(document)
    return firmware_pb2.FirmwareOffer(
        campaign_id="c-1",
        version=version,
        manifest=firmware_pb2.ReleaseManifest(
            manifest=manifest,
            signatures=[
                firmware_pb2.ReleaseSignature(
                    key_id=key_id(sim.public_key), signature=sim.key.sign(manifest)
                )
            ],
        ),
    )


async def test_a_release_too_big_or_without_room_is_refused_before_any_byte(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    mib = 1024 * 1024
    fetchers: list[MemoryFetcher] = []

    def empty(channel: ChannelSource, version: str) -> ChunkFetcher:
        fetchers.append(MemoryFetcher({}))
        return fetchers[-1]

    h.firmware.fetcher = empty
    await h.take(_oversized(h.sim, "0.3.0", [500 * mib] * 3))
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_REFUSED
    assert h.sent[-1].detail.startswith("parts.part-0.whl.size: exceeds the limit")
    await h.take(_oversized(h.sim, "0.3.0", [200 * mib] * 3))
    assert h.sent[-1].detail.startswith("manifest.total_size: 629145600 bytes exceeds the limit")
    assert all(not f.requests for f in fetchers)
    h.firmware.fetcher = h.fetcher

    # A 50 kB release on a disk with 96 MiB + 60 kB free: the reserve for the street's own files
    # (96 MiB) plus twice the release (download and unpack) does not fit.
    h.firmware.free = lambda path: 96 * mib + 60_000
    h.cuts = []
    await h.take(h.offer())
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_REFUSED
    assert h.sent[-1].detail.startswith("disk: the release needs")
    assert not h.last_fetcher.requests  # not a byte asked for
    assert h.events[-1].type == "firmware.refused"
    h.firmware.free = lambda path: 1024 * mib
    await h.take(h.offer())
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_REBOOTING


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

    h.reboot()
    result = await h.firmware.start_up({"orchestrator": healthy})
    assert result is not None and result.verdict is not None
    assert h.events[-1].type == "firmware.committed"
    assert h.sent[-1].stage == Stage.FIRMWARE_STAGE_COMMITTED
    assert h.firmware.running_version == "0.2.0"
    events = len(h.events)
    await h.firmware.start_up({"orchestrator": healthy})  # the next start: nothing new
    assert len(h.events) == events
